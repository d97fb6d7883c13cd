"""Soak (issue 4, part 9): ``bench/soak.py`` for two minutes, and what soaking found.

The soak itself lives in ``bench/soak.py`` (its docstring says what it does and what it
checks); this test runs it with a 20 s warm-up and 100 s of measured churn (200 subscribers
joining and leaving, slow and stuck readers, flapping and dead targets, Collect calls), with
samples every 20 s, and fails with the soak's whole report when any bound or check fails.

Below it, regression tests of what soaking found: per-URL caches that outlived their targets,
reference cycles (down targets, ended scrape loops) that the server's GC tuning left
uncollected for many minutes, a client cancelling a blocked Watch logged as a server error, and
a client cancelling a Watch the stall timeout ended, logged as an error too (all fixed since).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from fixture_server import FixtureServer
from polling import wait_until
from reference import TGI_REAL

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import soak  # noqa: E402  (bench/ is not a package)

from tgi_collector import convert  # noqa: E402
from tgi_collector.client import CollectorClient, watch_request  # noqa: E402
from tgi_collector.hub import Hub  # noqa: E402
from tgi_collector.scraper import Scraper  # noqa: E402
from tgi_collector.targets import ScrapeOptions, Target  # noqa: E402
from tgi_collector.v1 import collector_pb2_grpc  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


async def test_two_minute_soak(tmp_path: Path) -> None:
    config = soak.SoakConfig(
        minutes=100 / 60, warmup=20, sample_every=20, log_dir=tmp_path, echo=lambda line: None
    )
    report = await soak.run_soak(config)
    print(report.table())
    assert report.ok, report.table()
    # The soak did what it says: churn, flaps, stuck readers ended, every call kind made.
    assert report.stats["watch started"] >= 300
    assert report.stats["flaps"] >= 2
    for kind in ("collect", "collect invalid", "watch invalid", "health"):
        assert sum(n for (k, _), n in report.codes.items() if k == kind), kind


# -- what soaking found ---------------------------------------------------------------------------


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_caches_of_urls_no_one_scrapes_any_more_do_not_pile_up(
    fixture_server: FixtureServer,
) -> None:
    """Found by soaking: the scraper kept a parser and view cache (~1.6 MiB for a real TGI
    scrape) for every URL it ever scraped, up to 10,000 URLs, so one-off scrapes of distinct
    URLs (Collect) grew the collector ~1.6 MiB per URL (60 URLs: +104 MiB)."""
    fixture_server.route("/metrics", body=TGI_REAL)
    scraper = Scraper()
    options = ScrapeOptions(fetch_info=False, include_raw_metrics=False)
    try:
        assert (await scraper.scrape(Target("", fixture_server.url("/metrics")), options)).up
        gc.collect()
        before = _rss_mib()
        for n in range(60):  # 60 distinct URLs, each scraped once: ~96 MiB with the bug
            url = fixture_server.url(f"/metrics?n={n}")
            assert (await scraper.scrape(Target("", url), options)).up
        gc.collect()
        grown = _rss_mib() - before
    finally:
        await scraper.aclose()
    assert grown < 32, f"RSS grew {grown:.0f} MiB after scraping 60 distinct URLs once each"


async def _cyclic_garbage_of(
    action: Callable[[], Awaitable[None]], times: int
) -> tuple[int, collections.Counter[str]]:
    """Run ``action`` ``times`` times with the cyclic GC off: how many objects it left in
    reference cycles, and their type names (only a full collection would have freed them)."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(times):
            await action()
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        return found, collections.Counter(type(thing).__name__ for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_scraping_a_down_target_leaves_no_reference_cycles(unused_port: int) -> None:
    """Found by the soak: every scrape of a down target left ~30 objects in a cycle
    (ScrapeError -> traceback -> frames -> the local holding it), which serve()'s GC tuning
    (thresholds 50_000, 50, 100 and gc.freeze()) left uncollected for many minutes."""
    scraper = Scraper()
    target = Target("down", f"http://127.0.0.1:{unused_port}/metrics")
    options = ScrapeOptions(fetch_info=False, include_raw_metrics=False)

    async def scrape_down() -> None:
        assert not (await scraper.scrape(target, options)).up

    try:
        await scrape_down()  # warm: lazy imports, caches
        found, kinds = await _cyclic_garbage_of(scrape_down, 20)
    finally:
        await scraper.aclose()
    assert found < 20, f"20 scrapes left {found} objects in cycles: {kinds.most_common(8)}"


async def test_an_ended_scrape_loop_leaves_no_reference_cycle(
    fixture_server: FixtureServer,
) -> None:
    """Found by the soak: an ended loop stayed in a cycle (Task -> coroutine -> Loop -> task)
    with its last tick and previous exposition, freed only by the cyclic GC."""
    fixture_server.route("/metrics", body=TGI_REAL)
    scraper = Scraper()
    hub = Hub(scraper, convert.encode_watch_snapshot)
    target = Target("t", fixture_server.url("/metrics"))
    options = ScrapeOptions(fetch_info=False, include_raw_metrics=False)

    async def subscribe_and_leave() -> None:
        subscription = hub.subscribe([target], interval_seconds=0.2, options=options)
        async with subscription:
            assert await subscription.next() is not None
        await wait_until(lambda: not hub.tasks, timeout=5)

    try:
        await subscribe_and_leave()
        found, kinds = await _cyclic_garbage_of(subscribe_and_leave, 5)
    finally:
        await hub.aclose()
        await scraper.aclose()
    assert not kinds["Loop"], f"5 ended loops left {found} objects in cycles: {kinds}"


STALL_TIMEOUT = 3.0


@pytest.fixture
async def collector(
    unused_port: int, tmp_path: Path
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process, Path]]:
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tgi_collector", "--log-level", "WARNING", "serve",
            "--listen", f"127.0.0.1:{unused_port}", "--min-watch-interval", "0.1",
            "--stall-timeout", str(STALL_TIMEOUT), stdout=out, stderr=out,
        )  # fmt: skip
    address = f"127.0.0.1:{unused_port}"
    try:
        async with CollectorClient(address) as client, asyncio.timeout(30):
            while True:
                try:
                    if await client.health(timeout=1) == "SERVING":
                        break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        yield address, process, log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_client_cancelling_a_blocked_watch_is_not_an_error(
    fixture_server: FixtureServer, collector: tuple[str, asyncio.subprocess.Process, Path]
) -> None:
    address, process, log = collector
    fixture_server.route("/metrics", body=TGI_REAL)
    request = watch_request([fixture_server.url("/metrics")], interval=0.1, omit_raw_metrics=False)
    # The 64 KiB initial window (no BDP probing): ~100 kB messages block the server's writes.
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        calls = [stub.Watch(request) for _ in range(10)]
        await asyncio.sleep(STALL_TIMEOUT / 2)  # the streams are alive, their writes blocked
        for call in calls:
            call.cancel()
    started = time.monotonic()
    async with CollectorClient(address) as client:
        while time.monotonic() - started < 3:  # the server notices the cancels
            assert await client.health(timeout=5) == "SERVING"
            await asyncio.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    assert soak.log_errors(log.read_text(errors="replace")) == 0, log.read_text()


async def test_a_client_cancelling_a_stalled_watch_is_not_an_error(
    fixture_server: FixtureServer, collector: tuple[str, asyncio.subprocess.Process, Path]
) -> None:
    """Found by the soak: a stuck reader ended by the stall timeout gets RESOURCE_EXHAUSTED
    only after it reads what is buffered; when its client cancelled instead, the status could
    not be sent (gRPC's ExecuteBatchError from context.abort) and gRPC logged an ERROR with two
    tracebacks per stream. The server now ends such a call quietly, as cancelled."""
    address, process, log = collector
    fixture_server.route("/metrics", body=TGI_REAL)
    request = watch_request([fixture_server.url("/metrics")], interval=0.1, omit_raw_metrics=False)
    options = [("grpc.http2.bdp_probe", 0)]  # the 64 KiB window: blocked after one message
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        calls = [stub.Watch(request) for _ in range(3)]
        await asyncio.sleep(STALL_TIMEOUT + 2)  # ended by the stall timeout, status pending
        for call in calls:
            call.cancel()
    await asyncio.sleep(1)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    assert soak.log_errors(log.read_text(errors="replace")) == 0, log.read_text()
