"""Fault injection under running Watch streams: a real CollectorServer, two simulators, one of
them behind :class:`~fault_proxy.FaultProxy`, and raw gRPC stubs over loopback.

While the proxy cycles through latency, drop, reset and black hole, the faulty target's
snapshots must be down with the right error kind, come back up once the proxy passes again, on
the same stream (no resubscribe), and the healthy target must keep arriving on every tick for
both of its subscribers. Why each fault gives the kind it gives:

- ``latency(1 s)`` and ``blackhole``: the connection is made and the request sent, but no
  complete response arrives within the 0.4 s scrape deadline -> ``TIMEOUT``.
- ``drop`` and ``reset``: the kernel completes the TCP handshake before the proxy accepts, so
  connecting succeeds; the connection is then closed (EOF, or an RST when the request was
  already waiting unread) or reset before any response byte -> ``PROTOCOL`` ("connection
  closed before a response" / "connection reset by ..."), never ``CONNECT``.

Timing assertions are behavioural: snapshots are matched to faults by their tick stamps
(scheduled before or after the switch), never by how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from fault_proxy import BLACKHOLE, DROP, PASS, RESET, Fault, FaultProxy, latency
from fixture_server import FixtureServer
from google.protobuf import duration_pb2

from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.simulator import SimulatorConfig, TgiSimulator
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc, snapshot_pb2

INTERVAL = 0.5
TIMEOUT = 0.4  # the scrape deadline asked for in the Watch request (at most the interval)
LATENCY = 1.0  # per forwarded chunk: well past the deadline
# How long any single wait of these tests may take: a few intervals, whatever happens.
WAIT = 10 * INTERVAL
PROTOCOL = snapshot_pb2.ERROR_KIND_PROTOCOL
TIMED_OUT = snapshot_pb2.ERROR_KIND_TIMEOUT

# (fault, the error kind its snapshots must carry, the messages that kind may come with)
FAULTS: list[tuple[Fault, int, tuple[str, ...]]] = [
    (latency(LATENCY), TIMED_OUT, (f"no complete response within {TIMEOUT} s",)),
    (DROP, PROTOCOL, ("connection closed before a response", "connection reset by")),
    (RESET, PROTOCOL, ("connection reset by", "connection closed before a response")),
    (BLACKHOLE, TIMED_OUT, (f"no complete response within {TIMEOUT} s",)),
]


def _duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def _watch_request(targets: dict[str, str]) -> collector_pb2.WatchRequest:
    return collector_pb2.WatchRequest(
        targets=[
            collector_pb2.Target(instance_id=name, endpoint=url) for name, url in targets.items()
        ],
        interval=_duration(INTERVAL),
        options=collector_pb2.ScrapeOptions(
            timeout=_duration(TIMEOUT), omit_raw_metrics=True, skip_info=True
        ),
    )


def _stamp(snapshot: snapshot_pb2.Snapshot) -> float:
    """The snapshot's scheduled tick, wall clock seconds."""
    return snapshot.timestamp.ToNanoseconds() / 1e9


@dataclass
class Stream:
    """A Watch call read by a background task into ``messages``."""

    call: grpc.aio.UnaryStreamCall
    messages: list[collector_pb2.WatchResponse] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False

    async def read_all(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            for _ in range(100_000):
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    break
                self.messages.append(message)
                self.changed.set()
        self.ended = True
        self.changed.set()

    def snapshots(self, instance_id: str) -> list[snapshot_pb2.Snapshot]:
        return [
            m.snapshot
            for m in self.messages
            if m.HasField("snapshot") and m.snapshot.instance_id == instance_id
        ]

    async def wait_for(self, found: Callable[[], bool]) -> None:
        """Until ``found()`` holds, bounded by WAIT; fails if the stream ends first."""
        async with asyncio.timeout(WAIT):
            for _ in range(10_000):
                if found():
                    return
                assert not self.ended, "the Watch stream ended"
                self.changed.clear()
                await self.changed.wait()

    async def after(
        self, instance_id: str, since: float, count: int
    ) -> list[snapshot_pb2.Snapshot]:
        """The first ``count`` snapshots of ``instance_id`` whose tick is after ``since``."""

        def later() -> list[snapshot_pb2.Snapshot]:
            return [s for s in self.snapshots(instance_id) if _stamp(s) > since]

        await self.wait_for(lambda: len(later()) >= count)
        return later()[:count]


@contextlib.asynccontextmanager
async def watching(
    stub: collector_pb2_grpc.CollectorServiceStub, targets: dict[str, str]
) -> AsyncIterator[Stream]:
    stream = Stream(stub.Watch(_watch_request(targets)))
    task = asyncio.create_task(stream.read_all())
    try:
        yield stream
    finally:
        stream.call.cancel()
        await asyncio.wait_for(task, WAIT)


@pytest.fixture
async def stub() -> AsyncIterator[collector_pb2_grpc.CollectorServiceStub]:
    config = ServerConfig(listen="127.0.0.1:0", grace_seconds=1.0, min_watch_interval_seconds=0.2)
    async with (
        CollectorServer(config) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield collector_pb2_grpc.CollectorServiceStub(channel)


def _assert_every_tick(stamps: list[float]) -> None:
    """Consecutive ticks one interval apart: the first (immediate) scrape excepted, none
    missing. Stamps are scheduled ticks, so this holds exactly however late scrapes ran."""
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    gaps = [b - a for a, b in itertools.pairwise(stamps[1:])]
    missing = [gap for gap in gaps if abs(gap - INTERVAL) > 1e-3]
    assert not missing, f"ticks missing: gaps {missing}"


async def test_faults_under_a_running_watch(stub: collector_pb2_grpc.CollectorServiceStub) -> None:
    async with (
        TgiSimulator(SimulatorConfig(seed=1)) as healthy,
        TgiSimulator(SimulatorConfig(seed=2)) as upstream,
        FaultProxy("127.0.0.1", upstream.port) as proxy,
    ):
        both_targets = {"healthy": healthy.url + "/metrics", "faulty": proxy.url("/metrics")}
        async with (
            watching(stub, both_targets) as both,
            watching(stub, {"healthy": both_targets["healthy"]}) as only_healthy,
        ):
            first = await both.after("faulty", 0.0, 1)
            assert first[0].health == snapshot_pb2.HEALTH_UP, first[0].error
            # Latency within the deadline is no fault: an exchange takes 2 x 50 ms of 400 ms.
            since = time.time()
            proxy.set_fault(latency(0.05))
            for snapshot in await both.after("faulty", since, 2):
                assert snapshot.health == snapshot_pb2.HEALTH_UP, snapshot.error
            seen_messages: dict[str, set[str]] = {}
            for fault, kind, messages in FAULTS:
                since = time.time()
                proxy.set_fault(fault)
                for snapshot in await both.after("faulty", since, 2):
                    assert snapshot.health == snapshot_pb2.HEALTH_DOWN, (fault, snapshot)
                    assert snapshot.error.kind == kind, (fault, snapshot.error)
                    assert any(text in snapshot.error.message for text in messages), (
                        fault,
                        snapshot.error.message,
                    )
                    seen_messages.setdefault(fault.kind, set()).add(snapshot.error.message)
                since = time.time()
                proxy.set_fault(PASS)
                for snapshot in await both.after("faulty", since, 2):
                    assert snapshot.health == snapshot_pb2.HEALTH_UP, (fault, snapshot.error)

            # A fault for new connections only: the collector's keep-alive connection (opened
            # under PASS) goes on carrying scrapes, so the target stays up and no new
            # connection is ever black-holed.
            black_holed = proxy.accepted["blackhole"]
            since = time.time()
            proxy.set_fault(BLACKHOLE, existing=False)
            for snapshot in await both.after("faulty", since, 2):
                assert snapshot.health == snapshot_pb2.HEALTH_UP, snapshot.error
            assert proxy.accepted["blackhole"] == black_holed
            proxy.set_fault(PASS)
            # Let the second subscriber see the healthy target's latest tick too.
            last = both.snapshots("healthy")[-1]
            await only_healthy.wait_for(
                lambda: any(_stamp(s) >= _stamp(last) for s in only_healthy.snapshots("healthy"))
            )
            assert not both.ended and not only_healthy.ended  # the same streams throughout

    # Every fault was seen on a stream that never ended, with the kinds above.
    assert set(seen_messages) == {fault.kind for fault, _, _ in FAULTS}
    # The collector kept reconnecting while connections were dropped or reset.
    assert all(proxy.accepted[kind] >= 1 for kind in ("drop", "reset"))

    healthy_snapshots = both.snapshots("healthy")
    assert all(s.health == snapshot_pb2.HEALTH_UP for s in healthy_snapshots)
    stamps = [_stamp(s) for s in healthy_snapshots]
    _assert_every_tick(stamps)
    # The second subscriber joined the same loop: it got the tick current when it joined, then
    # every later one, the same ticks as the first subscriber.
    second = [_stamp(s) for s in only_healthy.snapshots("healthy")]
    assert second, "the second subscriber got nothing"
    assert all(s.health == snapshot_pb2.HEALTH_UP for s in only_healthy.snapshots("healthy"))
    assert only_healthy.snapshots("faulty") == []
    assert second[0] in stamps
    start = stamps.index(second[0])
    common = min(len(stamps) - start, len(second))
    assert second[:common] == stamps[start : start + common]
    assert len(second) - common <= 1  # cancelled one tick apart at most
    # Nothing was coalesced: each subscriber read every tick it was sent.
    assert sum(m.coalesced for m in both.messages + only_healthy.messages) == 0
    # One scrape per tick for both subscribers (plus at most one in flight at the end).
    assert len(stamps) <= healthy.scrape_count <= len(stamps) + 1
    # The faulty target stayed on the stream throughout: its ticks kept coming too (scrapes
    # ending at the deadline may overrun a tick, which the loop then skips, never bunches).
    faulty = [_stamp(s) for s in both.snapshots("faulty")]
    assert faulty == sorted(faulty)
    assert all(b - a >= INTERVAL / 2 - 1e-3 for a, b in itertools.pairwise(faulty))


# -- the proxy itself, at the socket level -------------------------------------------------------


async def _exchange(port: int, bound: float = 3.0) -> bytes:
    """Send a GET through the proxy and read until EOF, at most ``bound`` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(bound):
            return await reader.read(-1)
    finally:
        writer.transport.abort()


async def test_proxy_faults_at_the_socket_level(fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=b"up 1\n")
    async with FaultProxy("127.0.0.1", fixture_server.port) as proxy:
        assert (await _exchange(proxy.port)).endswith(b"\r\n\r\nup 1\n")

        proxy.set_fault(latency(0.3))
        started = time.monotonic()
        assert (await _exchange(proxy.port)).endswith(b"up 1\n")
        assert time.monotonic() - started >= 0.6  # request and response each waited

        proxy.set_fault(DROP)
        # Closed before any answer (an RST instead of a FIN if the request was waiting unread).
        with contextlib.suppress(ConnectionResetError):
            assert await _exchange(proxy.port) == b""

        proxy.set_fault(RESET)
        with pytest.raises(ConnectionResetError):
            await _exchange(proxy.port)

        proxy.set_fault(BLACKHOLE)
        with pytest.raises(TimeoutError):
            await _exchange(proxy.port, bound=0.5)  # never answered, never closed

        proxy.set_fault(PASS)
        assert (await _exchange(proxy.port)).endswith(b"up 1\n")
        assert dict(proxy.accepted) == {
            "pass": 2,
            "latency": 1,
            "drop": 1,
            "reset": 1,
            "blackhole": 1,
        }
        # Only the forwarded connections reached the server.
        assert fixture_server.connections == 3
