"""A small asyncio TCP proxy with switchable faults, for tests only (stdlib only).

It sits between a client (the collector) and an upstream server (a simulator), so a test can
break the network under a running Watch stream and mend it again::

    from fault_proxy import BLACKHOLE, DROP, PASS, RESET, FaultProxy, latency

    async with FaultProxy("127.0.0.1", upstream_port) as proxy:
        url = proxy.url("/metrics")        # http://127.0.0.1:<proxy port>/metrics
        proxy.set_fault(latency(1.0))      # every forwarded chunk now waits 1 s
        proxy.set_fault(BLACKHOLE, existing=False)  # only connections accepted from now on
        proxy.set_fault(PASS)

The proxy listens on ``127.0.0.1`` port 0. A fault applies to connections accepted while it is
set and, with ``existing=True`` (the default), also to the connections already open:

``pass``
    Forward bytes both ways, unchanged.
``latency(seconds)``
    Forward, but every chunk read (in either direction) waits ``seconds`` before it is written
    on, so one request/response exchange takes at least twice that.
``drop``
    New connections are accepted and closed at once (FIN; the kernel turns it into an RST if
    the client's request is already waiting unread). Existing ones are closed the same way.
``reset``
    New connections are accepted and aborted with an RST (``SO_LINGER`` 0, then close);
    existing ones likewise.
``blackhole``
    New connections are accepted, their bytes read and discarded; nothing is ever answered or
    closed (until :meth:`FaultProxy.aclose`). Existing connections stop forwarding: bytes from
    either side are discarded while the fault lasts.

Note that TCP's handshake is completed by the kernel before the proxy accepts, so a client
never sees ``drop`` or ``reset`` as a failure to connect: it connects, then loses the
connection before any response.

Everything is bounded: :meth:`FaultProxy.aclose` (leaving ``async with``) stops listening,
aborts every connection on both sides and waits for every task it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

__all__ = ["BLACKHOLE", "DROP", "PASS", "RESET", "Fault", "FaultProxy", "latency"]

# At most this many chunks per direction and connection: every loop here is bounded in count.
_MAX_CHUNKS = 1_000_000
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Fault:
    """What the proxy does to connections; build with :func:`latency` or the constants."""

    kind: Literal["pass", "latency", "drop", "reset", "blackhole"]
    seconds: float = 0.0


PASS = Fault("pass")
DROP = Fault("drop")
RESET = Fault("reset")
BLACKHOLE = Fault("blackhole")


def latency(seconds: float) -> Fault:
    """Forward every chunk after ``seconds``."""
    return Fault("latency", seconds)


@dataclass(eq=False, slots=True)
class _Link:
    """One client connection and, once forwarding, its upstream connection."""

    fault: Fault
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self, *, rst: bool = False) -> None:
        if rst:
            sock = self.client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.client.transport.abort()
        else:
            self.client.close()
        if self.upstream is not None:
            self.upstream.transport.abort()


class FaultProxy:
    """A TCP proxy to ``upstream_host:upstream_port`` with switchable faults (see the module)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self.fault = PASS
        self.accepted: Counter[str] = Counter()  # connections accepted, by the fault at the time
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def url(self, path: str = "/metrics") -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def set_fault(self, fault: Fault, *, existing: bool = True) -> None:
        """Apply ``fault`` to new connections and, with ``existing``, to the open ones."""
        self.fault = fault
        if not existing:
            return
        for link in list(self._links):
            link.fault = fault
            if fault.kind in ("drop", "reset"):
                link.abort(rst=fault.kind == "reset")

    async def aclose(self) -> None:
        """Stop listening, abort every connection, wait for every task."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link(self.fault, writer)
        self._links.add(link)
        self.accepted[link.fault.kind] += 1
        try:
            if link.fault.kind in ("drop", "reset"):
                link.abort(rst=link.fault.kind == "reset")
            elif link.fault.kind == "blackhole":
                for _ in range(_MAX_CHUNKS):  # read and discard, never answer
                    if not await reader.read(_CHUNK):
                        break
            else:
                up_reader, link.upstream = await asyncio.open_connection(*self._upstream)
                await asyncio.gather(
                    self._pump(link, reader, link.upstream),
                    self._pump(link, up_reader, writer),
                )
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # only aclose() cancels, and ending is all it asks
        finally:
            self._links.discard(link)
            self._tasks.discard(task)
            link.abort()

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        """Copy ``source`` to ``sink`` under the link's current fault, until EOF."""
        try:
            for _ in range(_MAX_CHUNKS):
                data = await source.read(_CHUNK)
                if not data:
                    break
                if link.fault.kind == "latency":
                    await asyncio.sleep(link.fault.seconds)
                if link.fault.kind not in ("pass", "latency"):
                    continue  # black-holed (or about to be closed): discard
                sink.write(data)
                await sink.drain()
            if sink.can_write_eof() and not sink.is_closing():
                sink.write_eof()
        except OSError:
            link.abort()
