"""The collector's own metrics, end to end: a real server, real targets, its real /metrics port.

Every expected value comes from what the test did (how many Collects of which target, which
calls were refused, how many streams are open), read back over HTTP with httpx and parsed with
``prometheus_client``'s own parser.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import pytest
from fixture_server import FixtureServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families
from reference import TGI_REAL

from tgi_collector import __version__
from tgi_collector._metrics_http import MAX_CONNECTIONS
from tgi_collector.cli import main
from tgi_collector.client import CollectorClient, watch_request
from tgi_collector.errors import ScrapeErrorKind
from tgi_collector.scraper import Scraper
from tgi_collector.selfmetrics import MAX_TARGET_LABELS, OTHER, MetricsHttpServer, SelfMetrics
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.targets import ScrapeOptions, Target
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc

COLLECT = "tgi_collector.v1.CollectorService/Collect"
WATCH = "tgi_collector.v1.CollectorService/Watch"
OPTIONS = ScrapeOptions(timeout_seconds=2.0, fetch_info=False, include_raw_metrics=False)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def fetch(port: int | None) -> Samples:
    """Every sample of the collector's /metrics: (name, labels) -> value."""
    assert port is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def eventually(
    read: Callable[[], Awaitable[object]], expected: object, timeout: float = 5.0
) -> None:
    """Poll ``read()`` every 50 ms until it returns ``expected`` (AssertionError after
    ``timeout`` s, with the last value read)."""
    last: object = None
    for _ in range(round(timeout / 0.05)):
        last = await read()
        if last == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {last!r} after {timeout} s, expected {expected!r}")


async def rpcs(server: CollectorServer, method: str, code: str) -> float | None:
    samples = await fetch(server.metrics_port)
    return value(samples, "tgi_collector_rpcs_total", method=method, code=code)


def _metrics_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tgi-collector-metrics")]


@pytest.fixture
async def server() -> AsyncIterator[CollectorServer]:
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", grace_seconds=0.5)
    async with CollectorServer(config) as running:
        yield running
    assert running.metrics_port is None


async def test_scrapes_and_rpcs_are_counted(
    server: CollectorServer, fixture_server: FixtureServer, unused_port: int
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    good = fixture_server.url("/metrics")
    dead = f"http://127.0.0.1:{unused_port}/metrics"
    async with CollectorClient(f"127.0.0.1:{server.port}") as client:
        for _ in range(3):
            assert (await client.collect(good)).request_metrics.success_total == 109
        for _ in range(2):
            assert (await client.collect(dead)).error.message
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.Collect(collector_pb2.CollectRequest(), timeout=5)  # no target
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)

    samples = await fetch(server.metrics_port)
    assert series(samples, "tgi_collector_scrapes_total") == {
        frozenset({("target", good), ("outcome", "ok")}): 3,
        frozenset({("target", dead), ("outcome", "connect")}): 2,
    }
    assert value(samples, "tgi_collector_scrape_duration_seconds_count", outcome="ok") == 3
    assert value(samples, "tgi_collector_scrape_duration_seconds_count", outcome="connect") == 2
    assert value(samples, "tgi_collector_scrape_duration_seconds_bucket", outcome="ok", le="10.0")
    assert series(samples, "tgi_collector_rpcs_total") == {
        frozenset({("method", COLLECT), ("code", "OK")}): 5,
        frozenset({("method", COLLECT), ("code", "INVALID_ARGUMENT")}): 1,
        frozenset({("method", "grpc.health.v1.Health/Check"), ("code", "OK")}): 1,
    }
    assert value(samples, "tgi_collector_rpc_duration_seconds_count", method=COLLECT) == 6
    assert value(samples, "tgi_collector_build_info", version=__version__) == 1
    # The process's own metrics, from prometheus_client's collectors.
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_collections_total",
    ):
        assert any(n == name for n, _ in samples), name
    assert any(n == "python_info" for n, _ in samples)


async def test_watch_gauges_go_up_and_back_to_zero(
    server: CollectorServer, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    request = watch_request([fixture_server.url("/metrics")], interval=1)

    async def gauges() -> tuple[float | None, float | None]:
        samples = await fetch(server.metrics_port)
        return (
            value(samples, "tgi_collector_watch_subscribers"),
            value(samples, "tgi_collector_scrape_loops"),
        )

    assert await gauges() == (0, 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        calls = [stub.Watch(request) for _ in range(2)]  # two subscribers, one shared loop
        for call in calls:
            await asyncio.wait_for(call.read(), timeout=10)
        assert await gauges() == (2, 1)
        for call in calls:
            call.cancel()
        await eventually(gauges, (0, 0))
        await eventually(lambda: rpcs(server, WATCH, "CANCELLED"), 2)


async def test_coalesced_snapshots_are_counted(
    server: CollectorServer, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    target = Target("t", fixture_server.url("/metrics"))
    subscription = server.hub.subscribe([target], interval_seconds=0.1, options=OPTIONS)
    async with subscription:
        # Reads nothing while the loop scrapes 5 times: all but the latest are replaced.
        await wait_until(lambda: fixture_server.hits("/metrics") >= 5, timeout=5)
        event = await subscription.next()
        assert event is not None
    samples = await fetch(server.metrics_port)
    assert event.coalesced >= 3
    assert value(samples, "tgi_collector_watch_coalesced_snapshots_total") == event.coalesced


async def test_refused_and_timed_out_calls_are_counted_with_the_code_the_client_got(
    fixture_server: FixtureServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("tok-selfmetrics\n")
    token_file.chmod(0o600)
    fixture_server.route("/hang", behaviour="hang", duration=10)
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", token_file=str(token_file)
    )
    async with CollectorServer(config) as server:
        address = f"127.0.0.1:{server.port}"
        async with CollectorClient(address) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await anonymous.collect(fixture_server.url("/hang"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with grpc.aio.insecure_channel(address) as channel:
            unknown = channel.unary_unary("/no.such.Service/Method")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await unknown(b"", timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with CollectorClient(address, token="tok-selfmetrics") as client:
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await client.collect(fixture_server.url("/hang"), timeout=0.5)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The handler sees its deadline pass a moment after the client gave up.
        await eventually(lambda: rpcs(server, COLLECT, _DE), 1)
        samples = await fetch(server.metrics_port)
        assert series(samples, "tgi_collector_rpcs_total") == {
            frozenset({("method", COLLECT), ("code", "UNAUTHENTICATED")}): 1,
            # A method no service has: the label is not the caller's string.
            frozenset({("method", OTHER), ("code", "UNAUTHENTICATED")}): 1,
            frozenset({("method", COLLECT), ("code", _DE)}): 1,
        }


_DE = "DEADLINE_EXCEEDED"


async def test_target_labels_are_redacted_and_capped(fixture_server: FixtureServer) -> None:
    """Callers may Collect any URL: past MAX_TARGET_LABELS distinct targets the rest are
    ``other``, and credentials or query strings never become label values."""
    metrics = SelfMetrics()
    http = MetricsHttpServer(metrics.registry, "127.0.0.1:0")
    port = http.start()
    try:
        async with Scraper(recorder=metrics) as scraper:
            base = fixture_server.base_url
            for n in range(MAX_TARGET_LABELS + 5):  # unrouted paths: 404, quick
                await scraper.scrape(Target("", f"{base}/t{n}"), OPTIONS)
            await scraper.scrape(Target("", f"{base}/t0"), OPTIONS)  # a known label: its own
            fixture_server.route("/metrics", body=TGI_REAL)
            for token in ("s3cret-a", "s3cret-b"):
                secret = f"http://user:pa55@{base.partition('://')[2]}/metrics?token={token}"
                await scraper.scrape(Target("", secret), OPTIONS)
        samples = await fetch(port)
    finally:
        http.close()
    scrapes = series(samples, "tgi_collector_scrapes_total")
    targets: dict[str, float] = {}
    for labels, count in scrapes.items():
        targets[dict(labels)["target"]] = targets.get(dict(labels)["target"], 0) + count
    assert len(targets) == MAX_TARGET_LABELS + 1
    assert targets[f"{base}/t0"] == 2
    assert targets[f"{base}/t{MAX_TARGET_LABELS - 1}"] == 1
    # The 5 targets past the cap and the 2 with tokens (whose label would be new).
    assert targets[OTHER] == 5 + 2
    assert scrapes[frozenset({("target", OTHER), ("outcome", "ok")})] == 2
    assert not any("s3cret" in label or "pa55" in label for label in targets)


async def test_the_redacted_target_is_one_label(fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    metrics = SelfMetrics()
    http = MetricsHttpServer(metrics.registry, "127.0.0.1:0")
    port = http.start()
    try:
        async with Scraper(recorder=metrics) as scraper:
            host = fixture_server.base_url.partition("://")[2]
            for url in (
                f"http://{host}/metrics?token=s3cret",
                f"http://user:pa55@{host}/metrics",
                f"http://{host}/metrics#frag",
            ):
                assert (await scraper.scrape(Target("", url), OPTIONS)).up
        samples = await fetch(port)
    finally:
        http.close()
    assert series(samples, "tgi_collector_scrapes_total") == {
        frozenset({("target", f"http://{host}/metrics"), ("outcome", "ok")}): 3
    }


async def test_one_warning_per_failed_scrape_without_secrets(
    fixture_server: FixtureServer, unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://user:pa55@127.0.0.1:{unused_port}/metrics?token=s3cret"
    fixture_server.route("/flaky", status=503)
    flaky = fixture_server.url("/flaky")
    with caplog.at_level(logging.INFO, logger="tgi_collector.scraper"):
        async with Scraper() as scraper:
            for _ in range(2):
                await scraper.scrape(Target("", dead), OPTIONS)
            await scraper.scrape(Target("", flaky), OPTIONS)
            fixture_server.route("/flaky", body=TGI_REAL)
            for _ in range(2):
                assert (await scraper.scrape(Target("", flaky), OPTIONS)).up
    records = [r for r in caplog.records if r.name == "tgi_collector.scraper"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert len(warnings) == 3
    shown = f"target=http://127.0.0.1:{unused_port}/metrics kind=connect"
    assert all(shown in line for line in warnings[:2]), warnings
    assert f"target={flaky} kind=http_status error=HTTP 503" in warnings[2]
    assert infos == [f"scrape ok again: target={flaky} (after 1 failed scrape(s))"]
    assert "s3cret" not in caplog.text
    assert "pa55" not in caplog.text


async def test_watch_loops_log_each_failed_scrape_once(
    server: CollectorServer, unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{unused_port}/metrics"
    with caplog.at_level(logging.WARNING, logger="tgi_collector.scraper"):
        subscription = server.hub.subscribe(
            [Target("dead", dead)], interval_seconds=0.1, options=OPTIONS
        )
        async with subscription:
            down = 0
            while down < 3:
                event = await asyncio.wait_for(subscription.next(), timeout=5)
                assert event is not None
                if event.snapshot is not None:  # not the sync marker
                    assert event.snapshot.error is not None
                    assert event.snapshot.error.kind is ScrapeErrorKind.CONNECT
                    down += 1
    samples = await fetch(server.metrics_port)
    scrapes = value(samples, "tgi_collector_scrapes_total", target=dead, outcome="connect")
    lines = [r for r in caplog.records if r.name == "tgi_collector.scraper"]
    assert scrapes is not None and scrapes >= 3
    assert len(lines) == scrapes


async def test_metrics_off_serves_nothing_but_still_counts(fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    before = _metrics_threads()
    async with CollectorServer(ServerConfig(listen="127.0.0.1:0")) as server:
        assert server.metrics_port is None
        assert _metrics_threads() == before
        async with CollectorClient(f"127.0.0.1:{server.port}") as client:
            await client.collect(fixture_server.url("/metrics"))
        counted = server.metrics.registry.get_sample_value(
            "tgi_collector_scrapes_total",
            {"target": fixture_server.url("/metrics"), "outcome": "ok"},
        )
        assert counted == 1


async def test_stop_closes_the_port_and_its_thread() -> None:
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    server = CollectorServer(config)
    await server.start()
    port = server.metrics_port
    assert port is not None
    assert [t.name for t in _metrics_threads()] == [f"tgi-collector-metrics:{port}"]
    await fetch(port)
    await server.stop(grace=0)
    assert server.metrics_port is None
    assert _metrics_threads() == []
    with pytest.raises(httpx.ConnectError):
        await fetch(port)


async def test_a_metrics_port_in_use_fails_start_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = CollectorServer(
            ServerConfig(listen="127.0.0.1:0", metrics_listen=f"127.0.0.1:{port}")
        )
        with pytest.raises(OSError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}: "):
            await server.start()
    assert _metrics_threads() == []
    assert server.port == 0  # the gRPC port was never bound


def test_a_malformed_metrics_address_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="metrics_listen 'nonsense' is not host:port"):
        CollectorServer(ServerConfig(listen="127.0.0.1:0", metrics_listen="nonsense"))
    # The server's own check, so that check-config and serve refuse it too (exit 2, no trace).
    with pytest.raises(ValueError, match="metrics_listen 'unix:/tmp/m' is not host:port"):
        ServerConfig(metrics_listen="unix:/tmp/m").check()
    assert main(["check-config", "--metrics-listen", "unix:/tmp/m"]) == 2


async def test_a_grpc_port_in_use_leaves_no_metrics_port_behind() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = CollectorServer(
            ServerConfig(listen=f"127.0.0.1:{port}", metrics_listen="127.0.0.1:0")
        )
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            await server.start()
    assert server.metrics_port is None
    assert _metrics_threads() == []


def _refused_unanswered(port: int) -> bool:
    """Whether a connection to ``port`` is closed without an answer to its request."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
        try:
            extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            return extra.recv(1) == b""
        except ConnectionResetError:
            return True


def test_idle_connections_cannot_pile_up_threads() -> None:
    """The port has no token: a flood of silent connections takes MAX_CONNECTIONS threads at
    most, is refused past that, and the port answers again once they are gone."""
    http = MetricsHttpServer(SelfMetrics().registry, "127.0.0.1:0")
    port = http.start()
    threads_before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        idle.extend(
            socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(MAX_CONNECTIONS)
        )
        # Accepted in order: by the time the extra ones are, every idle one holds a slot.
        refused = [_refused_unanswered(port) for _ in range(3 * MAX_CONNECTIONS)]
        assert all(refused)
        assert threading.active_count() <= threads_before + MAX_CONNECTIONS
        for connection in idle:
            connection.close()
        idle.clear()
        deadline = time.monotonic() + 10
        body = b""
        while b"tgi_collector_build_info" not in body and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
                    again.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                    body = b"".join(iter(lambda: again.recv(65536), b""))
            except ConnectionResetError:
                time.sleep(0.05)
        assert body.startswith(b"HTTP/1.0 200")
        assert b"tgi_collector_build_info" in body
    finally:
        for connection in idle:
            connection.close()
        http.close()
