"""Watch against a real ``tgi-collector serve`` process: slow subscribers, memory, SIGTERM.

The server runs in its own process so that its memory can be read from ``/proc`` and so that
SIGTERM is delivered the way an orchestrator delivers it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from fixture_server import FixtureServer
from google.protobuf import duration_pb2
from reference import TGI_REAL

from tgi_collector.client import CollectorClient
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _start_server(port: int, *extra: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tgi_collector", "--log-level", "WARNING", "serve",
        "--listen", f"127.0.0.1:{port}", "--min-watch-interval", "0.1", *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with CollectorClient(f"127.0.0.1:{port}") as client, asyncio.timeout(30):
        while True:
            try:
                if await client.health(timeout=1) == "SERVING":
                    return process
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)


@pytest.fixture
async def stopper() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _request(url: str, interval: float, *, raw: bool) -> collector_pb2.WatchRequest:
    interval_message = duration_pb2.Duration()
    interval_message.FromNanoseconds(round(interval * 1e9))
    return collector_pb2.WatchRequest(
        targets=[collector_pb2.Target(instance_id="tgi", endpoint=url)],
        interval=interval_message,
        options=collector_pb2.ScrapeOptions(omit_raw_metrics=not raw, skip_info=True),
    )


async def test_a_stuck_subscriber_is_ended_and_nothing_else_suffers(
    fixture_server: FixtureServer,
    unused_port: int,
    stopper: list[asyncio.subprocess.Process],
) -> None:
    """A subscriber that never reads: others keep their lag, memory stays flat, it is ended.

    Snapshots carry raw metrics (about 100 kB each) every 0.2 s for 60 s: kept for the stuck
    subscriber, they would add up to about 30 MB.
    """
    interval, stall, duration = 0.2, 15.0, 60.0
    fixture_server.route("/metrics", body=TGI_REAL)
    server = await _start_server(unused_port, "--stall-timeout", str(stall))
    stopper.append(server)
    request = _request(fixture_server.url("/metrics"), interval, raw=True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{unused_port}") as stuck_channel:
        stuck = collector_pb2_grpc.CollectorServiceStub(stuck_channel).Watch(request)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{unused_port}") as channel:
            reader = collector_pb2_grpc.CollectorServiceStub(channel).Watch(request)
            lags: list[float] = []
            rss: list[int] = []
            started = time.monotonic()
            while time.monotonic() - started < duration:
                response = await asyncio.wait_for(reader.read(), timeout=5)
                if response.HasField("snapshot"):
                    lags.append(time.time() - response.snapshot.timestamp.ToNanoseconds() / 1e9)
                if len(lags) % 25 == 0:
                    rss.append(_rss_bytes(server.pid))
            reader.cancel()
        # The reader got every tick, promptly, while the other subscriber was stuck.
        assert len(lags) >= duration / interval * 0.9
        lags.sort()
        p50, p99 = statistics.median(lags), lags[int(len(lags) * 0.99)]
        print(f"\nreader lag p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(lags)}")
        assert p99 < 1.0
        # Memory: after warm-up, flat while the stuck subscriber stays attached.
        settled = rss[len(rss) // 4]
        print(f"server RSS {settled / 1e6:.1f} MB after warm-up, {rss[-1] / 1e6:.1f} MB at end")
        assert rss[-1] - settled < 20e6, rss
        # The stuck subscriber was ended with RESOURCE_EXHAUSTED (its transport buffers filled,
        # then it read nothing for `stall` s); what it finds buffered is bounded by HTTP/2 flow
        # control, far from every tick of the minute it slept.
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with asyncio.timeout(stall + 30):
                while (await stuck.read()) is not grpc.aio.EOF:
                    received += 1
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        print(f"stuck subscriber found {received} messages buffered, then its status")
        assert received < duration / interval / 2, received
    server.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.wait(), timeout=20) == 0


async def test_sigterm_ends_open_streams_cleanly_within_the_grace_period(
    fixture_server: FixtureServer,
    unused_port: int,
    stopper: list[asyncio.subprocess.Process],
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    grace = 3.0
    server = await _start_server(unused_port, "--grace", str(grace))
    stopper.append(server)
    request = _request(fixture_server.url("/metrics"), 0.2, raw=False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{unused_port}") as channel:
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        calls = [stub.Watch(request) for _ in range(5)]
        for call in calls:
            assert (await asyncio.wait_for(call.read(), timeout=10)).HasField("snapshot")
        sent = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)

        async def drain(call: grpc.aio.UnaryStreamCall) -> grpc.StatusCode:
            while await call.read() is not grpc.aio.EOF:
                pass
            return await call.code()

        codes = await asyncio.wait_for(asyncio.gather(*(drain(c) for c in calls)), timeout=grace)
        ended = time.monotonic() - sent
    assert codes == [grpc.StatusCode.OK] * len(calls)
    assert ended < grace
    assert await asyncio.wait_for(server.wait(), timeout=grace + 10) == 0
