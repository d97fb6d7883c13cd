"""The scraper against real HTTP servers on 127.0.0.1: success, /info, and every way to fail."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fixture_server import FixtureServer

from tgi_collector._http import HttpClient
from tgi_collector.errors import ScrapeErrorKind, TargetDeniedError
from tgi_collector.policy import TargetPolicy
from tgi_collector.scraper import METRICS_ACCEPT, USER_AGENT, Scraper
from tgi_collector.snapshot import Snapshot
from tgi_collector.targets import ScrapeOptions, Target

REAL_TGI = Path(__file__).parent / "data" / "tgi" / "tgi-3.3-real.prom"
REAL_TGI_BYTES = 98_977
REAL_TGI_SAMPLES = 1_888
INFO = {
    "model_id": "bigscience/bloom-560m",
    "model_sha": "ac2ae5fab2ce3f9f40dc79b5ca9f637430d24971",
    "model_dtype": "torch.float16",
    "max_input_tokens": 511,
    "max_total_tokens": 512,
    "max_concurrent_requests": 128,
    "version": "3.3.0",
}
MIB = 1024 * 1024
# Every scrape in these tests must return well within this, whatever the target does.
TEST_BOUND_SECONDS = 10.0


@pytest.fixture
async def scraper() -> AsyncIterator[Scraper]:
    async with Scraper() as scraper:
        yield scraper


@pytest.fixture
async def tgi_server(fixture_server: FixtureServer) -> FixtureServer:
    """A fixture server that looks like TGI: the real /metrics and an /info document."""
    fixture_server.route("/metrics", body=REAL_TGI)
    fixture_server.route("/info", body=json.dumps(INFO), content_type="application/json")
    return fixture_server


async def scrape(scraper: Scraper, url: str, *, instance_id: str = "", **options: Any) -> Snapshot:
    """Scrape ``url`` with ``ScrapeOptions(**options)``, bounded in time whatever happens."""
    async with asyncio.timeout(TEST_BOUND_SECONDS):
        return await scraper.scrape(Target(instance_id, url), ScrapeOptions(**options))


async def assert_down(
    scraper: Scraper, url: str, kind: ScrapeErrorKind, **options: Any
) -> Snapshot:
    """Scrape and check the snapshot is down with ``kind`` and carries no data."""
    snapshot = await scrape(scraper, url, **options)
    assert not snapshot.up
    assert snapshot.error is not None
    assert snapshot.error.kind is kind, snapshot.error
    assert snapshot.view is None
    assert snapshot.exposition is None
    assert snapshot.stats.samples == 0
    return snapshot


# -- success -----------------------------------------------------------------------------------


async def test_real_tgi_scrape(scraper: Scraper, tgi_server: FixtureServer) -> None:
    before = datetime.now(UTC)
    snapshot = await scrape(scraper, tgi_server.url("/metrics"))
    assert snapshot.up
    assert snapshot.error is None
    assert snapshot.stats.body_bytes == REAL_TGI_BYTES
    assert snapshot.stats.samples == REAL_TGI_SAMPLES
    assert 0 < snapshot.stats.duration_seconds < TEST_BOUND_SECONDS
    assert snapshot.view is not None
    assert snapshot.exposition is not None
    assert snapshot.exposition.sample_count == REAL_TGI_SAMPLES
    assert snapshot.endpoint == tgi_server.url("/metrics")
    assert snapshot.instance_id == tgi_server.url("/metrics")  # defaults to the endpoint
    assert before <= snapshot.timestamp <= datetime.now(UTC)
    assert snapshot.model is not None
    assert snapshot.model.model_id == INFO["model_id"]
    assert snapshot.model.max_total_tokens == 512


async def test_request_headers(scraper: Scraper, tgi_server: FixtureServer) -> None:
    await scrape(scraper, tgi_server.url("/metrics"), timeout_seconds=2.5)
    (request,) = [r for r in tgi_server.requests if r.path == "/metrics"]
    assert request.headers["accept"] == METRICS_ACCEPT
    assert request.headers["accept-encoding"] == "gzip"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("tgi-collector/")
    assert request.headers["x-prometheus-scrape-timeout-seconds"] == "2.5"


async def test_instance_id_and_without_raw_metrics(
    scraper: Scraper, tgi_server: FixtureServer
) -> None:
    snapshot = await scrape(
        scraper, tgi_server.url("/metrics"), instance_id="tgi-0", include_raw_metrics=False
    )
    assert snapshot.up
    assert snapshot.instance_id == "tgi-0"
    assert snapshot.exposition is None
    assert snapshot.view is not None
    assert snapshot.stats.samples == REAL_TGI_SAMPLES


async def test_gzip_body_is_decompressed(scraper: Scraper, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=REAL_TGI, gzip=True)
    snapshot = await scrape(scraper, fixture_server.url("/metrics"), fetch_info=False)
    assert snapshot.up, snapshot.error
    assert snapshot.stats.body_bytes == REAL_TGI_BYTES  # decompressed size
    assert fixture_server.bytes_sent("/metrics") < REAL_TGI_BYTES / 5


async def test_deflate_body_is_decompressed(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    fixture_server.route(
        "/metrics",
        body=zlib.compress(REAL_TGI.read_bytes()),
        headers={"Content-Encoding": "deflate"},
    )
    snapshot = await scrape(scraper, fixture_server.url("/metrics"), fetch_info=False)
    assert snapshot.up, snapshot.error
    assert snapshot.stats.body_bytes == REAL_TGI_BYTES


async def test_https_to_a_plain_http_server_is_a_connect_failure(
    scraper: Scraper, tgi_server: FixtureServer
) -> None:
    snapshot = await assert_down(
        scraper, f"https://127.0.0.1:{tgi_server.port}/metrics", ScrapeErrorKind.CONNECT
    )
    assert snapshot.error is not None
    assert "TLS" in snapshot.error.message


async def test_keep_alive_connection_is_reused(scraper: Scraper, tgi_server: FixtureServer) -> None:
    for _ in range(5):
        assert (await scrape(scraper, tgi_server.url("/metrics"), fetch_info=False)).up
    assert tgi_server.hits("/metrics") == 5
    assert tgi_server.connections == 1


async def test_environment_proxies_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tgi_server: FixtureServer, unused_port: int
) -> None:
    dead_proxy = f"http://127.0.0.1:{unused_port}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with Scraper() as scraper:
        snapshot = await scrape(scraper, tgi_server.url("/metrics"))
    assert snapshot.up, snapshot.error


async def test_parsers_are_bounded(fixture_server: FixtureServer) -> None:
    for path in ("/a", "/b", "/c", "/d"):
        fixture_server.route(path, body="up 1\n")
    async with Scraper(max_parsers=2) as scraper:
        options = ScrapeOptions(fetch_info=False)
        for path in ("/a", "/b", "/c", "/a"):
            target = Target("", fixture_server.url(path))
            assert (await scraper.scrape(target, options, keep_caches=True)).up
        assert len(scraper._targets) == 2
        # One-off scrapes keep nothing; forget() drops what a loop kept.
        assert (await scraper.scrape(Target("", fixture_server.url("/d")), options)).up
        assert len(scraper._targets) == 2
        scraper.forget(fixture_server.url("/a"))
        assert fixture_server.url("/a") not in scraper._targets


async def test_supplied_client_is_used_and_left_open(tgi_server: FixtureServer) -> None:
    client = HttpClient()
    try:
        async with Scraper(client=client) as scraper:
            assert (await scrape(scraper, tgi_server.url("/metrics"), fetch_info=False)).up
        # The scraper's connection went back to this client's pool and is still open.
        assert client.idle_connections == 1
        async with Scraper(client=client) as scraper:
            assert (await scrape(scraper, tgi_server.url("/metrics"), fetch_info=False)).up
        assert tgi_server.connections == 1
    finally:
        await client.aclose()


# -- /info ---------------------------------------------------------------------------------------


async def test_info_is_cached(scraper: Scraper, tgi_server: FixtureServer) -> None:
    for _ in range(4):
        snapshot = await scrape(scraper, tgi_server.url("/metrics"))
        assert snapshot.model is not None
    assert tgi_server.hits("/metrics") == 4
    assert tgi_server.hits("/info") == 1


async def test_info_not_fetched_when_disabled(scraper: Scraper, tgi_server: FixtureServer) -> None:
    snapshot = await scrape(scraper, tgi_server.url("/metrics"), fetch_info=False)
    assert snapshot.up
    assert snapshot.model is None
    assert tgi_server.hits("/info") == 0


async def test_stale_info_is_refreshed_in_the_background(tgi_server: FixtureServer) -> None:
    async with Scraper(info_ttl_seconds=0.2) as scraper:
        first = await scrape(scraper, tgi_server.url("/metrics"))
        assert first.model is not None
        tgi_server.route("/info", body=json.dumps({**INFO, "model_id": "new/model"}))
        await asyncio.sleep(0.3)
        # Stale: this scrape answers with the cached model and refreshes behind it.
        second = await scrape(scraper, tgi_server.url("/metrics"))
        assert second.model == first.model
        for _ in range(100):
            if tgi_server.hits("/info") == 2 and not scraper._info_tasks:
                break
            await asyncio.sleep(0.02)
        third = await scrape(scraper, tgi_server.url("/metrics"))
        assert third.model is not None
        assert third.model.model_id == "new/model"


@pytest.mark.parametrize(
    "route",
    [
        pytest.param({"status": 404, "body": "not found"}, id="404"),
        pytest.param({"status": 500, "body": "boom"}, id="500"),
        pytest.param({"body": "{not json", "content_type": "application/json"}, id="garbage"),
        pytest.param({"body": "[1, 2]", "content_type": "application/json"}, id="not-an-object"),
        pytest.param({"body": b"\xff\xfe{}", "content_type": "application/json"}, id="not-utf8"),
        pytest.param({"behaviour": "hang"}, id="hang"),
        pytest.param({"behaviour": "stream"}, id="huge"),
        pytest.param({"behaviour": "truncate"}, id="cut-short"),
    ],
)
async def test_failing_info_does_not_fail_the_scrape(
    scraper: Scraper, fixture_server: FixtureServer, route: dict[str, Any]
) -> None:
    fixture_server.route("/metrics", body=REAL_TGI)
    fixture_server.route("/info", **route)
    started = time.monotonic()
    snapshot = await scrape(scraper, fixture_server.url("/metrics"), timeout_seconds=0.5)
    assert time.monotonic() - started < 2.0
    assert snapshot.up, snapshot.error
    assert snapshot.model is None
    assert snapshot.stats.samples == REAL_TGI_SAMPLES
    # The failure is remembered: the next scrape does not ask again.
    assert (await scrape(scraper, fixture_server.url("/metrics"), timeout_seconds=0.5)).up
    assert fixture_server.hits("/info") == 1


# -- failures ------------------------------------------------------------------------------------


async def test_connection_refused(scraper: Scraper, unused_port: int) -> None:
    snapshot = await assert_down(
        scraper, f"http://127.0.0.1:{unused_port}/metrics", ScrapeErrorKind.CONNECT
    )
    assert snapshot.error is not None
    assert snapshot.error.message == f"connection refused by 127.0.0.1:{unused_port}"
    assert snapshot.error.http_status is None


async def test_unresolvable_host_is_a_connect_failure(scraper: Scraper) -> None:
    snapshot = await assert_down(
        scraper, "http://nonexistent.invalid/metrics", ScrapeErrorKind.CONNECT
    )
    assert snapshot.error is not None
    assert "cannot resolve" in snapshot.error.message


@pytest.mark.parametrize(
    ("status", "message"), [(500, "HTTP 500 Internal Server Error"), (404, "HTTP 404 Not Found")]
)
async def test_http_error_status(
    scraper: Scraper, fixture_server: FixtureServer, status: int, message: str
) -> None:
    fixture_server.route("/metrics", status=status, body="nope")
    snapshot = await assert_down(
        scraper, fixture_server.url("/metrics"), ScrapeErrorKind.HTTP_STATUS
    )
    assert snapshot.error is not None
    assert snapshot.error.http_status == status
    assert snapshot.error.message == message


async def test_redirect_is_not_followed(scraper: Scraper, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", behaviour="redirect", location="/elsewhere")
    fixture_server.route("/elsewhere", body=REAL_TGI)
    snapshot = await assert_down(
        scraper, fixture_server.url("/metrics"), ScrapeErrorKind.HTTP_STATUS
    )
    assert snapshot.error is not None
    assert snapshot.error.http_status == 302
    assert snapshot.error.message == "HTTP 302 Found (redirect to /elsewhere not followed)"
    assert fixture_server.hits("/elsewhere") == 0


async def test_hanging_target_meets_the_deadline(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", behaviour="hang")
    started = time.monotonic()
    snapshot = await assert_down(
        scraper, fixture_server.url("/metrics"), ScrapeErrorKind.TIMEOUT, timeout_seconds=0.5
    )
    assert time.monotonic() - started < 2.0
    assert snapshot.error is not None
    assert snapshot.error.message == "no complete response within 0.5 s"
    assert 0.4 < snapshot.stats.duration_seconds < 2.0


async def test_trickling_target_meets_the_overall_deadline(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    # A byte every 0.2 s keeps every single read well inside the 1 s budget: only an overall
    # deadline stops this scrape.
    fixture_server.route("/metrics", behaviour="trickle", interval=0.2, duration=10.0)
    started = time.monotonic()
    snapshot = await assert_down(
        scraper, fixture_server.url("/metrics"), ScrapeErrorKind.TIMEOUT, timeout_seconds=1.0
    )
    assert time.monotonic() - started < 2.5
    assert snapshot.stats.body_bytes > 0


@pytest.mark.parametrize(
    ("gzip", "message", "sent_bound"),
    [
        (False, f"body exceeds {MIB} bytes", 64 * MIB),
        # Compressed, the bomb is small: the limit must be on what it inflates to.
        (True, f"decompressed body exceeds {MIB} bytes", MIB),
    ],
    ids=["endless-body", "gzip-bomb"],
)
async def test_endless_body_stops_at_the_limit_with_bounded_memory(
    scraper: Scraper, fixture_server: FixtureServer, gzip: bool, message: str, sent_bound: int
) -> None:
    fixture_server.route("/metrics", behaviour="stream", gzip=gzip, size=1 << 30)
    tracemalloc.start()
    try:
        snapshot = await assert_down(
            scraper,
            fixture_server.url("/metrics"),
            ScrapeErrorKind.BODY_TOO_LARGE,
            max_body_bytes=MIB,
            fetch_info=False,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert snapshot.error is not None
    assert snapshot.error.message == message
    assert peak < 8 * MIB
    assert fixture_server.bytes_sent("/metrics") < sent_bound


async def test_content_length_over_the_limit_is_refused_unread(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=REAL_TGI)
    snapshot = await assert_down(
        scraper,
        fixture_server.url("/metrics"),
        ScrapeErrorKind.BODY_TOO_LARGE,
        max_body_bytes=1000,
        fetch_info=False,
    )
    assert snapshot.error is not None
    assert snapshot.error.message == f"body exceeds 1000 bytes (Content-Length {REAL_TGI_BYTES})"
    assert snapshot.stats.body_bytes == 0


async def test_garbage_text_is_a_parse_error_naming_the_line(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    body = "# HELP up up\nup 1\n<html>oops</html>\n"
    fixture_server.route("/metrics", body=body)
    snapshot = await assert_down(scraper, fixture_server.url("/metrics"), ScrapeErrorKind.PARSE)
    assert snapshot.error is not None
    assert snapshot.error.message.startswith("line 3:")
    assert snapshot.stats.body_bytes == len(body)


async def test_invalid_utf8_is_a_parse_error_naming_the_line(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=b'up 1\nfoo{a="\xff"} 2\n')
    snapshot = await assert_down(scraper, fixture_server.url("/metrics"), ScrapeErrorKind.PARSE)
    assert snapshot.error is not None
    assert snapshot.error.message == "line 2: invalid UTF-8 (byte 0xff at offset 12)"


async def test_too_many_samples(scraper: Scraper, tgi_server: FixtureServer) -> None:
    snapshot = await assert_down(
        scraper, tgi_server.url("/metrics"), ScrapeErrorKind.TOO_MANY_SAMPLES, max_samples=100
    )
    assert snapshot.error is not None
    assert "100" in snapshot.error.message


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_connection_lost_mid_body(
    scraper: Scraper, fixture_server: FixtureServer, reset: bool
) -> None:
    fixture_server.route("/metrics", behaviour="truncate", body=REAL_TGI, reset=reset)
    await assert_down(scraper, fixture_server.url("/metrics"), ScrapeErrorKind.PROTOCOL)


async def test_truncated_gzip_is_a_protocol_error(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    compressed = gzip.compress(REAL_TGI.read_bytes())
    fixture_server.route(
        "/metrics",
        behaviour="raw",
        body=b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n"
        + compressed[: len(compressed) // 2],
    )
    snapshot = await assert_down(scraper, fixture_server.url("/metrics"), ScrapeErrorKind.PROTOCOL)
    assert snapshot.error is not None
    assert snapshot.error.message == "compressed body is truncated"


@pytest.mark.parametrize(
    "raw",
    [b"SPDY/9 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b""],
    ids=["bad-status-line", "bad-length", "no-response"],
)
async def test_broken_http_is_a_protocol_error(
    scraper: Scraper, fixture_server: FixtureServer, raw: bytes
) -> None:
    fixture_server.route("/metrics", behaviour="raw", body=raw)
    await assert_down(scraper, fixture_server.url("/metrics"), ScrapeErrorKind.PROTOCOL)


async def test_unsupported_content_encoding(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=b"\x00\x01", headers={"Content-Encoding": "br"})
    snapshot = await assert_down(scraper, fixture_server.url("/metrics"), ScrapeErrorKind.PROTOCOL)
    assert snapshot.error is not None
    assert snapshot.error.message == "unsupported Content-Encoding 'br'"


async def test_invalid_gzip_is_a_protocol_error(
    scraper: Scraper, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    await assert_down(scraper, fixture_server.url("/metrics"), ScrapeErrorKind.PROTOCOL)


async def test_down_snapshot_keeps_the_cached_model(
    scraper: Scraper, tgi_server: FixtureServer
) -> None:
    assert (await scrape(scraper, tgi_server.url("/metrics"))).up
    tgi_server.route("/metrics", status=503)
    snapshot = await assert_down(scraper, tgi_server.url("/metrics"), ScrapeErrorKind.HTTP_STATUS)
    assert snapshot.model is not None
    assert snapshot.model.model_id == INFO["model_id"]


# -- policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:8080/metrics",
        "http://0.0.0.0:80/metrics",
        "http://[::]/metrics",
        "http://[::ffff:169.254.169.254]/metrics",
    ],
)
async def test_denied_target_raises(scraper: Scraper, url: str) -> None:
    with pytest.raises(TargetDeniedError):
        await scraper.check_target(Target("", url))
    with pytest.raises(TargetDeniedError):
        await scrape(scraper, url)


async def test_allow_link_local_lets_the_scrape_through(unused_port: int) -> None:
    # Nothing listens there, so the scrape fails, but as a scrape, not as a policy refusal.
    async with Scraper(policy=TargetPolicy(allow_link_local=True)) as scraper:
        await scraper.check_target(Target("", "http://169.254.10.10:9/metrics"))
        snapshot = await scrape(
            scraper, f"http://[::ffff:127.0.0.1]:{unused_port}/metrics", timeout_seconds=1.0
        )
    assert not snapshot.up
