"""The subscriber side of the hub: events, shared ticks, and one subscriber's mailbox.

Split off :mod:`tgi_collector.hub` (which re-exports the public names) to keep each module about
one thing: the hub runs scrape loops; this module decides what one subscriber sees.

A subscriber's mailbox holds at most one undelivered tick per target (a newer tick replaces it
and counts as coalesced), so nothing a slow subscriber does can make a loop wait or memory grow
beyond its number of targets. Loops hand ticks over with :meth:`Subscription._offer`, a few
dictionary operations and an :class:`asyncio.Event` set: cheap enough for thousands of
subscribers per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from tgi_collector.snapshot import Snapshot
from tgi_collector.targets import Target

__all__ = ["Event", "EventKind", "Subscription"]

# One logger for the whole Watch engine, whichever of its modules speaks.
logger = logging.getLogger("tgi_collector.hub")


class EventKind(enum.Enum):
    """What a subscription event carries (``WatchResponse``'s cases)."""

    SNAPSHOT = "snapshot"
    SYNC = "sync"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing for the subscriber to send.

    ``payload`` is the encoded snapshot (SNAPSHOT only): the very bytes every subscriber of that
    tick gets, to be sent as they are. ``coalesced`` counts this subscriber's snapshots that a
    newer one replaced before it read them, since its previous event. ``snapshot`` is the domain
    snapshot behind ``payload``, for logs and tests; re-encoding it would waste the sharing.
    """

    kind: EventKind
    payload: bytes = b""
    coalesced: int = 0
    snapshot: Snapshot | None = None


class _Tick:
    """One scrape of one loop labelled with one instance id, encoded once and shared by every
    subscriber of the loop that named the URL by that instance id.

    ``version`` identifies the tick's content for ``suppress_unchanged``: equal versions mean
    equal content (see :meth:`tgi_collector._loop.Loop._content_version`). ``initial`` marks a
    loop's immediate first scrape, which updates-only subscribers skip.
    """

    __slots__ = ("_encode", "_first", "_first_failed", "initial", "payload", "snapshot", "version")

    def __init__(
        self,
        snapshot: Snapshot,
        payload: bytes,
        encode: Callable[[Snapshot], bytes],
        *,
        initial: bool,
        version: int,
    ) -> None:
        self.snapshot = snapshot
        self.payload = payload
        self.initial = initial
        self.version = version
        self._encode = encode
        # Without a window the shared payload already is a valid first snapshot.
        self._first: tuple[bytes, Snapshot] | None = (
            (payload, snapshot) if snapshot.window is None else None
        )
        self._first_failed = False

    def first(self) -> tuple[bytes, Snapshot] | None:
        """Payload and snapshot without the window, for a subscriber's first snapshot of a target.

        "The first snapshot of a stream has lifetime values and no rates." Encoded at most once
        per tick, and only when some subscriber needs it. None if encoding failed (logged once).
        """
        if self._first is None and not self._first_failed:
            bare = dataclasses.replace(self.snapshot, window=None)
            payload = self._encode_first(bare)
            self._first_failed = payload is None
            self._first = None if payload is None else (payload, bare)
        return self._first

    def relabelled(self, instance_id: str) -> _Tick | None:
        """This tick for subscribers of another instance id of the same URL, without its window.

        Only a subscriber joining under that id gets it, and its first snapshot has no window.
        None if encoding failed (logged).
        """
        bare = dataclasses.replace(self.snapshot, instance_id=instance_id, window=None)
        payload = self._encode_first(bare)
        if payload is None:
            return None
        return _Tick(bare, payload, self._encode, initial=self.initial, version=self.version)

    def _encode_first(self, bare: Snapshot) -> bytes | None:
        try:
            return self._encode(bare)
        except Exception:
            logger.exception("encoding the first snapshot of %s failed", bare.endpoint)
            return None


class _Sync(enum.Enum):
    WAITING = enum.auto()  # some target has not delivered its first snapshot yet
    DUE = enum.auto()  # every target has: SYNC is the next event
    SENT = enum.auto()


class Subscription:
    """One subscriber of a :class:`~tgi_collector.hub.Hub`: read events with :meth:`next`.

    Made by :meth:`Hub.subscribe <tgi_collector.hub.Hub.subscribe>`. ``targets`` are the
    subscribed targets, duplicates removed. Call :meth:`close` (or use ``async with``) when done:
    it leaves every loop, and a loop whose last subscriber left stops.
    """

    __slots__ = (
        "_coalesced",
        "_ended",
        "_fresh",
        "_heartbeat",
        "_last_event",
        "_pending",
        "_release",
        "_stopped",
        "_sync",
        "_versions",
        "_wake",
        "suppress_unchanged",
        "targets",
        "updates_only",
    )

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        updates_only: bool,
        suppress_unchanged: bool,
        heartbeat_seconds: float | None,
        release: Callable[[Subscription], list[asyncio.Task[None]]],
    ) -> None:
        self.targets = tuple(targets)
        self.updates_only = updates_only
        self.suppress_unchanged = suppress_unchanged
        self._heartbeat = heartbeat_seconds
        self._release: Callable[[Subscription], list[asyncio.Task[None]]] | None = release
        self._stopped: list[asyncio.Task[None]] = []
        # Insertion order is delivery order: a target keeps its place when a newer tick
        # replaces its undelivered one, so targets are served first come, first served.
        self._pending: dict[Target, _Tick] = {}
        self._fresh = set(self.targets)  # targets whose first snapshot is not delivered yet
        # gNMI: with updates_only there is no initial state to wait for, so SYNC comes at once.
        self._sync = _Sync.DUE if updates_only else _Sync.WAITING
        self._versions: dict[Target, int] = {}  # content version last queued, per target
        self._coalesced = 0
        self._wake = asyncio.Event()
        self._ended = False
        self._last_event = asyncio.get_running_loop().time()

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended (closed, or its hub closed)."""
        return self._ended

    @property
    def pending(self) -> int:
        """Targets with an undelivered snapshot: at most the number of targets."""
        return len(self._pending)

    async def next(self) -> Event | None:
        """The next event, waiting for one; None once the subscription has ended.

        With ``heartbeat_seconds`` set, a HEARTBEAT comes when no event was returned for that
        long. Meant for one reader at a time.
        """
        clock = asyncio.get_running_loop()
        while not self._ended:
            event = self._take()
            if event is None and self._heartbeat is not None:
                remaining = self._last_event + self._heartbeat - clock.time()
                if remaining <= 0:
                    event = self._event(EventKind.HEARTBEAT)
            if event is not None:
                self._last_event = clock.time()
                return event
            # No await since _take(): nothing can have been offered in between.
            self._wake.clear()
            if self._heartbeat is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
        return None

    def close(self) -> None:
        """End the subscription and leave its loops. Idempotent; never blocks.

        A pending :meth:`next` returns None. Loops left without subscribers are cancelled;
        :meth:`aclose` also waits for them to finish.
        """
        self._ended = True
        self._pending.clear()
        self._wake.set()
        release, self._release = self._release, None
        if release is not None:
            self._stopped = release(self)

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the loops it stopped have finished."""
        self.close()
        stopped, self._stopped = self._stopped, []
        if stopped:
            await asyncio.wait(stopped)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- called by the hub's loops --------------------------------------------------------------

    def _offer(self, target: Target, tick: _Tick) -> bool:
        """Queue ``tick`` of ``target``, replacing an undelivered one. Never blocks.

        True when an undelivered tick was replaced (coalesced).
        """
        if self.updates_only and tick.initial:
            return False
        if self.suppress_unchanged:
            if self._versions.get(target) == tick.version:
                return False
            self._versions[target] = tick.version
        replaced = target in self._pending
        if replaced:
            self._coalesced += 1
        self._pending[target] = tick
        self._wake.set()
        return replaced

    # -- internals ------------------------------------------------------------------------------

    def _take(self) -> Event | None:
        """The next event ready now, if any: SYNC when due, else the oldest pending target."""
        if self._sync is _Sync.DUE:
            self._sync = _Sync.SENT
            return self._event(EventKind.SYNC)
        while self._pending:
            target = next(iter(self._pending))
            tick = self._pending.pop(target)
            if target not in self._fresh:
                return self._event(EventKind.SNAPSHOT, tick.payload, tick.snapshot)
            first = tick.first()
            if first is None:
                # Encoding failed (logged): let the target's next tick through, even if unchanged.
                self._versions.pop(target, None)
                continue
            self._fresh.discard(target)
            if not self._fresh and self._sync is _Sync.WAITING:
                self._sync = _Sync.DUE
            return self._event(EventKind.SNAPSHOT, *first)
        return None

    def _event(
        self, kind: EventKind, payload: bytes = b"", snapshot: Snapshot | None = None
    ) -> Event:
        coalesced, self._coalesced = self._coalesced, 0
        return Event(kind, payload, coalesced, snapshot)
