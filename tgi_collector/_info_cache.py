"""The scraper's ``/info`` cache: each server's model identity, refreshed in the background.

Why it is separate: ``/info`` is a second endpoint with its own cache (per server, not per
target URL), TTL, retry delay and background refresh tasks, beside the ``/metrics`` scrape that
:mod:`tgi_collector.scraper` runs. It is a mixin of :class:`~tgi_collector.scraper.Scraper`
rather than an object of its own because it shares the scraper's state and settings (set up by
``Scraper.__init__``) and uses its one GET (``_fetch_info``); the rules are documented there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

from tgi_collector import tgi
from tgi_collector.errors import ScrapeError
from tgi_collector.targets import Target

__all__ = ["InfoCacheMixin", "InfoEntry"]

# The scraper's logger: these lines are about its scrapes.
logger = logging.getLogger("tgi_collector.scraper")


@dataclass(frozen=True, slots=True)
class InfoEntry:
    """A cached ``/info`` outcome; ``model`` is the last good value (None if never good)."""

    model: tgi.ModelInfo | None
    expires_at: float


class InfoCacheMixin:
    """The ``/info`` half of :class:`~tgi_collector.scraper.Scraper` (a base class of it)."""

    # Set by Scraper.__init__, which owns the settings; declared here for the type checker.
    _info: OrderedDict[str, InfoEntry]
    _info_tasks: dict[str, asyncio.Task[None]]
    _info_ttl: float
    _info_retry: float
    _max_entries: int

    async def _fetch_info(self, base_url: str, addresses: list[str]) -> tgi.ModelInfo | None:
        """GET ``{base_url}/info`` and read it (the scraper's); ScrapeError on failure."""
        raise NotImplementedError  # pragma: no cover

    def _cached_model(self, target: Target) -> tgi.ModelInfo | None:
        entry = self._info.get(target.base_url)
        return entry.model if entry is not None else None

    def _refresh_info_if_stale(
        self, target: Target, addresses: list[str], deadline: float
    ) -> asyncio.Task[None] | None:
        """Start (or join) a refresh of ``/info`` if the cache is stale; the task to wait for.

        Returns a task only on first contact (nothing cached yet, not even a failure): that
        scrape waits for the model. Otherwise the refresh, if any, runs in the background.
        """
        key = target.base_url
        entry = self._info.get(key)
        now = asyncio.get_running_loop().time()
        if entry is not None and now < entry.expires_at:
            self._info.move_to_end(key)
            return None
        task = self._info_tasks.get(key)
        if task is None:
            task = asyncio.create_task(
                self._refresh_info(key, addresses, deadline), name=f"tgi-collector /info {key}"
            )
            self._info_tasks[key] = task
            task.add_done_callback(lambda done: self._forget_task(key, done))
        return task if entry is None else None

    def _forget_task(self, key: str, task: asyncio.Task[None]) -> None:
        if self._info_tasks.get(key) is task:
            del self._info_tasks[key]

    async def _wait_first_info(self, task: asyncio.Task[None], deadline: float) -> None:
        # shield: the refresh may be shared with other scrapes; leaving early must not cancel it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(task)

    async def _refresh_info(self, key: str, addresses: list[str], deadline: float) -> None:
        """Fetch ``{key}/info`` into the cache. Never raises: /info is optional."""
        loop = asyncio.get_running_loop()
        previous = self._info.get(key)
        try:
            async with asyncio.timeout_at(deadline):
                model = await self._fetch_info(key, addresses)
        except (ScrapeError, TimeoutError) as exc:
            logger.debug("GET %s/info failed: %s", key, exc)
            model = None
        except Exception:
            # A bug in reading the document must not fail scrapes; it must be visible, though.
            logger.exception("reading %s/info failed", key)
            model = None
        if model is None:
            kept = previous.model if previous is not None else None
            entry = InfoEntry(kept, loop.time() + self._info_retry)
        else:
            entry = InfoEntry(model, loop.time() + self._info_ttl)
        self._info[key] = entry
        self._info.move_to_end(key)
        while len(self._info) > self._max_entries:
            self._info.popitem(last=False)
