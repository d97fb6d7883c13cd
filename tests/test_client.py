"""``CollectorClient.watch``: the resubscribing Watch iterator, against real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from fixture_server import FixtureServer
from polling import wait_until
from reference import TGI_REAL

from tgi_collector.client import (
    INITIAL_BACKOFF_SECONDS,
    NON_RETRYABLE_CODES,
    CollectorClient,
    backoff_delay,
    watch_request,
)
from tgi_collector.hub import LOOP_TASK_PREFIX
from tgi_collector.server import SERVICE_NAME, CollectorServer, ServerConfig
from tgi_collector.simulator import SimulatorConfig, TgiSimulator
from tgi_collector.v1 import collector_pb2, snapshot_pb2

# Watch intervals in these tests; the servers accept them (their minimum is lowered).
INTERVAL = 0.2
MIN_INTERVAL = 0.1


def _config(listen: str = "127.0.0.1:0", *, max_subscribers: int = 10_000) -> ServerConfig:
    return ServerConfig(
        listen=listen,
        grace_seconds=0.5,
        min_watch_interval_seconds=MIN_INTERVAL,
        max_subscribers=max_subscribers,
    )


@pytest.fixture
async def simulator() -> AsyncIterator[TgiSimulator]:
    async with TgiSimulator(SimulatorConfig(seed=7)) as sim:
        sim.advance(5.0)  # some traffic, so that the exposition is not empty
        yield sim


@pytest.fixture
async def server() -> AsyncIterator[CollectorServer]:
    async with CollectorServer(_config()) as running:
        yield running


def _watch_tasks() -> list[asyncio.Task[object]]:
    """Tasks that belong to a Watch: client calls, server handlers, scrape loops."""
    markers = ("CollectorService/Watch", "_AioCall", "rpc_task", LOOP_TASK_PREFIX)
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and (task.get_name() == "consume" or any(marker in repr(task) for marker in markers))
    ]


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    upper = [backoff_delay(n, max_backoff=1.0, rng=lambda low, high: high) for n in range(8)]
    assert upper == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
    assert upper[0] == INITIAL_BACKOFF_SECONDS
    lower = [backoff_delay(n, max_backoff=1.0, rng=lambda low, high: low) for n in range(8)]
    assert lower == [0.0] * 8
    # The default draw stays inside the bounds; a huge attempt number does not overflow.
    for attempt in (0, 3, 10_000):
        cap = min(30.0, 0.1 * 2.0 ** min(attempt, 60))
        assert 0.0 <= backoff_delay(attempt, max_backoff=30.0) <= cap


def test_watch_request_fields() -> None:
    request = watch_request(
        ["http://a:1/metrics", ("b", "http://b:2/metrics")],
        interval=1.5,
        heartbeat=10,
        updates_only=True,
        suppress_unchanged=True,
        omit_raw_metrics=False,
    )
    assert [(t.instance_id, t.endpoint) for t in request.targets] == [
        ("", "http://a:1/metrics"),
        ("b", "http://b:2/metrics"),
    ]
    assert (request.interval.seconds, request.interval.nanos) == (1, 500_000_000)
    assert request.heartbeat_interval.seconds == 10
    assert request.updates_only and request.suppress_unchanged
    assert not request.options.omit_raw_metrics
    defaults = watch_request(["http://a:1/metrics"])
    assert not defaults.HasField("interval") and not defaults.HasField("heartbeat_interval")
    assert defaults.options.omit_raw_metrics


async def test_watch_yields_snapshots_of_every_target_and_a_sync_marker(
    server: CollectorServer, simulator: TgiSimulator, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    targets = [("sim", f"{simulator.url}/metrics"), ("fixture", fixture_server.url("/metrics"))]
    snapshots: list[snapshot_pb2.Snapshot] = []
    events: list[str | None] = []
    async with (
        asyncio.timeout(10),
        CollectorClient(f"127.0.0.1:{server.port}") as client,
    ):
        messages = client.watch(targets, interval=INTERVAL)
        async with contextlib.aclosing(messages):
            async for response in messages:
                events.append(response.WhichOneof("event"))
                if response.HasField("snapshot"):
                    snapshots.append(response.snapshot)
                    simulator.advance(INTERVAL)
                if len(snapshots) >= 4:
                    break
    # First one snapshot per target, then the sync marker, then the next ticks.
    assert events.index("sync") == 2
    first = {s.instance_id: s for s in snapshots[:2]}
    assert set(first) == {"sim", "fixture"}
    assert all(s.health == snapshot_pb2.HEALTH_UP for s in snapshots)
    assert first["fixture"].request_metrics.success_total == 109  # the recorded TGI scrape
    assert not first["sim"].HasField("window")  # a stream's first snapshot: lifetime only
    assert not any(s.raw_metrics for s in snapshots)  # omit_raw_metrics by default
    later = snapshots[2:]
    assert all(s.HasField("window") for s in later)
    assert all(s.window.request_rate >= 0 for s in later)
    # The stream was closed with the iterator: the server released the subscription.
    await wait_until(lambda: server.hub.subscriber_count == 0 and server.hub.loop_count == 0)


async def test_watch_resubscribes_after_the_server_restarts_on_the_same_port(
    simulator: TgiSimulator, unused_port: int
) -> None:
    listen = f"127.0.0.1:{unused_port}"
    first_server = CollectorServer(_config(listen))
    await first_server.start()
    retries: list[grpc.StatusCode] = []
    received: list[tuple[float, bool]] = []  # (when, has window) per snapshot
    loop = asyncio.get_running_loop()
    restarted = asyncio.Event()
    second_server: CollectorServer | None = None

    async def consume(client: CollectorClient) -> None:
        messages = client.watch(
            [("sim", f"{simulator.url}/metrics")],
            interval=INTERVAL,
            max_backoff=0.2,
            on_retry=lambda code, details, delay: retries.append(code),
        )
        async with contextlib.aclosing(messages):
            async for response in messages:
                if response.HasField("snapshot"):
                    received.append((loop.time(), response.snapshot.HasField("window")))
                    if restarted.is_set():
                        return

    try:
        async with asyncio.timeout(10), CollectorClient(listen) as client:
            consumer = asyncio.create_task(consume(client), name="consume")
            await wait_until(lambda: len(received) >= 2)
            await first_server.stop()  # drain: the open stream ends cleanly (OK)
            stopped_at = loop.time()
            await asyncio.sleep(0.6)  # nothing listens: resubscribes fail with UNAVAILABLE
            second_server = CollectorServer(_config(listen))
            assert await second_server.start() == unused_port
            restarted.set()
            await consumer
    finally:
        await first_server.stop()
        if second_server is not None:
            await second_server.stop()
    assert grpc.StatusCode.OK in retries  # the drain's clean end
    assert grpc.StatusCode.UNAVAILABLE in retries  # while nothing listened
    after = [has_window for when, has_window in received if when > stopped_at]
    assert after, "no snapshot from the restarted server"
    assert after[0] is False  # a new stream starts over: lifetime values first


async def test_watch_retries_resource_exhausted_until_a_slot_frees(
    simulator: TgiSimulator,
) -> None:
    """RESOURCE_EXHAUSTED (here: the subscriber cap) is retried, not raised."""
    async with (
        asyncio.timeout(10),
        CollectorServer(_config(max_subscribers=1)) as server,
        CollectorClient(f"127.0.0.1:{server.port}") as client,
    ):
        targets = [f"{simulator.url}/metrics"]
        holder = client.watch(targets, interval=INTERVAL)
        await anext(holder)  # holds the only slot
        retries: list[grpc.StatusCode] = []
        waiting = client.watch(
            targets,
            interval=INTERVAL,
            max_backoff=0.1,
            on_retry=lambda code, details, delay: retries.append(code),
        )
        pending = asyncio.ensure_future(anext(waiting))
        await wait_until(lambda: len(retries) >= 2)
        assert set(retries) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert not pending.done()
        await holder.aclose()  # frees the slot
        response = await pending
        assert response.HasField("snapshot")
        await waiting.aclose()


async def test_invalid_argument_is_raised_not_retried(
    server: CollectorServer, simulator: TgiSimulator
) -> None:
    retries: list[grpc.StatusCode] = []
    async with asyncio.timeout(5), CollectorClient(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in client.watch(
                [f"{simulator.url}/metrics"],
                interval=MIN_INTERVAL / 10,  # below the server's minimum
                on_retry=lambda code, details, delay: retries.append(code),
            ):
                pass
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "interval" in (raised.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as no_targets:
            await anext(client.watch([]))
        assert no_targets.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert retries == []
    assert grpc.StatusCode.INVALID_ARGUMENT in NON_RETRYABLE_CODES


async def test_stop_on_decides_what_is_raised(simulator: TgiSimulator) -> None:
    """A caller may refuse to wait out a full collector: RESOURCE_EXHAUSTED raised at once."""
    async with (
        asyncio.timeout(5),
        CollectorServer(_config(max_subscribers=1)) as server,
        CollectorClient(f"127.0.0.1:{server.port}") as client,
    ):
        targets = [f"{simulator.url}/metrics"]
        holder = client.watch(targets, interval=INTERVAL)
        await anext(holder)
        stop_on = NON_RETRYABLE_CODES | {grpc.StatusCode.RESOURCE_EXHAUSTED}
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await anext(client.watch(targets, interval=INTERVAL, stop_on=stop_on))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await holder.aclose()


async def test_without_resubscribe_a_drain_ends_the_iteration(simulator: TgiSimulator) -> None:
    server = CollectorServer(_config())
    await server.start()
    try:
        async with asyncio.timeout(5), CollectorClient(f"127.0.0.1:{server.port}") as client:
            messages = client.watch(
                [f"{simulator.url}/metrics"], interval=INTERVAL, resubscribe=False
            )
            first = await anext(messages)
            assert first.HasField("snapshot")
            stopping = asyncio.create_task(server.stop())
            rest = [response async for response in messages]  # ends, no error
            await stopping
    finally:
        await server.stop()
    assert all(isinstance(r, collector_pb2.WatchResponse) for r in rest)


async def test_cancelling_the_consumer_cancels_the_call(
    server: CollectorServer, simulator: TgiSimulator
) -> None:
    async with asyncio.timeout(5), CollectorClient(f"127.0.0.1:{server.port}") as client:
        got = asyncio.Event()

        async def consume() -> None:
            async for _ in client.watch([f"{simulator.url}/metrics"], interval=INTERVAL):
                got.set()

        consumer = asyncio.create_task(consume(), name="consume")
        await got.wait()
        assert server.hub.subscriber_count == 1
        assert _watch_tasks()  # the marker set does see a live Watch
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        # No call, handler, loop or consumer task survives, client side or server side.
        await wait_until(lambda: not _watch_tasks())
        assert server.hub.subscriber_count == 0
        assert server.hub.loop_count == 0
        assert not server.hub.tasks


async def test_cancelling_during_backoff_leaves_nothing(unused_port: int) -> None:
    """Nothing listens: the iterator sits in its backoff sleep; cancel ends it at once."""
    retries: list[grpc.StatusCode] = []
    async with CollectorClient(f"127.0.0.1:{unused_port}") as client:

        async def consume() -> None:
            async for _ in client.watch(
                ["http://127.0.0.1:1/metrics"],
                max_backoff=0.05,
                on_retry=lambda code, details, delay: retries.append(code),
            ):
                pass

        consumer = asyncio.create_task(consume(), name="consume")
        async with asyncio.timeout(5):
            await wait_until(lambda: len(retries) >= 3)  # keeps trying, each bounded by the cap
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await wait_until(lambda: not _watch_tasks())
    assert set(retries) == {grpc.StatusCode.UNAVAILABLE}


class _SilentCollector:
    """A Watch server that sends one heartbeat and then nothing: a half-open stream."""

    def __init__(self) -> None:
        self.calls = 0
        self.server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            self._watch,
            request_deserializer=collector_pb2.WatchRequest.FromString,
            response_serializer=collector_pb2.WatchResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Watch": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _watch(
        self, request: collector_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[collector_pb2.WatchResponse]:
        self.calls += 1
        yield collector_pb2.WatchResponse(heartbeat=collector_pb2.Heartbeat())
        await asyncio.sleep(3600)


async def test_a_silent_stream_with_heartbeats_is_replaced() -> None:
    """Three heartbeat intervals without a message: presumed dead, resubscribed."""
    silent = _SilentCollector()
    await silent.server.start()
    retries: list[grpc.StatusCode] = []
    try:
        async with asyncio.timeout(5), CollectorClient(f"127.0.0.1:{silent.port}") as client:
            messages = client.watch(
                ["http://127.0.0.1:1/metrics"],
                heartbeat=0.1,
                max_backoff=0.05,
                on_retry=lambda code, details, delay: retries.append(code),
            )
            async with contextlib.aclosing(messages):
                for _ in range(2):
                    response = await anext(messages)
                    assert response.HasField("heartbeat")
            assert silent.calls == 2
            assert retries == [grpc.StatusCode.DEADLINE_EXCEEDED]
            single = client.watch(["http://127.0.0.1:1/metrics"], heartbeat=0.1, resubscribe=False)
            await anext(single)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await anext(single)
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no message for 0.3 s" in (raised.value.details() or "")
    finally:
        await silent.server.stop(0)
