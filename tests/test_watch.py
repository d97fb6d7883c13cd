"""Watch end to end: a real grpc.aio server, real HTTP targets, raw stubs over sockets.

These are the acceptance checks of the Watch capability: shared loops, windows with the reset
rule, window quantiles against an independent computation, lifecycle and drain.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import grpc
import pytest
from fixture_server import FixtureServer
from google.protobuf import duration_pb2
from polling import wait_until
from reference import TGI_REAL, buckets_from_text, histogram_quantile, scalar_from_text

from tgi_collector.hub import LOOP_TASK_PREFIX
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.simulator import SimulatorConfig, TgiSimulator
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc, snapshot_pb2

INTERVAL = 0.3


def _duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def _watch_request(*endpoints: str, interval: float = INTERVAL) -> collector_pb2.WatchRequest:
    return collector_pb2.WatchRequest(
        targets=[
            collector_pb2.Target(instance_id=f"t{i}", endpoint=url)
            for i, url in enumerate(endpoints)
        ],
        interval=_duration(interval),
        options=collector_pb2.ScrapeOptions(omit_raw_metrics=True, skip_info=True),
    )


@pytest.fixture
async def server() -> AsyncIterator[CollectorServer]:
    config = ServerConfig(listen="127.0.0.1:0", grace_seconds=1.0, min_watch_interval_seconds=0.1)
    async with CollectorServer(config) as running:
        yield running


@pytest.fixture
async def stub(
    server: CollectorServer,
) -> AsyncIterator[collector_pb2_grpc.CollectorServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield collector_pb2_grpc.CollectorServiceStub(channel)


async def _snapshots(call: object, count: int) -> list[snapshot_pb2.Snapshot]:
    """The next ``count`` snapshots of a Watch call (sync markers and heartbeats skipped)."""
    found: list[snapshot_pb2.Snapshot] = []
    async with asyncio.timeout(10):
        while len(found) < count:
            response = await call.read()  # type: ignore[attr-defined]
            assert response is not grpc.aio.EOF
            if response.HasField("snapshot"):
                found.append(response.snapshot)
    return found


async def test_three_subscribers_share_one_scrape_per_interval(
    stub: collector_pb2_grpc.CollectorServiceStub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    request = _watch_request(fixture_server.url("/metrics"))
    calls = [stub.Watch(request) for _ in range(3)]
    received = await asyncio.gather(*(_snapshots(call, 6) for call in calls))
    for call in calls:
        call.cancel()
    stamps = [[s.timestamp.ToNanoseconds() for s in snapshots] for snapshots in received]
    # Every subscriber got every snapshot: the same ticks, in the same order.
    assert stamps[0] == stamps[1] == stamps[2]
    # One scrape per tick however many subscribers: 6 ticks, at most one more scrape in flight.
    assert 6 <= fixture_server.hits("/metrics") <= 7
    # Ticks are the schedule: consecutive stamps one interval apart (the first is the start).
    gaps = [(b - a) / 1e9 for a, b in zip(stamps[0][1:], stamps[0][2:], strict=False)]
    # (datetimes carry microseconds, hence the tolerance)
    assert all(math.isclose(gap, INTERVAL, abs_tol=1e-5) for gap in gaps), gaps


async def test_one_subscriber_three_targets_gets_all_and_one_sync(
    stub: collector_pb2_grpc.CollectorServiceStub, fixture_server: FixtureServer
) -> None:
    urls = []
    for name in ("a", "b", "c"):
        fixture_server.route(f"/{name}/metrics", body=TGI_REAL)
        urls.append(fixture_server.url(f"/{name}/metrics"))
    call = stub.Watch(_watch_request(*urls))
    messages = []
    async with asyncio.timeout(10):
        while len(messages) < 10:
            messages.append(await call.read())
    call.cancel()
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds.count("sync") == 1
    sync_at = kinds.index("sync")
    before = {m.snapshot.instance_id for m in messages[:sync_at]}
    assert before == {"t0", "t1", "t2"}
    assert all(m.snapshot.health == snapshot_pb2.HEALTH_UP for m in messages[:sync_at])
    # The first snapshot of each target carries lifetime values and no window.
    assert not any(m.snapshot.HasField("window") for m in messages[:sync_at])
    assert any(m.snapshot.HasField("window") for m in messages[sync_at + 1 :])


def _simulated_text(seed: int, seconds: float) -> str:
    simulator = TgiSimulator(SimulatorConfig(seed=seed, requests_per_second=20))
    simulator.advance(seconds)
    return simulator.render_metrics()


async def test_restart_is_flagged_and_windows_are_right(
    stub: collector_pb2_grpc.CollectorServiceStub, fixture_server: FixtureServer
) -> None:
    before = _simulated_text(seed=1, seconds=120)  # a target with lots of history
    restarted = _simulated_text(seed=2, seconds=5)  # the same target, just restarted
    later = TgiSimulator(SimulatorConfig(seed=2, requests_per_second=20))
    later.advance(5)
    later.advance(5)
    after = later.render_metrics()  # five seconds on from `restarted`
    success = [scalar_from_text(t, "tgi_request_success") for t in (before, restarted, after)]
    assert success[1] < success[0] and success[2] > success[1]

    fixture_server.route("/metrics", body=before)
    call = stub.Watch(_watch_request(fixture_server.url("/metrics")))
    (first,) = await _snapshots(call, 1)
    assert first.request_metrics.success_total == success[0]
    fixture_server.route("/metrics", body=restarted)
    (reset,) = await _snapshots(call, 1)
    fixture_server.route("/metrics", body=after)
    (normal,) = await _snapshots(call, 1)
    call.cancel()

    # The restart: counters went down, so the delta is the new value (Prometheus' rule).
    assert reset.request_metrics.success_total == success[1]
    window = reset.window
    assert window.counter_reset
    # The wire rounds the duration to nanoseconds: rates are compared within that rounding.
    seconds = window.duration.ToNanoseconds() / 1e9
    # The window spans the two scheduled ticks the snapshots are stamped with.
    stamps = (reset.timestamp.ToNanoseconds() - first.timestamp.ToNanoseconds()) / 1e9
    assert math.isclose(seconds, stamps, abs_tol=1e-5)
    assert math.isclose(window.success_rate, success[1] / seconds, rel_tol=1e-6)
    for rate in (window.success_rate, window.failure_rate, window.request_rate,
                 window.generated_tokens_rate, window.input_tokens_rate):  # fmt: skip
        assert rate >= 0

    # The next window is an ordinary one: deltas of the two scrapes.
    window = normal.window
    assert not window.counter_reset
    seconds = window.duration.ToNanoseconds() / 1e9
    assert math.isclose(window.success_rate, (success[2] - success[1]) / seconds, rel_tol=1e-6)
    generated = [
        scalar_from_text(t, "tgi_request_generated_tokens_sum") for t in (restarted, after)
    ]
    assert math.isclose(
        window.generated_tokens_rate, (generated[1] - generated[0]) / seconds, rel_tol=1e-6
    )
    # Window quantiles: histogram_quantile over the bucket deltas of the two scrapes.
    old = dict(buckets_from_text(restarted, "tgi_request_duration"))
    new = buckets_from_text(after, "tgi_request_duration")
    deltas = [(bound, count - old.get(bound, 0.0)) for bound, count in new]
    (summary,) = [s for s in window.histograms if s.family == "tgi_request_duration"]
    assert summary.count == deltas[-1][1] > 0
    for q, got in ((0.5, summary.p50), (0.9, summary.p90), (0.99, summary.p99)):
        assert math.isclose(got, histogram_quantile(q, deltas), rel_tol=1e-12)


async def test_a_down_target_stays_on_the_stream_and_recovers(
    stub: collector_pb2_grpc.CollectorServiceStub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    call = stub.Watch(_watch_request(fixture_server.url("/metrics")))
    (up,) = await _snapshots(call, 1)
    fixture_server.route("/metrics", status=503, body=b"overloaded")
    (down,) = await _snapshots(call, 1)
    fixture_server.route("/metrics", body=TGI_REAL)
    (back,) = await _snapshots(call, 1)
    call.cancel()
    assert up.health == snapshot_pb2.HEALTH_UP
    assert down.health == snapshot_pb2.HEALTH_DOWN
    assert down.error.kind == snapshot_pb2.ERROR_KIND_HTTP_STATUS
    assert down.error.http_status == 503
    assert back.health == snapshot_pb2.HEALTH_UP
    assert back.window.success_rate == 0  # the same counters as before the outage


def _collector_tasks() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_name().startswith(LOOP_TASK_PREFIX)
    ]


async def test_cancels_and_deadlines_leave_no_loop_or_task(
    server: CollectorServer,
    stub: collector_pb2_grpc.CollectorServiceStub,
    fixture_server: FixtureServer,
) -> None:
    fixture_server.route("/a", body=TGI_REAL)
    fixture_server.route("/b", body=TGI_REAL)
    cancelled = [stub.Watch(_watch_request(fixture_server.url("/a"))) for _ in range(3)]
    timed_out = [
        stub.Watch(_watch_request(fixture_server.url("/b")), timeout=1.0) for _ in range(3)
    ]
    for call in cancelled + timed_out:
        await _snapshots(call, 1)
    assert server.hub.loop_count == 2
    assert server.hub.subscriber_count == 6
    for call in cancelled:
        call.cancel()
    for call in timed_out:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            while True:
                await _snapshots(call, 1)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # hub.tasks forgets a loop's task in its done callback, which asyncio runs one loop
    # iteration after the task finished: part of the wait, not a race of the assertion.
    await wait_until(
        lambda: (
            not (
                server.hub.subscriber_count
                or server.hub.loop_count
                or _collector_tasks()
                or server.hub.tasks
            )
        ),
        timeout=5,
    )
    assert server.hub.tasks == frozenset()
    assert _collector_tasks() == []


async def test_bad_watch_requests(stub: collector_pb2_grpc.CollectorServiceStub) -> None:
    url = "http://127.0.0.1:9/metrics"
    cases = [
        (_watch_request(url, interval=0.01), grpc.StatusCode.INVALID_ARGUMENT, "interval:"),
        (_watch_request("gopher://x"), grpc.StatusCode.INVALID_ARGUMENT, "targets[0].endpoint:"),
        (_watch_request("http://169.254.169.254/"), grpc.StatusCode.PERMISSION_DENIED, "target"),
    ]
    timeout_too_long = _watch_request(url, interval=1.0)
    timeout_too_long.options.timeout.seconds = 2
    cases.append((timeout_too_long, grpc.StatusCode.INVALID_ARGUMENT, "options.timeout:"))
    too_many = _watch_request(*[f"http://127.0.0.1:{1000 + i}/metrics" for i in range(1001)])
    cases.append((too_many, grpc.StatusCode.RESOURCE_EXHAUSTED, "targets:"))
    for request, code, prefix in cases:
        call = stub.Watch(request)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        assert raised.value.code() == code, request
        assert raised.value.details().startswith(prefix), raised.value.details()


async def test_one_watch_naming_an_endpoint_under_two_instance_ids_scrapes_it_once(
    server: CollectorServer,
    stub: collector_pb2_grpc.CollectorServiceStub,
    fixture_server: FixtureServer,
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    url = fixture_server.url("/metrics")
    request = _watch_request(url)
    del request.targets[:]
    request.targets.extend(
        collector_pb2.Target(instance_id=name, endpoint=url) for name in ("a", "b")
    )
    call = stub.Watch(request)
    messages = []
    async with asyncio.timeout(10):
        while len(messages) < 3:
            messages.append(await call.read())
    assert [m.WhichOneof("event") for m in messages] == ["snapshot", "snapshot", "sync"]
    assert {m.snapshot.instance_id for m in messages[:2]} == {"a", "b"}
    later = await _snapshots(call, 8)
    assert server.hub.loop_count == 1
    hits = fixture_server.hits("/metrics")
    call.cancel()
    snapshots = [m.snapshot for m in messages[:2]] + later
    by_id: dict[str, list[int]] = {"a": [], "b": []}
    for snapshot in snapshots:
        assert snapshot.endpoint == url
        by_id[snapshot.instance_id].append(snapshot.timestamp.ToNanoseconds())
    # Both instance ids got every tick, the same ticks...
    assert by_id["a"] == by_id["b"]
    assert len(by_id["a"]) == 5
    # ...from one scrape per tick (plus at most the one in flight): not one per instance id.
    assert 5 <= hits <= 6
    await wait_until(lambda: server.hub.loop_count == 0 and not _collector_tasks(), timeout=5)
