"""The ``tgi-collector`` command line, run in-process (``main(argv)``) and as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from fixture_server import FixtureServer
from reference import SEED_SAMPLE, TGI_REAL, scalar_from_text

from tgi_collector.cli import main
from tgi_collector.client import CollectorClient

COMMANDS = ["serve", "check-config", "collect", "parse", "simulate", "health", "demo", "watch"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: tgi-collector {command}" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tgi_collector", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


async def _main_in_thread(argv: list[str]) -> int:
    # The CLI runs its own event loop; keep the test's loop free to serve the fixture.
    return await asyncio.to_thread(main, argv)


async def test_collect_json_on_the_plans_sample(
    fixture_server: FixtureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    code = await _main_in_thread(["collect", "--json", "--no-info", fixture_server.url("/metrics")])
    assert code == 0
    snapshot = json.loads(capsys.readouterr().out)
    text = SEED_SAMPLE.read_text()
    # Proto field names (not camelCase), values as the plan's tests expect them.
    requests = snapshot["request_metrics"]
    generation = snapshot["generation_metrics"]
    assert requests["success_total"] == scalar_from_text(text, "tgi_request_success_total") == 250
    assert requests["failure_total"] == 3
    assert requests["request_count"] == 253
    assert requests["queue_size"] == 5
    assert requests["mean_time_per_token_seconds"] == 0.015
    assert generation["input_length"] == 128
    assert generation["generated_tokens"] == 256
    assert generation["generated_tokens_total"] == 64000
    assert generation["batch_current_size"] == 8
    assert snapshot["health"] == "HEALTH_UP"
    assert "raw_metrics" not in snapshot  # only with --raw


async def test_collect_summary_and_down_exit_code(
    fixture_server: FixtureServer, unused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    code = await _main_in_thread(["collect", fixture_server.url("/metrics")])
    out = capsys.readouterr().out
    assert code == 0
    assert "UP" in out
    assert "success 109" in out
    assert "failure 2 (validation 2)" in out
    code = await _main_in_thread(["collect", f"http://127.0.0.1:{unused_port}/metrics"])
    out = capsys.readouterr().out
    assert code == 1
    assert "DOWN" in out
    assert "error: connect" in out


def test_collect_rejects_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "ftp://127.0.0.1/metrics"]) == 2
    assert "url: scheme 'ftp' is not supported" in capsys.readouterr().err
    assert main(["collect", "http://169.254.169.254/"]) == 1
    assert "not allowed" in capsys.readouterr().err


def test_parse_prints_families(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", str(TGI_REAL)]) == 0
    out = capsys.readouterr().out
    families = TGI_REAL.read_text().count("# TYPE ")
    assert out.startswith(f"{families} families")
    assert "1888 samples" in out


def test_parse_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "--json", str(TGI_REAL)]) == 0
    families = {f["name"]: f for f in json.loads(capsys.readouterr().out)["families"]}
    assert families["tgi_request_success"]["samples"][0]["value"] == 109
    assert families["tgi_request_duration"]["type"] == "METRIC_TYPE_HISTOGRAM"


def test_parse_error_names_the_line(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    bad = TGI_REAL.read_text().splitlines()
    bad[6] = 'tgi_request_count{le="1" 3'
    path = os.path.join(str(tmp_path), "bad.prom")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(bad))
    assert main(["parse", path]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:7:")
    assert main(["parse", os.path.join(str(tmp_path), "missing.prom")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_serve_process_health_and_sigterm(unused_port: int) -> None:
    """A real ``tgi-collector serve`` process: healthy, then a clean exit on SIGTERM."""
    port = unused_port
    process = subprocess.Popen(
        [sys.executable, "-m", "tgi_collector", "serve", "--listen", f"127.0.0.1:{port}",
         "--grace", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            health = subprocess.run(
                [sys.executable, "-m", "tgi_collector", "health", "--server", f"127.0.0.1:{port}",
                 "--timeout", "1"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if health.returncode == 0:
                status = health.stdout
                break
            time.sleep(0.2)
        assert status is not None and "SERVING" in status
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert "shutting down" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_health_of_nothing_fails(unused_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--server", f"127.0.0.1:{unused_port}", "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err


async def test_demo_runs_a_bounded_session(
    unused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    port = unused_port
    code = await _main_in_thread(
        ["demo", "--listen", f"127.0.0.1:{port}", "--interval", "0.3", "--count", "2"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "simulated TGI:" in out
    assert "grpcurl -plaintext -d" in out and "tgi_collector.v1.CollectorService/Watch" in out
    assert f"tgi-collector watch --server 127.0.0.1:{port}" in out
    # The live table (blocks, stdout is not a terminal), one per snapshot of the Watch stream:
    # the first has lifetime values, the second the window's rates.
    rows = [line for line in out.splitlines() if line.startswith("simulated-tgi  UP")]
    assert len(rows) == 2
    assert rows[0].endswith("lifetime") and not rows[1].endswith("lifetime")
    assert "\x1b" not in out


async def test_client_reports_a_missing_server_as_an_rpc_error(unused_port: int) -> None:
    # The client's error surface: a server that is not there is an AioRpcError, not a hang.
    async with CollectorClient(f"127.0.0.1:{unused_port}") as client:
        with pytest.raises(grpc.aio.AioRpcError):
            await client.collect("http://127.0.0.1:1/metrics", timeout=1)
