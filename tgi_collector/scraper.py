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
from tgi_collector._info_cache import InfoCacheMixin, InfoEntry
from tgi_collector._parse_cache import TargetCaches
from tgi_collector._response import BodyReader, content_encoding, decode_utf8, status_failure
from tgi_collector._version import __version__
from tgi_collector.errors import (
    ExpositionError,
    SampleLimitError,
    ScrapeError,
    ScrapeErrorKind,
)
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


class Scraper(InfoCacheMixin):
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
        self._targets: OrderedDict[str, TargetCaches] = OrderedDict()
        # Per base URL (scheme://host:port): /info belongs to the server, not to the path.
        self._info: OrderedDict[str, InfoEntry] = OrderedDict()
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
                instance_id=target.label,
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
            instance_id=target.label,
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
        caches: TargetCaches,
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

    def _caches(self, url: str, *, keep: bool) -> TargetCaches:
        caches = self._targets.get(url)
        if caches is not None:
            self._targets.move_to_end(url)
            return caches
        caches = TargetCaches()
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

    # The GET is here, with the scraper's other requests; the cache and its background
    # refreshes are InfoCacheMixin's (tgi_collector._info_cache).

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
