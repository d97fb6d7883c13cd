"""One Watch scrape loop: its schedule, windows, content versions, and the ticks it publishes.

Why it is separate: :mod:`tgi_collector.hub` keeps the books (which subscriptions share which
loop, when a loop starts and stops); this module is what one loop does on each tick, the part of
the Watch semantics (documented in :mod:`tgi_collector.hub`) about schedule, windows, encoding
once and failures. :class:`LoopKey` is re-exported by :mod:`tgi_collector.hub`, which is where
callers import it from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tgi_collector._subscription import Subscription, _Tick
from tgi_collector.errors import ScrapeErrorKind, TargetDeniedError
from tgi_collector.metrics import Exposition
from tgi_collector.policy import DENIED_MESSAGE
from tgi_collector.scraper import Scraper
from tgi_collector.snapshot import ScrapeFailure, ScrapeStats, Snapshot
from tgi_collector.targets import ScrapeOptions, Target
from tgi_collector.tgi import TgiView
from tgi_collector.window import Window, compute_window

__all__ = ["Loop", "LoopKey"]

# One logger for the whole Watch engine, whichever of its modules speaks.
logger = logging.getLogger("tgi_collector.hub")

# Stands for "content not known" in a loop; equal to nothing, so the next tick counts as changed.
_UNKNOWN: object = object()


@dataclass(frozen=True, slots=True)
class LoopKey:
    """What makes two subscriptions share a scrape loop: same URL, interval and options.

    Not the instance id: that is only the label a subscriber wants on its snapshots, so one URL
    named under several instance ids is still scraped once per tick.
    """

    url: str
    interval_seconds: float
    options: ScrapeOptions


def _phase(key: LoopKey) -> float:
    """A stable offset in ``[0, interval)``: loops of many targets spread over the interval.

    crc32 rather than ``hash()``: the phase must not change between processes (string hashing
    is randomized per process), so a restarted collector scrapes on the same schedule.
    """
    digest = zlib.crc32(f"{key.url}|{key.interval_seconds!r}".encode())
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


class Loop:
    """The scrape loop of one :class:`LoopKey` and the subscribers it feeds.

    Subscribers are kept per :class:`Target` (the instance ids they named the URL by): each
    tick is encoded once per instance id present and every subscriber gets the tick labelled
    for the target it subscribed with. A subscription naming the URL under two instance ids
    joins twice, once per target.
    """

    def __init__(
        self,
        key: LoopKey,
        scraper: Scraper,
        encode: Callable[[Snapshot], bytes],
        coalesced: Callable[[int], None],
    ) -> None:
        self.key = key
        self._coalesced = coalesced  # told how many undelivered ticks a new tick replaced
        # Per target, its subscribers as an insertion-ordered set.
        self._subscribers: dict[Target, dict[Subscription, None]] = {}
        # The last tick per instance id: as published, or relabelled for a later joiner.
        self.latest: dict[str, _Tick] = {}
        self._last: _Tick | None = None  # the last tick published, whatever its label
        self.task: asyncio.Task[None] | None = None
        self._scraper = scraper
        self._encode = encode
        # The loop scrapes the URL without an instance id; snapshots are labelled on publishing.
        self._target = Target(instance_id="", url=key.url)
        # Windows need the exposition whatever the subscribers asked for; it is dropped
        # before encoding unless they want raw metrics.
        self._scrape_options = dataclasses.replace(key.options, include_raw_metrics=True)
        self._phase = _phase(key)
        # The last up exposition, its view and its tick: the start of the next window.
        self._previous: tuple[Exposition, TgiView | None, float] | None = None
        self._suppressing = 0  # (subscription, target) pairs with suppress_unchanged
        self._content: object = _UNKNOWN
        self._version = 0
        self._denied = False

    @property
    def idle(self) -> bool:
        """Whether no subscriber is left (the hub then stops the loop)."""
        return not self._subscribers

    def join(self, subscription: Subscription, target: Target) -> None:
        """Add a subscriber of ``target`` (whose URL is the loop's).

        It gets the latest tick, labelled with ``target``'s instance id, at once unless it
        wants updates only.
        """
        subscribers = self._subscribers.setdefault(target, {})
        if subscription in subscribers:
            return
        subscribers[subscription] = None
        if subscription.suppress_unchanged:
            if self._suppressing == 0 and self._last is not None:
                # Content is tracked only while someone suppresses; start from the latest tick.
                self._content = _content_key(self._last.snapshot)
            self._suppressing += 1
        if not subscription.updates_only and (latest := self._latest_for(target)) is not None:
            subscription._offer(target, latest)

    def leave(self, subscription: Subscription, target: Target) -> None:
        """Remove a subscriber of ``target`` (the hub stops the loop when none is left)."""
        subscribers = self._subscribers.get(target)
        if subscribers is None or subscription not in subscribers:
            return
        del subscribers[subscription]
        if not subscribers:
            del self._subscribers[target]
        if subscription.suppress_unchanged:
            self._suppressing -= 1

    def _latest_for(self, target: Target) -> _Tick | None:
        """The latest tick labelled for ``target``; relabelled (encoded once) if need be."""
        label = target.label
        latest = self.latest.get(label)
        if latest is None and self._last is not None:
            latest = self._last.relabelled(label)
            if latest is not None:
                self.latest[label] = latest
        return latest

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
        url = self.key.url
        try:
            snapshot = await self._scraper.scrape(
                self._target, self._scrape_options, keep_caches=True
            )
        except TargetDeniedError:
            # The server checked the target at subscribe time: its address changed since. A
            # stream must not go silent about a target, so it reports it down, with its own
            # error kind and the policy's generic message.
            if not self._denied:
                logger.warning("%s is now refused by the scrape policy", url)
            self._denied = True
            snapshot = Snapshot(
                instance_id=url,
                endpoint=url,
                timestamp=datetime.now(UTC),
                up=False,
                stats=ScrapeStats(0.0, 0, 0),
                error=ScrapeFailure(ScrapeErrorKind.DENIED, DENIED_MESSAGE),
            )
        except Exception:
            logger.exception("scraping %s failed unexpectedly", url)
            return
        else:
            self._denied = False
        try:
            self._publish(snapshot, tick, initial=initial)
        except Exception:
            logger.exception("publishing a snapshot of %s failed", url)

    def _publish(self, snapshot: Snapshot, tick: float, *, initial: bool) -> None:
        """Stamp, window, encode once per instance id, and hand the tick to every subscriber."""
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
        # Every label is encoded before anyone gets the tick: an encoding failure costs the
        # tick for every subscriber alike, and leaves the previous tick the latest.
        encoded: dict[str, tuple[Snapshot, bytes]] = {}
        for target in self._subscribers:
            label = target.label
            if label not in encoded:
                labelled = dataclasses.replace(outgoing, instance_id=label)
                encoded[label] = (labelled, self._encode(labelled))
        version = self._content_version(outgoing)
        ticks = {
            label: _Tick(labelled, payload, self._encode, initial=initial, version=version)
            for label, (labelled, payload) in encoded.items()
        }
        self.latest = ticks
        self._last = next(iter(ticks.values()), self._last)
        replaced = 0
        for target, subscribers in self._subscribers.items():
            latest = ticks[target.label]
            for subscription in subscribers:
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
