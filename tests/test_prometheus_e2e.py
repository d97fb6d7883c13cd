"""A real Prometheus scrapes the collector's own metrics, and PromQL finds what the test did.

Debian's ``prometheus`` (``scripts/install_test_tools.sh`` installs it when absent) runs on
loopback with its storage in a temporary directory, scraping the collector's metrics port
every second. The test makes
Collect calls and opens one Watch, then queries Prometheus's HTTP API until the series show
exactly those calls. About 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from fixture_server import FixtureServer
from reference import TGI_REAL

from tgi_collector.client import CollectorClient, watch_request
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc

COLLECT = "tgi_collector.v1.CollectorService/Collect"
WATCH = "tgi_collector.v1.CollectorService/Watch"
QUERY_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _ready(client: httpx.AsyncClient, url: str, process: asyncio.subprocess.Process) -> bool:
    """Wait for ``/-/ready``; False if Prometheus exited first (e.g. its port was taken)."""
    async with asyncio.timeout(20):
        while process.returncode is None:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/-/ready", timeout=2)).status_code == 200:
                    return True
            await asyncio.sleep(0.1)
    return False


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, scrape_port: int) -> AsyncIterator[str]:
    """A running Prometheus scraping ``127.0.0.1:scrape_port`` every second; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not on PATH: scripts/install_test_tools.sh installs Debian's package"
            " (apt-get install prometheus)"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: tgi-collector\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{scrape_port}']\n"
    )
    log = tmp_path / "prometheus.log"
    async with httpx.AsyncClient() as client:
        for attempt in range(2):  # the free port may be taken before Prometheus binds it
            url = f"http://127.0.0.1:{_free_port()}"
            with log.open("ab") as out:
                process = await asyncio.create_subprocess_exec(
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address={url.removeprefix('http://')}",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )
            try:
                if await _ready(client, url, process):
                    yield url
                    return
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.wait(), timeout=10)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
            if attempt == 1 or "address already in use" not in log.read_text(errors="replace"):
                break
    pytest.fail(f"Prometheus did not become ready:\n{log.read_text(errors='replace')[-3000:]}")


async def _query(client: httpx.AsyncClient, url: str, promql: str) -> dict[tuple[str, ...], float]:
    """An instant query: the labels named in ``promql``'s ``by`` clause (or none) -> value."""
    response = await client.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    by = promql.partition(" by (")[2].partition(")")[0]
    names = [name.strip() for name in by.split(",") if name.strip()]
    return {
        tuple(item["metric"].get(name, "") for name in names): float(item["value"][1])
        for item in body["data"]["result"]
    }


async def test_prometheus_scrapes_the_collectors_own_metrics(
    tmp_path: Path, fixture_server: FixtureServer, unused_port: int
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    fixture_server.route("/watched", body=TGI_REAL)
    good = fixture_server.url("/metrics")
    watched = fixture_server.url("/watched")
    dead = f"http://127.0.0.1:{unused_port}/metrics"
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", grace_seconds=0.5)
    async with CollectorServer(config) as server:
        assert server.metrics_port is not None
        address = f"127.0.0.1:{server.port}"
        async with CollectorClient(address) as collector:
            for _ in range(3):
                assert (await collector.collect(good)).request_metrics.success_total == 109
            for _ in range(2):
                assert (await collector.collect(dead)).error.message
        async with grpc.aio.insecure_channel(address) as channel:
            stub = collector_pb2_grpc.CollectorServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Collect(collector_pb2.CollectRequest(), timeout=5)
            # One Watch that stays open; at a 60 s interval its loop scrapes once in this test.
            watch = stub.Watch(watch_request([watched], interval=60))
            await asyncio.wait_for(watch.read(), timeout=10)
            try:
                async with (
                    prometheus(tmp_path, server.metrics_port) as url,
                    httpx.AsyncClient() as client,
                ):
                    queries = {
                        "sum by (target, outcome) (tgi_collector_scrapes_total)": {
                            (good, "ok"): 3,
                            (dead, "connect"): 2,
                            (watched, "ok"): 1,
                        },
                        "sum by (method, code) (tgi_collector_rpcs_total)": {
                            (COLLECT, "OK"): 5,
                            (COLLECT, "INVALID_ARGUMENT"): 1,
                        },
                        "sum by (outcome) (tgi_collector_scrape_duration_seconds_count)": {
                            ("ok",): 4,
                            ("connect",): 2,
                        },
                        "sum(tgi_collector_scrape_loops)": {(): 1},
                        "sum(tgi_collector_watch_subscribers)": {(): 1},
                        'sum(up{job="tgi-collector"})': {(): 1},
                        "count(process_resident_memory_bytes > 0)": {(): 1},
                    }
                    results: dict[str, dict[tuple[str, ...], float]] = {}
                    for _ in range(round(QUERY_TIMEOUT / 0.25)):  # the first scrapes, bounded
                        results = {q: await _query(client, url, q) for q in queries}
                        if results == queries:
                            break
                        await asyncio.sleep(0.25)
                    assert results == queries
            finally:
                watch.cancel()
