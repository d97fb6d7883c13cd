"""The Watch hub end to end: real HTTP targets on loopback, the real scraper, real encoding.

Intervals are short (0.1-0.2 s) and every wait is bounded with ``asyncio.timeout``. Expected
values come from the targets (their request counters, the intervals asked for), never from the
code under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from fixture_server import FixtureServer
from reference import SEED_SAMPLE, TGI_REAL

from tgi_collector import convert
from tgi_collector.errors import CapacityError, ScrapeErrorKind, TargetDeniedError
from tgi_collector.hub import LOOP_TASK_PREFIX, Event, EventKind, Hub, Subscription
from tgi_collector.policy import DENIED_MESSAGE
from tgi_collector.scraper import Scraper
from tgi_collector.simulator import SimulatorConfig, TgiSimulator
from tgi_collector.snapshot import Snapshot
from tgi_collector.targets import ScrapeOptions, Target
from tgi_collector.v1 import snapshot_pb2

INTERVAL = 0.2
OPTIONS = ScrapeOptions(timeout_seconds=1.0, fetch_info=False, include_raw_metrics=False)
# Slack for timing assertions on a shared 2-core machine.
SLACK = 0.08


def encode(snapshot: Snapshot) -> bytes:
    """The server's encoding: the Snapshot message's wire bytes."""
    return convert.snapshot_to_proto(snapshot).SerializeToString()


def _loop_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(LOOP_TASK_PREFIX)]


@pytest.fixture
async def scraper() -> AsyncIterator[Scraper]:
    async with Scraper() as running:
        yield running


@pytest.fixture
async def hub(scraper: Scraper) -> AsyncIterator[Hub]:
    async with Hub(scraper, encode) as running:
        yield running
    # Whatever the test did, closing the hub leaves no loop and no task behind.
    assert running.loop_count == 0
    assert running.subscriber_count == 0
    assert not running.tasks
    assert not _loop_tasks()


@pytest.fixture
async def simulator() -> AsyncIterator[TgiSimulator]:
    async with TgiSimulator(SimulatorConfig(seed=11)) as running:
        running.advance(30)  # some traffic, so that the body is not empty
        yield running


def _target(url: str, instance_id: str = "tgi-a") -> Target:
    return Target(instance_id=instance_id, url=url)


async def _events(subscription: Subscription, count: int, *, within: float = 5.0) -> list[Event]:
    """The next ``count`` events, failing if they take longer than ``within`` seconds."""
    events = []
    async with asyncio.timeout(within):
        for _ in range(count):
            event = await subscription.next()
            assert event is not None, "the subscription ended"
            events.append(event)
    return events


async def _snapshots(subscription: Subscription, count: int, *, within: float = 5.0) -> list[Event]:
    """The next ``count`` SNAPSHOT events, skipping SYNC and HEARTBEAT."""
    found: list[Event] = []
    async with asyncio.timeout(within):
        while len(found) < count:
            event = await subscription.next()
            assert event is not None, "the subscription ended"
            if event.kind is EventKind.SNAPSHOT:
                found.append(event)
    return found


def _snapshot(event: Event) -> Snapshot:
    assert event.kind is EventKind.SNAPSHOT
    assert event.snapshot is not None
    return event.snapshot


def _stamp(event: Event) -> float:
    return _snapshot(event).timestamp.timestamp()


def _decoded(event: Event) -> snapshot_pb2.Snapshot:
    message = snapshot_pb2.Snapshot()
    message.ParseFromString(event.payload)
    return message


# -- sharing ------------------------------------------------------------------------------------


async def test_three_subscribers_share_one_loop_and_one_scrape_per_interval(
    hub: Hub, simulator: TgiSimulator
) -> None:
    target = _target(simulator.url + "/metrics")
    subscriptions = [
        hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS) for _ in range(3)
    ]
    assert hub.loop_count == 1
    assert hub.subscriber_count == 3
    started = time.monotonic()
    received = await asyncio.gather(*(_snapshots(s, 6) for s in subscriptions))
    elapsed = time.monotonic() - started

    stamps = [[_stamp(e) for e in events] for events in received]
    assert stamps[0] == stamps[1] == stamps[2]  # every subscriber got every tick
    assert len(set(stamps[0])) == 6
    # One loop: the target answered once per tick (plus at most the one in flight now).
    assert 6 <= simulator.scrape_count <= 7
    assert simulator.scrape_count <= elapsed / INTERVAL + 2
    for ticks in zip(*received, strict=True):
        # Encoded once: the very same bytes object went to all three.
        assert ticks[0].payload is ticks[1].payload is ticks[2].payload
        assert _decoded(ticks[0]).instance_id == "tgi-a"
    for subscription in subscriptions:
        subscription.close()


async def test_one_subscription_three_targets_then_exactly_one_sync(
    hub: Hub, fixture_server: FixtureServer
) -> None:
    for path in ("/a", "/b", "/c"):
        fixture_server.route(path, body=TGI_REAL)
    targets = [_target(fixture_server.url(p), p.strip("/")) for p in ("/a", "/b", "/c")]
    async with hub.subscribe(targets, interval_seconds=INTERVAL, options=OPTIONS) as subscription:
        events = await _events(subscription, 4)
        assert [e.kind for e in events] == [EventKind.SNAPSHOT] * 3 + [EventKind.SYNC]
        assert {_snapshot(e).instance_id for e in events[:3]} == {"a", "b", "c"}
        assert all(_snapshot(e).up for e in events[:3])
        later = await _events(subscription, 9)
        assert all(e.kind is EventKind.SNAPSHOT for e in later)
        assert hub.loop_count == 3
    assert hub.loop_count == 0


async def test_duplicate_targets_are_one(hub: Hub, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    target = _target(fixture_server.url("/metrics"))
    subscription = hub.subscribe([target, target], interval_seconds=INTERVAL, options=OPTIONS)
    assert subscription.targets == (target,)
    assert hub.loop_count == 1
    events = await _events(subscription, 2)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC]
    subscription.close()


# -- one URL under several instance ids ---------------------------------------------------------


class _ForgetRecorder(Scraper):
    """A real scraper that records the URLs whose caches the hub told it to drop."""

    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[str] = []

    def forget(self, url: str) -> None:
        self.forgotten.append(url)
        super().forget(url)


async def _advancing(simulator: TgiSimulator) -> None:
    """Move the simulated workload along, so that windows have non-zero rates."""
    while True:
        await asyncio.sleep(0.02)
        simulator.advance(0.5)


async def test_one_url_under_two_instance_ids_is_one_loop_and_one_scrape_per_tick(
    hub: Hub, simulator: TgiSimulator
) -> None:
    url = simulator.url + "/metrics"
    subscriptions = {
        name: hub.subscribe([_target(url, name)], interval_seconds=INTERVAL, options=OPTIONS)
        for name in ("a", "b")
    }
    assert hub.loop_count == 1
    assert len(_loop_tasks()) == 1
    mover = asyncio.create_task(_advancing(simulator))
    try:
        started = time.monotonic()
        got_a, got_b = await asyncio.gather(*(_snapshots(s, 6) for s in subscriptions.values()))
        elapsed = time.monotonic() - started
    finally:
        mover.cancel()
    # One scrape per tick for both instance ids (plus at most the one in flight now): two
    # loops would have scraped twice as often.
    assert 6 <= simulator.scrape_count <= 7
    assert simulator.scrape_count <= elapsed / INTERVAL + 2
    for name, events in (("a", got_a), ("b", got_b)):
        assert all(_snapshot(e).instance_id == name for e in events)
        assert all(_decoded(e).instance_id == name for e in events)
        assert all(_snapshot(e).endpoint == url for e in events)
    for event_a, event_b in zip(got_a, got_b, strict=True):
        a, b = _snapshot(event_a), _snapshot(event_b)
        assert event_a.payload != event_b.payload  # labelled apart...
        # ...but the same tick, the same values.
        assert (a.timestamp, a.up, a.stats, a.view) == (b.timestamp, b.up, b.stats, b.view)
        assert (a.window is None) == (b.window is None)
        if a.window is not None and b.window is not None:
            assert a.window.duration_seconds == b.window.duration_seconds
            for rate in ("success_rate", "request_rate", "generated_tokens_rate"):
                assert getattr(a.window, rate) == getattr(b.window, rate), rate
    assert _snapshot(got_a[0]).window is None
    windows = [_snapshot(e).window for e in got_a[1:]]
    assert any(w is not None and w.request_rate > 0 for w in windows)  # rates were compared
    for subscription in subscriptions.values():
        subscription.close()
    assert hub.loop_count == 0


async def test_one_subscription_naming_a_url_twice_gets_both_and_leaves_both(
    fixture_server: FixtureServer,
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    url = fixture_server.url("/metrics")
    async with _ForgetRecorder() as scraper, Hub(scraper, encode) as hub:
        subscription = hub.subscribe(
            [_target(url, "a"), _target(url, "b")], interval_seconds=0.1, options=OPTIONS
        )
        assert hub.loop_count == 1
        events = await _events(subscription, 3)
        assert [e.kind for e in events] == [EventKind.SNAPSHOT] * 2 + [EventKind.SYNC]
        assert {_snapshot(e).instance_id for e in events[:2]} == {"a", "b"}
        assert _stamp(events[0]) == _stamp(events[1])  # one tick, labelled twice
        later = await _snapshots(subscription, 6)
        ids = [_snapshot(e).instance_id for e in later]
        assert sorted(ids) == ["a"] * 3 + ["b"] * 3
        ticks = {_stamp(e) for e in [*events[:2], *later]}
        assert len(ticks) >= 3  # both targets delivered every tick: ~4 ticks
        assert len(ticks) <= fixture_server.hits("/metrics") <= len(ticks) + 1
        assert scraper.forgotten == []

        await subscription.aclose()  # leaves the loop under both instance ids
        assert hub.loop_count == 0
        assert not hub.tasks
        assert not _loop_tasks()
        assert scraper.forgotten == [url]
        hits = fixture_server.hits("/metrics")
        await asyncio.sleep(0.3)
        assert fixture_server.hits("/metrics") == hits  # really stopped


async def test_leaving_one_instance_id_keeps_the_loop_for_the_other(
    fixture_server: FixtureServer,
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    url = fixture_server.url("/metrics")
    async with _ForgetRecorder() as scraper, Hub(scraper, encode) as hub:
        one = hub.subscribe([_target(url, "a")], interval_seconds=0.1, options=OPTIONS)
        two = hub.subscribe([_target(url, "b")], interval_seconds=0.1, options=OPTIONS)
        assert hub.loop_count == 1
        await asyncio.gather(_snapshots(one, 2), _snapshots(two, 2))
        await one.aclose()
        assert hub.loop_count == 1
        assert len(_loop_tasks()) == 1
        assert scraper.forgotten == []
        hits = fixture_server.hits("/metrics")
        kept = await _snapshots(two, 3)
        assert all(_snapshot(e).instance_id == "b" for e in kept)
        assert fixture_server.hits("/metrics") > hits  # still scraping, for b
        await two.aclose()
        assert hub.loop_count == 0
        assert not _loop_tasks()
        assert scraper.forgotten == [url]


async def test_late_subscriber_under_a_new_instance_id_gets_the_latest_tick_relabelled(
    hub: Hub, simulator: TgiSimulator
) -> None:
    url = simulator.url + "/metrics"
    first = hub.subscribe([_target(url, "a")], interval_seconds=INTERVAL, options=OPTIONS)
    latest = _snapshot((await _snapshots(first, 3))[-1])
    assert latest.window is not None
    scrapes = simulator.scrape_count

    late = hub.subscribe([_target(url, "b")], interval_seconds=INTERVAL, options=OPTIONS)
    assert hub.loop_count == 1
    events = await _events(late, 2)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC]
    got = _snapshot(events[0])
    assert simulator.scrape_count == scrapes  # served from the loop, not a new scrape
    assert got.instance_id == _decoded(events[0]).instance_id == "b"
    assert got.timestamp == latest.timestamp  # at once: the loop's latest tick
    assert got.window is None  # a stream's first snapshot has no rates
    assert not _decoded(events[0]).HasField("window")
    assert got.view == latest.view
    # A second joiner under "b" gets that same relabelled tick, encoded once.
    again = hub.subscribe([_target(url, "b")], interval_seconds=INTERVAL, options=OPTIONS)
    assert (await _events(again, 1))[0].payload is events[0].payload
    # An updates-only joiner under yet another id: nothing at once, then the next tick as "c".
    joined = hub.subscribe(
        [_target(url, "c")], interval_seconds=INTERVAL, options=OPTIONS, updates_only=True
    )
    events = await _events(joined, 2)
    assert events[0].kind is EventKind.SYNC
    assert _stamp(events[1]) > latest.timestamp.timestamp()
    assert _snapshot(events[1]).instance_id == "c"
    # From then on the loop's ticks carry each subscriber's own instance id.
    nxt_a, nxt_b = (await _snapshots(first, 1))[0], (await _snapshots(late, 1))[0]
    assert _stamp(nxt_a) == _stamp(nxt_b)
    assert (_snapshot(nxt_a).instance_id, _snapshot(nxt_b).instance_id) == ("a", "b")
    assert _snapshot(nxt_b).window is not None
    for subscription in (first, late, again, joined):
        subscription.close()


async def test_suppress_unchanged_across_instance_ids(
    hub: Hub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    url = fixture_server.url("/metrics")
    interval = 0.1

    def suppressing(name: str) -> Subscription:
        return hub.subscribe(
            [_target(url, name)],
            interval_seconds=interval,
            options=OPTIONS,
            suppress_unchanged=True,
            heartbeat_seconds=0.3,
        )

    quiet = [EventKind.SNAPSHOT, EventKind.SYNC, EventKind.HEARTBEAT, EventKind.HEARTBEAT]
    a, b = suppressing("a"), suppressing("b")
    # Another subscriber, not suppressing, on the same loop under a third id: every tick.
    every = hub.subscribe([_target(url, "e")], interval_seconds=interval, options=OPTIONS)
    got_a, got_b, got_every = await asyncio.gather(
        _events(a, 4, within=3), _events(b, 4, within=3), _snapshots(every, 5, within=3)
    )
    assert [e.kind for e in got_a] == [e.kind for e in got_b] == quiet
    assert (_snapshot(got_a[0]).instance_id, _snapshot(got_b[0]).instance_id) == ("a", "b")
    assert all(_snapshot(e).instance_id == "e" for e in got_every)
    assert hub.loop_count == 1

    text = TGI_REAL.read_text().replace("tgi_queue_size 0", "tgi_queue_size 7")
    fixture_server.route("/metrics", body=text)
    changed = await asyncio.gather(_snapshots(a, 1, within=2), _snapshots(b, 1, within=2))
    for name, (event,) in zip("ab", changed, strict=True):
        snapshot = _snapshot(event)
        assert snapshot.instance_id == name
        assert snapshot.view is not None
        assert snapshot.view.request.queue_size == 7
    assert _stamp(changed[0][0]) == _stamp(changed[1][0])
    for subscription in (a, b):
        assert (await _events(subscription, 1))[0].kind is EventKind.HEARTBEAT

    # A suppressing joiner under a new id: the state at once (relabelled), then silence.
    c = suppressing("c")
    events = await _events(c, 3, within=2)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC, EventKind.HEARTBEAT]
    assert _snapshot(events[0]).instance_id == "c"
    view = _snapshot(events[0]).view
    assert view is not None
    assert view.request.queue_size == 7
    for subscription in (a, b, c, every):
        subscription.close()


# -- schedule and windows -----------------------------------------------------------------------


async def test_first_snapshot_has_no_window_later_ones_are_scheduled_ticks(
    hub: Hub, simulator: TgiSimulator
) -> None:
    target = _target(simulator.url + "/metrics")
    subscription = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS)
    events = await _snapshots(subscription, 5)
    snapshots = [_snapshot(e) for e in events]
    assert snapshots[0].window is None
    assert not _decoded(events[0]).HasField("window")
    assert all(s.window is not None for s in snapshots[1:])
    assert all(_decoded(e).HasField("window") for e in events[1:])
    assert all(s.up and s.exposition is None for s in snapshots)  # raw metrics not asked for

    stamps = [s.timestamp.timestamp() for s in snapshots]
    # The immediate first scrape is off the schedule, at least half an interval before the next
    # tick, which is the first one after both that half interval and the scrape's end (a slow
    # first scrape, connection included, skips the ticks it overran).
    first_scrape = snapshots[0].stats.duration_seconds
    assert stamps[1] - stamps[0] >= INTERVAL / 2
    assert stamps[1] - stamps[0] <= max(INTERVAL / 2, first_scrape) + INTERVAL + SLACK
    for before, after in itertools.pairwise(stamps[1:]):
        assert after - before == pytest.approx(INTERVAL, abs=0.002)
    # Windows run from tick to tick, exactly: the scheduled times, not the scrape latencies.
    for snapshot in snapshots[2:]:
        assert snapshot.window is not None
        assert snapshot.window.duration_seconds == pytest.approx(INTERVAL, abs=1e-9)
    subscription.close()


async def test_late_subscriber_gets_latest_tick_at_once_without_window_and_no_scrape(
    hub: Hub, simulator: TgiSimulator
) -> None:
    target = _target(simulator.url + "/metrics")
    first = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS)
    early = await _snapshots(first, 3)
    latest = _snapshot(early[-1])
    assert latest.window is not None
    scrapes = simulator.scrape_count

    late = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS)
    events = await _events(late, 2)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC]
    got = _snapshot(events[0])
    assert simulator.scrape_count == scrapes  # served from the loop, not a new scrape
    # At once: the tick the loop already had, not the next one (which is up to one interval on).
    assert got.timestamp == latest.timestamp
    assert got.window is None  # a stream's first snapshot has no rates
    assert got.view == latest.view
    # Its next snapshot is the loop's next tick, the shared bytes, with a window.
    nxt, shared = (await _snapshots(late, 1))[0], (await _snapshots(first, 1))[0]
    assert nxt.payload is shared.payload
    assert _snapshot(nxt).window is not None
    first.close()
    late.close()


async def test_raw_metrics_are_kept_only_when_asked(hub: Hub, simulator: TgiSimulator) -> None:
    target = _target(simulator.url + "/metrics")
    raw = dataclasses.replace(OPTIONS, include_raw_metrics=True)
    with_raw = hub.subscribe([target], interval_seconds=INTERVAL, options=raw)
    without = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS)
    assert hub.loop_count == 2  # different options: different loops
    raw_events, bare_events = await asyncio.gather(_snapshots(with_raw, 2), _snapshots(without, 2))
    assert all(_snapshot(e).exposition is not None for e in raw_events)
    assert all(len(_decoded(e).raw_metrics) > 0 for e in raw_events)
    assert all(_snapshot(e).exposition is None for e in bare_events)
    assert all(len(_decoded(e).raw_metrics) == 0 for e in bare_events)
    # The loop scrapes the exposition anyway: windows need it.
    assert _snapshot(bare_events[1]).window is not None
    with_raw.close()
    without.close()


# -- subscription options -----------------------------------------------------------------------


async def test_updates_only_skips_the_initial_snapshot(hub: Hub, simulator: TgiSimulator) -> None:
    target = _target(simulator.url + "/metrics")
    full = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS)
    updates = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS, updates_only=True)
    # No initial state to wait for: SYNC comes first, at once (gNMI updates_only).
    async with asyncio.timeout(0.05):
        sync = await updates.next()
    assert sync is not None
    assert sync.kind is EventKind.SYNC
    initial = _stamp((await _snapshots(full, 1))[0])
    update = (await _snapshots(updates, 1))[0]
    assert _stamp(update) > initial  # the new loop's immediate scrape was skipped
    assert _snapshot(update).window is None  # still this stream's first snapshot of the target

    # Joining a running loop: nothing at once; the next tick.
    latest = _stamp((await _snapshots(full, 1))[0])
    joined = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS, updates_only=True)
    events = await _events(joined, 2)
    assert events[0].kind is EventKind.SYNC
    assert _stamp(events[1]) > latest
    for subscription in (full, updates, joined):
        subscription.close()


async def test_suppress_unchanged_sends_nothing_but_heartbeats_for_a_fixed_body(
    hub: Hub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    target = _target(fixture_server.url("/metrics"))
    interval = 0.1
    subscription = hub.subscribe(
        [target],
        interval_seconds=interval,
        options=OPTIONS,
        suppress_unchanged=True,
        heartbeat_seconds=0.3,
    )
    events = await _events(subscription, 5, within=3)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC] + [
        EventKind.HEARTBEAT
    ] * 3
    assert fixture_server.hits("/metrics") >= 5  # it kept scraping all along
    assert all(e.coalesced == 0 for e in events)  # suppressed is not coalesced

    text = TGI_REAL.read_text()
    # A gauge moves: one snapshot, then silence again.
    text = text.replace("tgi_queue_size 0", "tgi_queue_size 7")
    fixture_server.route("/metrics", body=text)
    changed = _snapshot((await _snapshots(subscription, 1, within=2))[0])
    assert changed.view is not None
    assert changed.view.request.queue_size == 7
    assert (await _events(subscription, 1))[0].kind is EventKind.HEARTBEAT

    # A counter moves: the tick with the increase, then the one whose rates fell back to zero
    # (same view, but a control plane must see the rate drop), then silence.
    text = text.replace("tgi_request_success 109", "tgi_request_success 120")
    fixture_server.route("/metrics", body=text)
    burst, idle = (_snapshot(e) for e in await _snapshots(subscription, 2, within=2))
    assert burst.window is not None
    assert burst.window.success_rate == pytest.approx(11 / interval)
    assert idle.window is not None
    assert idle.window.success_rate == 0
    assert idle.view == burst.view
    assert (await _events(subscription, 1))[0].kind is EventKind.HEARTBEAT

    # A suppressing subscriber joining the running loop, now without another suppressing one
    # (the loop tracks content only while someone suppresses): the state at once, then silence.
    keeper = hub.subscribe([target], interval_seconds=interval, options=OPTIONS)
    subscription.close()
    await _snapshots(keeper, 2)  # the latest tick, then one made while nobody suppressed
    late = hub.subscribe(
        [target],
        interval_seconds=interval,
        options=OPTIONS,
        suppress_unchanged=True,
        heartbeat_seconds=0.3,
    )
    events = await _events(late, 3, within=2)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC, EventKind.HEARTBEAT]
    first = _snapshot(events[0])
    assert first.window is None
    assert first.view == idle.view
    keeper.close()
    late.close()


async def test_heartbeat_on_silence(hub: Hub, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    subscription = hub.subscribe(
        [_target(fixture_server.url("/metrics"))],
        interval_seconds=30.0,
        options=OPTIONS,
        heartbeat_seconds=0.15,
    )
    events = await _events(subscription, 2)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC]
    quiet = time.monotonic()
    beats = []
    for _ in range(3):
        event = (await _events(subscription, 1))[0]
        assert event.kind is EventKind.HEARTBEAT
        assert event.payload == b""
        beats.append(time.monotonic() - quiet)
    for number, at in enumerate(beats, start=1):
        # Never early; late only by scheduling delays (generous: the machine may be busy).
        assert 0.15 * number - 0.02 <= at <= 0.15 * number + 0.5
    subscription.close()


# -- backpressure -------------------------------------------------------------------------------


async def test_stuck_subscriber_is_coalesced_and_does_not_delay_others(
    hub: Hub, fixture_server: FixtureServer
) -> None:
    # A small body: the lag measured is the hub's delivery, not the parse of a large scrape.
    fixture_server.route("/a", body=SEED_SAMPLE)
    fixture_server.route("/b", body=SEED_SAMPLE)
    interval = INTERVAL
    a = _target(fixture_server.url("/a"), "a")
    b = _target(fixture_server.url("/b"), "b")
    stuck = hub.subscribe([a, b], interval_seconds=interval, options=OPTIONS)
    # One reader per target, on the same loops as the stuck subscriber.
    readers = {t: hub.subscribe([t], interval_seconds=interval, options=OPTIONS) for t in (a, b)}
    lags: list[float] = []
    stamps: dict[str, list[datetime]] = {"a": [], "b": []}
    coalesced = 0

    async def read(subscription: Subscription) -> None:
        nonlocal coalesced
        while (event := await subscription.next()) is not None:
            coalesced += event.coalesced
            if event.kind is EventKind.SNAPSHOT:
                # A loop's immediate first scrape also opens the connection: its lag says
                # nothing about delivery, so only scheduled ticks are measured.
                if stamps[_snapshot(event).instance_id]:
                    lags.append(time.time() - _stamp(event))
                stamps[_snapshot(event).instance_id].append(_snapshot(event).timestamp)

    tasks = [asyncio.create_task(read(s)) for s in readers.values()]
    await asyncio.sleep(10 * interval)
    # Memory per subscriber is bounded by its targets: one undelivered snapshot each.
    assert stuck.pending == 2
    events = await _events(stuck, 3)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SNAPSHOT, EventKind.SYNC]
    await asyncio.sleep(0.02)  # let the readers take anything still in flight
    # Every tick of a target before the one it got was dropped for it, and counted.
    dropped = 0
    for event in events[:2]:
        got = _snapshot(event)
        assert got.timestamp in stamps[got.instance_id]  # the latest tick, not an old one
        dropped += sum(1 for stamp in stamps[got.instance_id] if stamp < got.timestamp)
    assert dropped >= 10  # about 2 targets x 9 ticks, fewer if a scrape overran
    assert events[0].coalesced + events[1].coalesced == dropped
    assert events[2].coalesced == 0
    # The readers got every tick on time: before the next tick (the lag includes the scrape).
    assert coalesced == 0
    assert max(lags) < interval
    assert sorted(lags)[len(lags) // 2] < interval / 2
    for ticks in stamps.values():
        # On schedule: whole intervals apart (more than one only if a scrape overran).
        for x, y in itertools.pairwise(ticks[1:]):
            gap = (y - x).total_seconds() / interval
            assert gap == pytest.approx(round(gap), abs=0.01)
            assert round(gap) >= 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stuck.close()
    for subscription in readers.values():
        subscription.close()


# -- failures -----------------------------------------------------------------------------------


async def test_target_down_then_back_stays_on_the_stream(
    hub: Hub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    target = _target(fixture_server.url("/metrics"))
    subscription = hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS)
    up = await _snapshots(subscription, 2)
    assert all(_snapshot(e).up for e in up)

    fixture_server.route("/metrics", status=500, body=b"boom")
    down: list[Snapshot] = []
    async with asyncio.timeout(3):
        while len(down) < 2:
            snapshot = _snapshot((await _snapshots(subscription, 1))[0])
            if not snapshot.up:
                down.append(snapshot)
    for snapshot in down:
        assert snapshot.error is not None
        assert snapshot.error.kind is ScrapeErrorKind.HTTP_STATUS
        assert snapshot.error.http_status == 500
        assert snapshot.window is None

    fixture_server.route("/metrics", body=TGI_REAL)
    async with asyncio.timeout(3):
        while not (back := _snapshot((await _snapshots(subscription, 1))[0])).up:
            pass
    # The window after the outage spans it: from the last up tick, across the down ones.
    assert back.window is not None
    assert back.window.duration_seconds >= 3 * INTERVAL - 1e-9
    assert back.window.request_rate == 0  # same counters as before the outage
    subscription.close()


async def test_unreachable_target_reports_down_and_syncs(hub: Hub, unused_port: int) -> None:
    target = _target(f"http://127.0.0.1:{unused_port}/metrics")
    subscription = hub.subscribe([target], interval_seconds=0.1, options=OPTIONS)
    events = await _events(subscription, 4)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC] + [
        EventKind.SNAPSHOT
    ] * 2
    for event in (events[0], *events[2:]):
        snapshot = _snapshot(event)
        assert not snapshot.up
        assert snapshot.error is not None
        assert snapshot.error.kind is ScrapeErrorKind.CONNECT
        assert _decoded(event).health == snapshot_pb2.HEALTH_DOWN
    subscription.close()


async def test_encode_failure_costs_one_tick_not_the_loop(
    scraper: Scraper, fixture_server: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    encoded: list[datetime] = []

    def flaky(snapshot: Snapshot) -> bytes:
        encoded.append(snapshot.timestamp)
        if len(encoded) == 3:
            raise RuntimeError("encoder bug")
        return encode(snapshot)

    with caplog.at_level(logging.ERROR, logger="tgi_collector.hub"):
        async with Hub(scraper, flaky) as hub:
            subscription = hub.subscribe(
                [_target(fixture_server.url("/metrics"))], interval_seconds=0.1, options=OPTIONS
            )
            events = await _snapshots(subscription, 5)
    delivered = [_snapshot(e).timestamp for e in events]
    failed = encoded[2]
    assert failed not in delivered  # that tick is lost for everyone...
    assert delivered[:2] == encoded[:2]
    assert len([stamp for stamp in delivered if stamp > failed]) == 3  # ...and the loop went on
    assert "encoder bug" in caplog.text
    assert not _loop_tasks()


async def test_first_payload_encode_failure_waits_for_the_next_tick(
    scraper: Scraper, fixture_server: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    failing = False

    def flaky(snapshot: Snapshot) -> bytes:
        if failing and snapshot.window is None:
            raise RuntimeError("first payload bug")
        return encode(snapshot)

    with caplog.at_level(logging.ERROR, logger="tgi_collector.hub"):
        async with Hub(scraper, flaky) as hub:
            target = _target(fixture_server.url("/metrics"))
            running = hub.subscribe([target], interval_seconds=0.1, options=OPTIONS)
            latest = _snapshot((await _snapshots(running, 3))[-1])
            assert latest.window is not None
            failing = True
            late = hub.subscribe([target], interval_seconds=0.1, options=OPTIONS)
            async with asyncio.timeout(1):
                waiting = asyncio.create_task(late.next())
                await asyncio.sleep(0)  # next() tried the latest tick's first payload: failed
                failing = False
                event = await waiting
            assert event is not None
            got = _snapshot(event)
            assert got.window is None
            assert got.timestamp > latest.timestamp  # the tick after the failed one
            assert (await _events(late, 1))[0].kind is EventKind.SYNC
    assert "first payload bug" in caplog.text


async def test_scrape_exception_costs_one_tick_not_the_loop(
    fixture_server: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)

    class Flaky(Scraper):
        calls = 0

        async def scrape(
            self, target: Target, options: ScrapeOptions, *, keep_caches: bool = False
        ) -> Snapshot:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("scraper bug")
            return await super().scrape(target, options)

    with caplog.at_level(logging.ERROR, logger="tgi_collector.hub"):
        async with Flaky() as scraper, Hub(scraper, encode) as hub:
            subscription = hub.subscribe(
                [_target(fixture_server.url("/metrics"))], interval_seconds=0.1, options=OPTIONS
            )
            events = await _snapshots(subscription, 4)
            assert scraper.calls >= 5
    assert all(_snapshot(e).up for e in events)
    assert "scraper bug" in caplog.text


async def test_target_refused_later_by_policy_reports_down(
    fixture_server: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Refusing(Scraper):
        async def scrape(
            self, target: Target, options: ScrapeOptions, *, keep_caches: bool = False
        ) -> Snapshot:
            raise TargetDeniedError(DENIED_MESSAGE)

    with caplog.at_level(logging.WARNING, logger="tgi_collector.hub"):
        async with Refusing() as scraper, Hub(scraper, encode) as hub:
            subscription = hub.subscribe(
                [_target(fixture_server.url("/metrics"))], interval_seconds=0.1, options=OPTIONS
            )
            events = await _events(subscription, 3)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.SYNC, EventKind.SNAPSHOT]
    for event in (events[0], events[2]):
        snapshot = _snapshot(event)
        assert not snapshot.up
        assert snapshot.error is not None
        assert snapshot.error.kind is ScrapeErrorKind.DENIED
        assert snapshot.error.message == DENIED_MESSAGE
        wire = snapshot_pb2.Snapshot.FromString(encode(snapshot))
        assert wire.error.kind == snapshot_pb2.ERROR_KIND_DENIED
    assert caplog.text.count("refused by the scrape policy") == 1  # once per episode
    assert fixture_server.hits("/metrics") == 0


# -- caps and lifecycle -------------------------------------------------------------------------


async def test_caps_raise_capacity_error(scraper: Scraper, unused_port: int) -> None:
    targets = [_target(f"http://127.0.0.1:{unused_port}/m{i}") for i in range(3)]
    async with Hub(scraper, encode, max_subscribers=2, max_targets_per_subscription=2) as hub:
        with pytest.raises(CapacityError, match="at most 2 targets"):
            hub.subscribe(targets, interval_seconds=1.0, options=OPTIONS)
        first = hub.subscribe(targets[:2], interval_seconds=1.0, options=OPTIONS)
        hub.subscribe(targets[:1], interval_seconds=1.0, options=OPTIONS)
        with pytest.raises(CapacityError, match="2 subscribers"):
            hub.subscribe(targets[:1], interval_seconds=1.0, options=OPTIONS)
        assert hub.subscriber_count == 2
        first.close()
        first.close()  # idempotent
        assert hub.subscriber_count == 1
        hub.subscribe(targets[:1], interval_seconds=1.0, options=OPTIONS)  # room again
        with pytest.raises(ValueError, match="interval"):
            hub.subscribe(targets[:1], interval_seconds=0.0, options=OPTIONS)


async def test_last_subscriber_leaving_stops_the_loop(
    hub: Hub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    target = _target(fixture_server.url("/metrics"))
    one = hub.subscribe([target], interval_seconds=0.1, options=OPTIONS)
    two = hub.subscribe([target], interval_seconds=0.1, options=OPTIONS)
    await _snapshots(one, 2)
    assert len(_loop_tasks()) == 1
    one.close()
    assert hub.loop_count == 1  # two still watches
    assert await one.next() is None
    assert [e.kind for e in await _events(two, 2)] == [EventKind.SNAPSHOT, EventKind.SYNC]

    waiting = asyncio.create_task(two.next())
    await asyncio.sleep(0.01)
    two.close()  # what the server does when the call is cancelled: synchronous
    async with asyncio.timeout(1):
        assert await waiting is None
    assert hub.loop_count == 0
    assert hub.subscriber_count == 0
    stopping = hub.tasks
    assert all(task.cancelling() for task in stopping)  # cancelled, not yet unwound
    if stopping:
        async with asyncio.timeout(1):
            await asyncio.wait(stopping)
    assert not hub.tasks
    assert not _loop_tasks()
    hits = fixture_server.hits("/metrics")
    await asyncio.sleep(0.3)
    assert fixture_server.hits("/metrics") == hits  # really stopped

    # async with waits for the loop it stopped.
    async with hub.subscribe([target], interval_seconds=0.1, options=OPTIONS) as three:
        await _snapshots(three, 1)
        assert hub.loop_count == 1
    assert not hub.tasks
    assert not _loop_tasks()


async def test_aclose_drains_every_subscription(
    scraper: Scraper, fixture_server: FixtureServer, unused_port: int
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    hub = Hub(scraper, encode)
    up = hub.subscribe(
        [_target(fixture_server.url("/metrics"))], interval_seconds=0.1, options=OPTIONS
    )
    hanging = hub.subscribe(
        [_target(fixture_server.url("/hang"))],
        interval_seconds=5.0,
        options=dataclasses.replace(OPTIONS, timeout_seconds=5.0),
    )
    fixture_server.route("/hang", behaviour="hang", duration=10)
    await _snapshots(up, 2)
    waiters = [asyncio.create_task(s.next()) for s in (up, hanging)]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    async with asyncio.timeout(2):
        await hub.aclose()  # the hanging scrape is cancelled, not waited for
    assert time.monotonic() - started < 0.5
    async with asyncio.timeout(1):
        results = await asyncio.gather(*waiters)
    # next() may have got the snapshot already pending; after that, the clean end.
    assert results[1] is None
    assert await up.next() is None
    assert up.closed and hanging.closed
    assert hub.subscriber_count == hub.loop_count == 0
    assert not hub.tasks
    assert not _loop_tasks()
    late = hub.subscribe(
        [_target(f"http://127.0.0.1:{unused_port}/")], interval_seconds=1.0, options=OPTIONS
    )
    assert await late.next() is None  # a closed hub ends new subscriptions at once
    assert not _loop_tasks()


async def test_thousand_subscribers_on_one_target(hub: Hub, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    target = _target(fixture_server.url("/metrics"))
    subscriptions = [
        hub.subscribe([target], interval_seconds=INTERVAL, options=OPTIONS) for _ in range(1000)
    ]
    assert hub.loop_count == 1
    received = await asyncio.gather(*(_snapshots(s, 3) for s in subscriptions))
    payloads = {id(events[2].payload) for events in received}
    assert len(payloads) == 1  # one encoding for a thousand subscribers
    assert fixture_server.hits("/metrics") <= 4
    for subscription in subscriptions:
        subscription.close()
    assert hub.loop_count == 0


def test_event_defaults() -> None:
    event = Event(EventKind.HEARTBEAT)
    assert (event.payload, event.coalesced, event.snapshot) == (b"", 0, None)
