"""Watch's engine: one scrape loop per (target, interval, options), fanned out to subscribers.

Pure asyncio domain code (no gRPC, no protobuf): the server injects ``encode`` and turns events
into ``WatchResponse`` messages. The semantics are DESIGN.md's "Watch semantics" (from gNMI
Subscribe STREAM/SAMPLE and the Kubernetes watch API):

- **Shared loops.** Subscribers of the same :class:`LoopKey` share one loop, started by the
  first and cancelled when the last leaves, so a target's HTTP server sees one scrape per
  interval however many subscribers watch it. A loop is sequential: scrapes of one target never
  overlap, and ticks missed by an overrunning scrape are skipped, not caught up.
- **Schedule.** The first scrape runs at once; later ticks fall at ``phase + k * interval`` on
  the monotonic clock, with a stable per-target ``phase`` spreading loops over the interval (as
  Prometheus does). A scheduled tick closer than half an interval to the immediate first scrape
  is skipped: a window of a few milliseconds would give meaningless rates. Each snapshot is
  stamped with its scheduled tick (wall clock, UTC), so windows are exact multiples of the
  interval and timestamps do not jitter with scrape latency.
- **Windows.** A loop keeps its previous *up* exposition; an up snapshot gets the window since
  it. Down snapshots get none and do not move that baseline, so the window after an outage spans
  it (the counter reset rule copes with a target that restarted meanwhile).
- **Encoded once.** Each tick is encoded once and the same bytes go to every subscriber; a
  subscriber's first snapshot of a target is the tick without its window, encoded lazily, once.
- **Failures are data.** A down target produces down snapshots (so does one the scrape policy
  refuses after subscription, e.g. its name now resolves elsewhere: ``CONNECT``, with the
  policy's generic message). An exception while scraping, windowing or encoding is logged and
  costs that tick only; the loop carries on.
- **Backpressure.** A loop never waits for a subscriber; see :mod:`tgi_collector._subscription`.

Every loop task is named ``tgi-collector-loop:<url>`` (:data:`LOOP_TASK_PREFIX`), and
:attr:`Hub.tasks` lists the live ones, so tests and shutdown can check that none is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from tgi_collector._subscription import Event, EventKind, Subscription, _Tick
from tgi_collector.errors import CapacityError, ScrapeErrorKind, TargetDeniedError
from tgi_collector.metrics import Exposition
from tgi_collector.policy import DENIED_MESSAGE
from tgi_collector.scraper import Scraper
from tgi_collector.snapshot import ScrapeFailure, ScrapeStats, Snapshot
from tgi_collector.targets import ScrapeOptions, Target
from tgi_collector.tgi import TgiView
from tgi_collector.window import Window, compute_window

__all__ = [
    "DEFAULT_MAX_SUBSCRIBERS",
    "DEFAULT_MAX_TARGETS_PER_SUBSCRIPTION",
    "LOOP_TASK_PREFIX",
    "Event",
    "EventKind",
    "Hub",
    "LoopKey",
    "Subscription",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SUBSCRIBERS = 10_000
DEFAULT_MAX_TARGETS_PER_SUBSCRIPTION = 1_000
LOOP_TASK_PREFIX = "tgi-collector-loop:"

# Stands for "content not known" in a loop; equal to nothing, so the next tick counts as changed.
_UNKNOWN: object = object()


@dataclass(frozen=True, slots=True)
class LoopKey:
    """What makes two subscriptions share a scrape loop: same target, interval and options."""

    target: Target
    interval_seconds: float
    options: ScrapeOptions


def _phase(key: LoopKey) -> float:
    """A stable offset in ``[0, interval)``: loops of many targets spread over the interval.

    crc32 rather than ``hash()``: the phase must not change between processes (string hashing
    is randomized per process), so a restarted collector scrapes on the same schedule.
    """
    digest = zlib.crc32(f"{key.target.url}|{key.interval_seconds!r}".encode())
    return digest / 2**32 * key.interval_seconds


def _next_tick(after: float, phase: float, interval: float) -> float:
    """The first scheduled time ``phase + k * interval`` strictly after ``after``."""
    tick = phase + (math.floor((after - phase) / interval) + 1) * interval
    while tick <= after:  # float rounding near a tick boundary
        tick += interval
    return tick


def _activity(window: Window | None) -> object:
    """The part of a window ``suppress_unchanged`` compares; None when nothing happened.

    An idle window (zero rates, no observations, no reset) says what no window says, so a
    target's first snapshot and its idle successors compare equal. The duration never counts.
    """
    if window is None:
        return None
    rates = (
        window.success_rate,
        window.failure_rate,
        window.request_rate,
        window.generated_tokens_rate,
        window.input_tokens_rate,
    )
    by_err = frozenset((err, rate) for err, rate in window.failure_rate_by_err.items() if rate)
    observed = frozenset(summary for summary in window.histograms if summary.count)
    if not any(rates) and not by_err and not observed and not window.counter_reset:
        return None
    return rates, by_err, observed, window.counter_reset


def _content_key(snapshot: Snapshot) -> object:
    """What ``suppress_unchanged`` compares: health, error, model, view and window activity.

    Not compared: timestamp, scrape stats, raw families (their order shuffles between TGI
    scrapes, and every TGI family is in the view). Histogram summaries are compared as sets for
    the same reason. Window activity is included so that a subscriber sees rates drop to zero
    when a target goes idle. NaN never equals itself, so content with a NaN always counts as
    changed: a redundant snapshot, never a lost one.
    """
    view = snapshot.view
    return (
        snapshot.up,
        snapshot.error,
        snapshot.model,
        None
        if view is None
        else (view.request, view.generation, view.batch, frozenset(view.histograms)),
        _activity(snapshot.window),
    )


class _Loop:
    """The scrape loop of one :class:`LoopKey` and the subscribers it feeds."""

    def __init__(
        self,
        key: LoopKey,
        scraper: Scraper,
        encode: Callable[[Snapshot], bytes],
        coalesced: Callable[[int], None],
    ) -> None:
        self.key = key
        self._coalesced = coalesced  # told how many undelivered ticks a new tick replaced
        self.subscribers: dict[Subscription, None] = {}  # an insertion-ordered set
        self.latest: _Tick | None = None
        self.task: asyncio.Task[None] | None = None
        self._scraper = scraper
        self._encode = encode
        # Windows need the exposition whatever the subscribers asked for; it is dropped
        # before encoding unless they want raw metrics.
        self._scrape_options = dataclasses.replace(key.options, include_raw_metrics=True)
        self._phase = _phase(key)
        # The last up exposition, its view and its tick: the start of the next window.
        self._previous: tuple[Exposition, TgiView | None, float] | None = None
        self._suppressing = 0  # subscribers with suppress_unchanged
        self._content: object = _UNKNOWN
        self._version = 0
        self._denied = False

    def join(self, subscription: Subscription) -> None:
        """Add a subscriber; it gets the latest tick at once unless it wants updates only."""
        self.subscribers[subscription] = None
        if subscription.suppress_unchanged:
            if self._suppressing == 0 and self.latest is not None:
                # Content is tracked only while someone suppresses; start from the latest tick.
                self._content = _content_key(self.latest.snapshot)
            self._suppressing += 1
        if self.latest is not None and not subscription.updates_only:
            subscription._offer(self.key.target, self.latest)

    def leave(self, subscription: Subscription) -> None:
        """Remove a subscriber (the hub stops the loop when none is left)."""
        if subscription not in self.subscribers:
            return
        del self.subscribers[subscription]
        if subscription.suppress_unchanged:
            self._suppressing -= 1

    async def run(self) -> None:
        """Scrape now, then on every scheduled tick, until cancelled."""
        clock = asyncio.get_running_loop()
        interval = self.key.interval_seconds
        tick = clock.time()
        initial = True
        while True:
            await self._tick(tick, initial=initial)
            earliest = tick + interval / 2 if initial else tick
            # max(): a scrape that overran skips the ticks it missed instead of bunching up.
            tick = _next_tick(max(earliest, clock.time()), self._phase, interval)
            initial = False
            await asyncio.sleep(tick - clock.time())

    async def _tick(self, tick: float, *, initial: bool) -> None:
        """One iteration: scrape, then publish. Any exception costs this tick, not the loop."""
        target = self.key.target
        try:
            snapshot = await self._scraper.scrape(target, self._scrape_options, keep_caches=True)
        except TargetDeniedError:
            # The server checked the target at subscribe time: its address changed since. A
            # stream must not go silent about a target, so it reports it down, with its own
            # error kind and the policy's generic message.
            if not self._denied:
                logger.warning("%s is now refused by the scrape policy", target.url)
            self._denied = True
            snapshot = Snapshot(
                instance_id=target.instance_id or target.url,
                endpoint=target.url,
                timestamp=datetime.now(UTC),
                up=False,
                stats=ScrapeStats(0.0, 0, 0),
                error=ScrapeFailure(ScrapeErrorKind.DENIED, DENIED_MESSAGE),
            )
        except Exception:
            logger.exception("scraping %s failed unexpectedly", target.url)
            return
        else:
            self._denied = False
        try:
            self._publish(snapshot, tick, initial=initial)
        except Exception:
            logger.exception("publishing a snapshot of %s failed", target.url)

    def _publish(self, snapshot: Snapshot, tick: float, *, initial: bool) -> None:
        """Stamp, window, encode once, and hand the tick to every subscriber."""
        clock = asyncio.get_running_loop()
        # The wall time of the scheduled tick; read now so that wall clock steps show.
        stamp = datetime.fromtimestamp(time.time() - (clock.time() - tick), UTC)
        exposition = snapshot.exposition
        window = None
        if snapshot.up and exposition is not None:
            if self._previous is not None:
                before, before_view, before_tick = self._previous
                window = compute_window(
                    before,
                    exposition,
                    tick - before_tick,
                    previous_view=before_view,
                    current_view=snapshot.view,
                )
            self._previous = (exposition, snapshot.view, tick)
        outgoing = dataclasses.replace(
            snapshot,
            timestamp=stamp,
            window=window,
            exposition=exposition if self.key.options.include_raw_metrics else None,
        )
        payload = self._encode(outgoing)
        latest = _Tick(
            outgoing,
            payload,
            self._encode,
            initial=initial,
            version=self._content_version(outgoing),
        )
        self.latest = latest
        target = self.key.target
        replaced = 0
        for subscription in self.subscribers:
            replaced += subscription._offer(target, latest)
        if replaced:
            self._coalesced(replaced)

    def _content_version(self, snapshot: Snapshot) -> int:
        """A number that changes exactly when the content changes (see :func:`_content_key`).

        Computed once per tick, and only while some subscriber suppresses unchanged snapshots,
        so that each subscriber compares two integers.
        """
        if self._suppressing:
            content = _content_key(snapshot)
            if content == self._content:
                return self._version
            self._content = content
        else:
            self._content = _UNKNOWN
        self._version += 1
        return self._version


class Hub:
    """The shared scrape loops of a collector and their subscribers.

    ``encode`` turns a snapshot into the bytes subscribers send (the server passes the protobuf
    serialization). ``max_subscribers`` caps open subscriptions and
    ``max_targets_per_subscription`` the targets one may name (duplicates counted, as sent);
    :meth:`subscribe` raises :class:`~tgi_collector.errors.CapacityError` over either.
    The scraper is used, not owned: close it after :meth:`aclose`.
    """

    def __init__(
        self,
        scraper: Scraper,
        encode: Callable[[Snapshot], bytes],
        *,
        max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS,
        max_targets_per_subscription: int = DEFAULT_MAX_TARGETS_PER_SUBSCRIPTION,
    ) -> None:
        if max_subscribers < 1 or max_targets_per_subscription < 1:
            raise ValueError("max_subscribers and max_targets_per_subscription must be >= 1")
        self._scraper = scraper
        self._encode = encode
        self._max_subscribers = max_subscribers
        self._max_targets = max_targets_per_subscription
        self._loops: dict[LoopKey, _Loop] = {}
        self._subscriptions: dict[Subscription, tuple[_Loop, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._coalesced_total = 0

    @property
    def coalesced_total(self) -> int:
        """Snapshots subscribers never got because a newer one replaced them, ever."""
        return self._coalesced_total

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions."""
        return len(self._subscriptions)

    @property
    def loop_count(self) -> int:
        """Running scrape loops (one per distinct :class:`LoopKey` with subscribers)."""
        return len(self._loops)

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """Loop tasks not finished yet, including cancelled ones still unwinding."""
        return frozenset(self._tasks)

    def subscribe(
        self,
        targets: Sequence[Target],
        *,
        interval_seconds: float,
        options: ScrapeOptions,
        updates_only: bool = False,
        suppress_unchanged: bool = False,
        heartbeat_seconds: float | None = None,
    ) -> Subscription:
        """Subscribe to ``targets`` (deduplicated), joining or starting one loop per target.

        Must be called from the event loop. Raises :class:`~tgi_collector.errors.CapacityError`
        over the caps, ValueError for arguments the server should have validated. On a closed
        hub the subscription is returned already ended (``next()`` is None): a draining
        server's clean end, after which a client resubscribes elsewhere.
        """
        if not targets:
            raise ValueError("targets must not be empty")
        if not 0 < interval_seconds < math.inf:
            raise ValueError("interval_seconds must be positive and finite")
        if heartbeat_seconds is not None and not 0 < heartbeat_seconds < math.inf:
            raise ValueError("heartbeat_seconds must be positive and finite, or None")
        if len(targets) > self._max_targets:
            raise CapacityError(f"a subscription may name at most {self._max_targets} targets")
        if len(self._subscriptions) >= self._max_subscribers:
            raise CapacityError(f"the collector already serves {self._max_subscribers} subscribers")
        subscription = Subscription(
            tuple(dict.fromkeys(targets)),
            updates_only=updates_only,
            suppress_unchanged=suppress_unchanged,
            heartbeat_seconds=heartbeat_seconds,
            release=self._release,
        )
        if self._closed:
            subscription.close()
            return subscription
        loops = []
        for target in subscription.targets:
            key = LoopKey(target, interval_seconds, options)
            loop = self._loops.get(key)
            if loop is None:
                loop = self._loops[key] = self._start(key)
            loops.append(loop)
        self._subscriptions[subscription] = tuple(loops)
        for loop in loops:
            loop.join(subscription)
        return subscription

    async def aclose(self) -> None:
        """Drain: end every subscription (``next()`` returns None), then stop every loop.

        Returns once every loop task has finished. Later subscriptions end at once.
        """
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _start(self, key: LoopKey) -> _Loop:
        loop = _Loop(key, self._scraper, self._encode, self._count_coalesced)
        task = asyncio.get_running_loop().create_task(
            loop.run(), name=f"{LOOP_TASK_PREFIX}{key.target.url}"
        )
        loop.task = task
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, loop))
        return loop

    def _count_coalesced(self, count: int) -> None:
        self._coalesced_total += count

    def _task_done(self, loop: _Loop, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # The ended task's exception (cancellation included) holds the loop's frames, which
        # hold the loop, which held the task: break that cycle so that reference counting
        # frees the loop and its last exposition now, not the next full GC.
        loop.task = None
        # A loop ends only by cancellation; anything else is a bug in the loop's own code.
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("scrape loop %s died", task.get_name(), exc_info=exc)

    def _release(self, subscription: Subscription) -> list[asyncio.Task[None]]:
        """Detach ``subscription`` from its loops; cancel (and return) those left empty."""
        stopped = []
        for loop in self._subscriptions.pop(subscription, ()):
            loop.leave(subscription)
            if loop.subscribers:
                continue
            if self._loops.get(loop.key) is loop:
                del self._loops[loop.key]
            if loop.task is not None:
                loop.task.cancel()
                stopped.append(loop.task)
            url = loop.key.target.url
            if not any(key.target.url == url for key in self._loops):
                # No loop scrapes the URL any more: its parser and view caches can go.
                self._scraper.forget(url)
        return stopped
