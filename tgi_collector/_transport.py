"""One small connection pool per target origin, behind the process's one HTTP client.

httpcore's connection pool scans every pooled connection each time a request enters it and
each time a response closes (encode/httpcore#1035). With one pool for every target, a scrape
costs O(targets) and an interval O(targets²): at a hundred targets that scan was half of the
collector's CPU (``bench/README.md``). A pool per origin keeps each scan to the one or two
connections of that target, and keep-alive reuse is unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

import httpx

__all__ = ["PerOriginTransport"]

# A target is scraped by one loop at a time: one connection is the steady state, the second
# covers /info fetched beside /metrics, the rest absorb overlapping Collect calls.
_PER_ORIGIN_LIMITS = httpx.Limits(
    max_connections=8, max_keepalive_connections=2, keepalive_expiry=90.0
)

_Origin = tuple[bytes, bytes, int | None]


class PerOriginTransport(httpx.AsyncBaseTransport):
    """Routes each request to the pool of its origin (scheme, host, port).

    Pools are kept for the ``max_origins`` most recently used origins; the least recently used
    pool beyond that is closed (a scrape in flight on it fails and is reported down, like any
    connection loss).
    """

    def __init__(
        self, *, max_origins: int = 10_000, limits: httpx.Limits = _PER_ORIGIN_LIMITS
    ) -> None:
        self._max_origins = max_origins
        self._limits = limits
        self._pools: OrderedDict[_Origin, httpx.AsyncHTTPTransport] = OrderedDict()

    @property
    def origin_count(self) -> int:
        """Number of origins with a pool."""
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(limits=self._limits)
            self._pools[origin] = pool
            while len(self._pools) > self._max_origins:
                _, oldest = self._pools.popitem(last=False)
                await oldest.aclose()
        else:
            self._pools.move_to_end(origin)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()
