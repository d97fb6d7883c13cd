"""Per-origin connection pools behind one client: reuse within an origin, bounded origins."""

from __future__ import annotations

import httpx
from fixture_server import FixtureServer

from tgi_collector._transport import PerOriginTransport


async def test_each_origin_keeps_its_connection_and_old_pools_are_closed() -> None:
    transport = PerOriginTransport(max_origins=2)
    async with (
        FixtureServer() as a,
        FixtureServer() as b,
        FixtureServer() as c,
        httpx.AsyncClient(transport=transport) as client,
    ):
        for server in (a, b, c):
            server.route("/metrics", body=b"x 1\n")
        for _ in range(3):
            assert (await client.get(a.url("/metrics"))).status_code == 200
        assert a.connections == 1  # keep-alive reused within the origin
        await client.get(b.url("/metrics"))
        assert transport.origin_count == 2
        await client.get(c.url("/metrics"))
        assert transport.origin_count == 2  # a's pool, least recently used, was closed
        await client.get(a.url("/metrics"))
        assert a.connections == 2
        assert (b.connections, c.connections) == (1, 1)
    assert transport.origin_count == 0
