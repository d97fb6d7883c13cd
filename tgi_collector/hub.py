"""Watch's engine: one scrape loop per (URL, interval, options), fanned out to subscribers.

Pure asyncio domain code (no gRPC, no protobuf): the server injects ``encode`` and turns events
into ``WatchResponse`` messages. The semantics are the README's "Watch semantics" (from gNMI
Subscribe STREAM/SAMPLE and the Kubernetes watch API):

- **Shared loops.** Subscribers of the same :class:`LoopKey` share one loop, started by the
  first and cancelled when the last leaves, so a target's HTTP server sees one scrape per
  interval however many subscribers watch it. The key is the URL, not the instance id: a URL
  named under several instance ids (by different subscribers, or by one naming it twice) is
  scraped once per tick, and each subscriber's snapshots carry the instance id it named the
  target by. A loop is sequential: scrapes of one URL never overlap, and ticks missed by an
  overrunning scrape are skipped, not caught up.
- **Schedule.** The first scrape runs at once; later ticks fall at ``phase + k * interval`` on
  the monotonic clock, with a stable per-URL ``phase`` spreading loops over the interval (as
  Prometheus does). A scheduled tick closer than half an interval to the immediate first scrape
  is skipped: a window of a few milliseconds would give meaningless rates. Each snapshot is
  stamped with its scheduled tick (wall clock, UTC), so windows are exact multiples of the
  interval and timestamps do not jitter with scrape latency.
- **Windows.** A loop keeps its previous *up* exposition; an up snapshot gets the window since
  it. Down snapshots get none and do not move that baseline, so the window after an outage spans
  it (the counter reset rule copes with a target that restarted meanwhile).
- **Encoded once.** Each tick is encoded once per instance id it is labelled with, and the same
  bytes go to every subscriber of that instance id; a subscriber's first snapshot of a target is
  the tick without its window, encoded lazily, once (a subscriber joining under an instance id
  the loop has not labelled its latest tick with gets that tick relabelled, encoded once).
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
import functools
import logging
import math
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from tgi_collector._loop import Loop, LoopKey
from tgi_collector._subscription import Event, EventKind, Subscription
from tgi_collector.errors import CapacityError
from tgi_collector.scraper import Scraper
from tgi_collector.snapshot import Snapshot
from tgi_collector.targets import ScrapeOptions, Target

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
        self._loops: dict[LoopKey, Loop] = {}
        # Per subscription, the loop of each of its targets (a loop twice if it names one URL
        # under two instance ids).
        self._subscriptions: dict[Subscription, tuple[tuple[Loop, Target], ...]] = {}
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
        """Subscribe to ``targets`` (deduplicated), joining or starting one loop per URL.

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
        joined = []
        for target in subscription.targets:
            key = LoopKey(target.url, interval_seconds, options)
            loop = self._loops.get(key)
            if loop is None:
                loop = self._loops[key] = self._start(key)
            joined.append((loop, target))
        self._subscriptions[subscription] = tuple(joined)
        for loop, target in joined:
            loop.join(subscription, target)
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

    def _start(self, key: LoopKey) -> Loop:
        loop = Loop(key, self._scraper, self._encode, self._count_coalesced)
        task = asyncio.get_running_loop().create_task(
            loop.run(), name=f"{LOOP_TASK_PREFIX}{key.url}"
        )
        loop.task = task
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, loop))
        return loop

    def _count_coalesced(self, count: int) -> None:
        self._coalesced_total += count

    def _task_done(self, loop: Loop, task: asyncio.Task[None]) -> None:
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
        for loop, target in self._subscriptions.pop(subscription, ()):
            loop.leave(subscription, target)
            if not loop.idle:
                continue
            if self._loops.get(loop.key) is loop:
                del self._loops[loop.key]
            if loop.task is not None:
                loop.task.cancel()
                stopped.append(loop.task)
            url = loop.key.url
            if not any(key.url == url for key in self._loops):
                # No loop scrapes the URL any more: its parser and view caches can go.
                self._scraper.forget(url)
        return stopped
