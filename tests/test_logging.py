"""Log lines: ``--log-format json`` gives one JSON object per line; secrets never reach a line."""

from __future__ import annotations

import calendar
import io
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tgi_collector._logging import JsonFormatter, RedactingFilter

TOKEN = "tok-3f9c2a71d4e8b6"


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tgi_collector.test_logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_object_per_record_with_extra_fields(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_logger
    before = time.time()
    logger.warning(
        "scrape of %s failed: %s",
        "http://127.0.0.1:9/metrics",
        "connection refused",
        extra={"target": "http://127.0.0.1:9/metrics", "error_kind": "connect"},
    )
    logger.info('multi\nline message with "quotes" and é')
    first, second = _lines(stream)
    assert first["level"] == "WARNING"
    assert first["logger"] == "tgi_collector.test_logging"
    assert first["message"] == "scrape of http://127.0.0.1:9/metrics failed: connection refused"
    assert first["target"] == "http://127.0.0.1:9/metrics"
    assert first["error_kind"] == "connect"
    stamp = str(first["time"])
    assert stamp.endswith("Z") and len(stamp) == len("2026-11-28T03:04:05.678Z")
    parsed = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(parsed - before) < 5  # UTC, not local time
    assert second["message"] == 'multi\nline message with "quotes" and é'
    assert set(second) == {"time", "level", "logger", "message"}


def test_exceptions_and_odd_extra_values_keep_the_line(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_logger
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("handler failed", extra={"peer": object()})
    (line,) = _lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in str(line["exception"])
    assert str(line["peer"]).startswith("<object object")


@pytest.mark.parametrize(
    ("message", "args", "hidden", "shown"),
    [
        ("authorization: Bearer %s", (TOKEN,), TOKEN, "Bearer <redacted>"),
        ("header=bearer %s;x", (TOKEN,), TOKEN, "bearer <redacted>;x"),
        ("GET %s", (f"http://scraper:{TOKEN}@tgi-0:8080/metrics",), TOKEN,
         "http://scraper:<redacted>@tgi-0:8080/metrics"),
        (f"literal https://u:{TOKEN}@h/x", (), TOKEN, "https://u:<redacted>@h/x"),
    ],
)  # fmt: skip
def test_tokens_and_url_passwords_are_masked(
    json_logger: tuple[logging.Logger, io.StringIO],
    message: str,
    args: tuple[str, ...],
    hidden: str,
    shown: str,
) -> None:
    logger, stream = json_logger
    logger.warning(message, *args)
    assert hidden not in stream.getvalue()
    (line,) = _lines(stream)
    assert shown in str(line["message"])


def test_ordinary_urls_are_left_alone(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    text = (
        "scraping http://tgi-0:8080/metrics and [::1]:50051, user@example.org;"
        " plaintext; no bearer tokens required; bearer tokens are required but ..."
    )
    logger.info(text)
    assert _lines(stream)[0]["message"] == text


def test_serve_process_writes_json_lines_and_no_token(unused_port: int, tmp_path: Path) -> None:
    """A real ``serve --log-format json`` with a token file: every stderr line is JSON."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    listen = f"127.0.0.1:{unused_port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tgi_collector", "--log-format", "json", "serve",
         "--listen", listen, "--grace", "1", "--token-file", str(tokens)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        healthy = False
        while not healthy and time.monotonic() < deadline:
            health = subprocess.run(
                [sys.executable, "-m", "tgi_collector", "health", "--server", listen,
                 "--timeout", "1"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            healthy = health.returncode == 0
            time.sleep(0 if healthy else 0.2)
        assert healthy, "the server never answered its health check"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert TOKEN not in stderr
    assert "<redacted>" not in stderr  # the mask is a net: ordinary lines never need it
    lines = [json.loads(line) for line in stderr.splitlines()]
    messages = [str(line["message"]) for line in lines]
    assert any(message.startswith(f"serving on {listen}") for message in messages), messages
    assert any(message.startswith("shutting down") for message in messages), messages
    assert {line["logger"] for line in lines} >= {"tgi_collector.server"}


def test_a_failed_scrape_is_one_json_line_with_target_and_kind(unused_port: int) -> None:
    """``collect`` of a dead target: one WARNING object naming the target and the error kind."""
    url = f"http://127.0.0.1:{unused_port}/metrics?token={TOKEN}"
    done = subprocess.run(
        [sys.executable, "-m", "tgi_collector", "--log-format", "json", "collect", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # target down
    assert TOKEN not in done.stderr  # (stdout shows the URL as the user typed it)
    objects = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    failures = [o for o in objects if o.get("error_kind") is not None]
    assert len(failures) == 1, objects
    (failure,) = failures
    assert failure["level"] == "WARNING"
    assert failure["logger"] == "tgi_collector.scraper"
    assert failure["target"] == f"http://127.0.0.1:{unused_port}/metrics"
    assert failure["error_kind"] == "connect"
