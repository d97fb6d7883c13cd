"""Scraping: fetch a target's ``/metrics`` over HTTP, within limits, into a :class:`Snapshot`.

The rules are Prometheus's, because a collector that can be pointed at arbitrary servers must
survive hostile or broken ones:

- **One overall deadline per scrape.** Per-read timeouts would let a target trickling a byte
  a second never time out; the whole scrape (policy check, request, streamed body, parse)
  runs under ``asyncio.timeout_at``.
- **The body limit counts decompressed bytes as they stream in.** The raw body is read chunk
  by chunk and inflated here with ``zlib``'s ``max_length`` (the reader lives in
  :mod:`tgi_collector._response`), so a gzip bomb (a few kB that inflate to gigabytes) stops
  one chunk past the limit; memory stays at about the limit.
  ``Content-Encoding`` ``gzip`` and ``deflate`` (zlib-wrapped) are understood; anything else is
  a protocol error since only ``gzip`` is ever asked for. An uncompressed body whose
  ``Content-Length`` is over the limit is refused before reading.
- **Redirects are not followed** (a 3xx is an HTTP status failure), **proxies are not used**,
  and keep-alive connections are reused per target (:mod:`tgi_collector._http`).
- **The connection goes to the address the policy checked**, never to a second DNS answer.
- **A failing target is data, not an exception.** :meth:`Scraper.scrape` returns a down snapshot
  whose :class:`~tgi_collector.snapshot.ScrapeFailure` says why. Socket and TLS errors are
  translated once, in :mod:`tgi_collector._http`, into
  :class:`~tgi_collector.errors.ScrapeError`. The only exception a caller sees for a target is
  :class:`~tgi_collector.errors.TargetDeniedError` (the policy refused it).

Error kinds: refused connection, DNS failure or TLS failure -> ``CONNECT``; deadline -> ``TIMEOUT``;
non-2xx -> ``HTTP_STATUS``; over the body limit -> ``BODY_TOO_LARGE``; over the sample limit ->
``TOO_MANY_SAMPLES``; malformed text *and invalid UTF-8* -> ``PARSE`` (the text format is UTF-8 by
definition, so bad bytes are a format error; the message names the line); broken HTTP, a reset or
closed connection mid-body, bad compression -> ``PROTOCOL``.

Model identity comes from TGI's ``GET /info`` and is cached per server (``info_ttl_seconds``).
On first contact the scrape waits for it (within the same deadline); later refreshes run in the
background while the cached value is used. A failing ``/info`` never fails a scrape: the model is
then None (or the last good value), and the failure is remembered for a while so that a server
without ``/info`` is not asked on every scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self
from urllib.parse import urlsplit

from tgi_collector import tgi
from tgi_collector._http import HttpClient
from tgi_collector._response import BodyReader, content_encoding, decode_utf8, status_failure
from tgi_collector._version import __version__
from tgi_collector.errors import (
    ExpositionError,
    SampleLimitError,
    ScrapeError,
    ScrapeErrorKind,
)
from tgi_collector.exposition import Parser
from tgi_collector.metrics import Exposition
from tgi_collector.policy import TargetPolicy
from tgi_collector.snapshot import ScrapeFailure, ScrapeStats, Snapshot
from tgi_collector.targets import ScrapeOptions, Target, port_of, redacted_url

__all__ = [
    "INFO_MAX_BODY_BYTES",
    "METRICS_ACCEPT",
    "USER_AGENT",
    "ScrapeRecorder",
    "Scraper",
]

logger = logging.getLogger(__name__)

USER_AGENT = f"tgi-collector/{__version__}"
# TGI (like most exporters) speaks only the Prometheus text format 0.0.4.
METRICS_ACCEPT = "text/plain;version=0.0.4"
# A TGI /info document is about 1 kB.
INFO_MAX_BODY_BYTES = 64 * 1024
# How long a failed /info is remembered before it is asked again (capped by the TTL).
_INFO_RETRY_SECONDS = 30.0


@dataclass(slots=True)
class _Progress:
    """What a scrape got done before failing, for the stats of a down snapshot."""

    body_bytes: int = 0


# Bodies of more lines (or characters) than this are parsed in a worker thread: at about a
# microsecond per line, a 16 MiB body of short lines would otherwise hold the event loop (every
# other scrape loop and RPC) for seconds. A real TGI body (~100 kB, ~2,500 lines) is parsed
# inline (a few ms): a thread hop would cost more.
_INLINE_PARSE_LINES = 20_000
_INLINE_PARSE_CHARS = 1 << 20


class _TargetCaches:
    """What the scrapes of one target URL remember of each other."""

    __slots__ = ("_parsing", "parser", "views")

    def __init__(self) -> None:
        self.parser = Parser()
        self.views = tgi.ViewCache()
        self._parsing: asyncio.Future[Exposition] | None = None

    async def parse(self, text: str, max_samples: int) -> Exposition:
        """Parse with this target's parser: inline, or in a thread for a large body.

        A scrape that hits its deadline leaves a threaded parse running (a thread cannot be
        interrupted); the parser is not thread-safe, so the next parse of the target waits for
        it first, within its own deadline.
        """
        if self._parsing is not None:
            await asyncio.wait({self._parsing})
        if len(text) <= _INLINE_PARSE_CHARS and text.count("\n") <= _INLINE_PARSE_LINES:
            return self.parser.parse(text, max_samples=max_samples)
        future = asyncio.ensure_future(
            asyncio.to_thread(self.parser.parse, text, max_samples=max_samples)
        )
        self._parsing = future
        future.add_done_callback(self._parsed)
        # shield: a deadline cancels the scrape, not the parse the parser is busy with.
        return await asyncio.shield(future)

    def _parsed(self, future: asyncio.Future[Exposition]) -> None:
        if self._parsing is future:
            self._parsing = None
        if not future.cancelled():
            future.exception()  # retrieved: a parse error nobody waits for is not "lost"


@dataclass(frozen=True, slots=True)
class _InfoEntry:
    """A cached ``/info`` outcome; ``model`` is the last good value (None if never good)."""

    model: tgi.ModelInfo | None
    expires_at: float


class ScrapeRecorder(Protocol):
    """Told of the outcome of every scrape (the collector's own metrics implement it).

    Called on the event loop once per scrape that reached the network (a target the policy
    refuses is not a scrape); must be cheap and must not raise.
    """

    def scraped(self, url: str, error: ScrapeErrorKind | None, seconds: float) -> None:
        """``url`` was scraped in ``seconds``; ``error`` is None when it was up."""


def _host_and_port(url: str) -> tuple[str, int]:
    """Host and port (default by scheme) of an http(s) URL."""
    parts = urlsplit(url)
    return parts.hostname or "", port_of(parts)


class Scraper:
    """Scrapes targets into snapshots; one per process, shared by every RPC.

    ``policy`` defaults to :class:`~tgi_collector.policy.TargetPolicy` with its defaults.
    ``client`` defaults to a client made here (and closed by :meth:`aclose`); a client passed in
    is used as is and not closed. ``info_ttl_seconds`` is how long
    a good ``/info`` answer is reused; a failed one is retried after at most 30 s.
    ``max_parsers`` bounds both the per-target parser and view caches and the ``/info`` cache (LRU).
    ``recorder`` is told of every scrape's outcome (see :class:`ScrapeRecorder`).

    Every failed scrape, Collect or Watch, logs one WARNING line naming the target (redacted:
    :func:`redacted_url`), the error kind and the short error message (never a body or a
    token); the first good scrape of a target that failed logs one INFO line.
    """

    def __init__(
        self,
        *,
        policy: TargetPolicy | None = None,
        client: HttpClient | None = None,
        info_ttl_seconds: float = 300.0,
        max_parsers: int = 10_000,
        recorder: ScrapeRecorder | None = None,
    ) -> None:
        if max_parsers < 1:
            raise ValueError("max_parsers must be at least 1")
        self._policy = policy if policy is not None else TargetPolicy()
        self._owns_client = client is None
        self._client = client if client is not None else HttpClient()
        self._info_ttl = info_ttl_seconds
        self._info_retry = min(info_ttl_seconds, _INFO_RETRY_SECONDS)
        self._max_entries = max_parsers
        # Per target URL: the Parser's cache of series identities and the ViewCache's last
        # view make a scrape of an unchanged series cheap, so both are kept per target.
        self._targets: OrderedDict[str, _TargetCaches] = OrderedDict()
        # Per base URL (scheme://host:port): /info belongs to the server, not to the path.
        self._info: OrderedDict[str, _InfoEntry] = OrderedDict()
        self._info_tasks: dict[str, asyncio.Task[None]] = {}
        self.recorder = recorder
        # Target URLs whose last scrape failed -> consecutive failures (LRU, max_parsers).
        self._failing: OrderedDict[str, int] = OrderedDict()

    @property
    def policy(self) -> TargetPolicy:
        """The policy every scrape is checked against."""
        return self._policy

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel background ``/info`` refreshes and close the client if this scraper made it."""
        tasks = list(self._info_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._info_tasks.clear()
        if self._owns_client:
            await self._client.aclose()

    async def check_target(self, target: Target) -> list[str]:
        """The target's addresses; :class:`~tgi_collector.errors.TargetDeniedError` if the
        policy refuses it (empty when its name does not resolve: not a policy matter)."""
        host, port = _host_and_port(target.url)
        return await self._policy.check(host, port)

    async def scrape(
        self, target: Target, options: ScrapeOptions, *, keep_caches: bool = False
    ) -> Snapshot:
        """Scrape ``target`` once. Target failures give a down snapshot, never an exception.

        ``keep_caches``: keep the target's parser and view caches for its next scrape (what a
        scrape loop wants: the next scrape then costs only what changed; about 1.5 MiB for a
        real TGI). Otherwise the scrape uses the caches a loop keeps for the URL, if any, or
        throwaway ones, so that one-off scrapes of many URLs (Collect) leave nothing behind.
        Caches are dropped by :meth:`forget` or, past ``max_parsers`` URLs, least recently
        used first.

        Raises :class:`~tgi_collector.errors.TargetDeniedError` if the policy refuses the
        target (checked first, within the deadline).
        """
        timestamp = datetime.now(UTC)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + options.timeout_seconds
        progress = _Progress()
        info_task: asyncio.Task[None] | None = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    addresses = await self.check_target(target)
                    if options.fetch_info:
                        info_task = self._refresh_info_if_stale(target, addresses, deadline)
                    caches = self._caches(target.url, keep=keep_caches)
                    exposition = await self._fetch_metrics(
                        target, addresses, options, progress, caches
                    )
            except TimeoutError as exc:
                raise ScrapeError(
                    ScrapeErrorKind.TIMEOUT,
                    f"no complete response within {options.timeout_seconds} s",
                ) from exc
        except ScrapeError as exc:
            duration = loop.time() - started
            self._failed(target.url, exc, duration)
            return Snapshot(
                instance_id=target.instance_id or target.url,
                endpoint=target.url,
                timestamp=timestamp,
                up=False,
                stats=ScrapeStats(duration, progress.body_bytes, 0),
                error=ScrapeFailure(exc.kind, exc.message, exc.http_status),
                model=self._cached_model(target) if options.fetch_info else None,
            )
        duration = loop.time() - started
        self._succeeded(target.url, duration)
        view = caches.views.build(exposition)
        model = None
        if options.fetch_info:
            if info_task is not None:
                await self._wait_first_info(info_task, deadline)
            model = self._cached_model(target)
        return Snapshot(
            instance_id=target.instance_id or target.url,
            endpoint=target.url,
            timestamp=timestamp,
            up=True,
            stats=ScrapeStats(duration, progress.body_bytes, exposition.sample_count),
            view=view,
            exposition=exposition if options.include_raw_metrics else None,
            model=model,
        )

    # -- outcomes ----------------------------------------------------------------------------

    def _failed(self, url: str, exc: ScrapeError, seconds: float) -> None:
        """The one place a failed scrape is logged and recorded."""
        shown = redacted_url(url)
        logger.warning(
            "scrape failed: target=%s kind=%s error=%s",
            shown,
            exc.kind.value,
            exc,
            extra={"target": shown, "error_kind": exc.kind.value},
        )
        self._failing[url] = self._failing.pop(url, 0) + 1
        if len(self._failing) > self._max_entries:
            self._failing.popitem(last=False)
        if self.recorder is not None:
            self.recorder.scraped(url, exc.kind, seconds)

    def _succeeded(self, url: str, seconds: float) -> None:
        if self._failing and (failures := self._failing.pop(url, 0)):
            shown = redacted_url(url)
            logger.info(
                "scrape ok again: target=%s (after %d failed scrape(s))",
                shown,
                failures,
                extra={"target": shown, "failed_scrapes": failures},
            )
        if self.recorder is not None:
            self.recorder.scraped(url, None, seconds)

    # -- /metrics ----------------------------------------------------------------------------

    async def _fetch_metrics(
        self,
        target: Target,
        addresses: list[str],
        options: ScrapeOptions,
        progress: _Progress,
        caches: _TargetCaches,
    ) -> Exposition:
        headers = [
            ("Accept", METRICS_ACCEPT),
            # Like Prometheus: lets a target adapt, and documents the budget in its logs.
            ("X-Prometheus-Scrape-Timeout-Seconds", f"{options.timeout_seconds:g}"),
        ]
        body = await self._get(target.url, addresses, headers, options.max_body_bytes, progress)
        text = decode_utf8(body)
        del body  # a large body is not kept twice (bytes and text) while it is parsed
        try:
            return await caches.parse(text, options.max_samples)
        except SampleLimitError as exc:
            raise ScrapeError(ScrapeErrorKind.TOO_MANY_SAMPLES, str(exc)) from exc
        except ExpositionError as exc:
            raise ScrapeError(ScrapeErrorKind.PARSE, str(exc)) from exc

    def forget(self, url: str) -> None:
        """Drop the caches kept for ``url`` (its scrape loop ended)."""
        self._targets.pop(url, None)

    def _caches(self, url: str, *, keep: bool) -> _TargetCaches:
        caches = self._targets.get(url)
        if caches is not None:
            self._targets.move_to_end(url)
            return caches
        caches = _TargetCaches()
        if keep:
            self._targets[url] = caches
            while len(self._targets) > self._max_entries:
                self._targets.popitem(last=False)
        return caches

    async def _get(
        self,
        url: str,
        addresses: list[str],
        headers: list[tuple[str, str]],
        limit: int,
        progress: _Progress,
    ) -> bytes:
        """GET ``url`` and return its decompressed body; ScrapeError on any failure."""
        headers = [("User-Agent", USER_AGENT), ("Accept-Encoding", "gzip"), *headers]
        async with self._client.get(url, addresses, headers) as response:
            if not 200 <= response.status < 300:
                raise status_failure(response.status, response.reason, response.headers)
            encoding = content_encoding(response.headers)
            length = response.headers.get("content-length", "")
            if encoding == "identity" and length.isdigit() and int(length) > limit:
                raise ScrapeError(
                    ScrapeErrorKind.BODY_TOO_LARGE,
                    f"body exceeds {limit} bytes (Content-Length {length})",
                )
            reader = BodyReader(encoding, limit)
            try:
                await response.read(reader.feed)
            finally:
                progress.body_bytes = reader.size
            return reader.finish()

    # -- /info -------------------------------------------------------------------------------

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
            entry = _InfoEntry(kept, loop.time() + self._info_retry)
        else:
            entry = _InfoEntry(model, loop.time() + self._info_ttl)
        self._info[key] = entry
        self._info.move_to_end(key)
        while len(self._info) > self._max_entries:
            self._info.popitem(last=False)

    async def _fetch_info(self, base_url: str, addresses: list[str]) -> tgi.ModelInfo | None:
        body = await self._get(
            base_url + "/info",
            addresses,
            [("Accept", "application/json")],
            INFO_MAX_BODY_BYTES,
            _Progress(),
        )
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.debug("%s/info is not JSON: %s", base_url, exc)
            return None
        if not isinstance(document, dict):
            logger.debug("%s/info is not a JSON object", base_url)
            return None
        return tgi.model_info_from_json(document)
