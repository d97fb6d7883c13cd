"""The HTTP port of the collector's own metrics: a small threaded server, apart from asyncio.

Prometheus scrapes ``GET /metrics`` (any path answers) while the event loop scrapes targets and
serves gRPC: each request is answered in a thread of its own by prometheus_client's handler, so
a scrape of the collector never waits for the loop, nor the loop for it. The port has no
authentication (keep it internal), so what one client can take is bounded: at most
:data:`MAX_CONNECTIONS` requests at once (a further connection is closed at once, unanswered)
and :data:`REQUEST_TIMEOUT_SECONDS` for a client that sends nothing.
"""

from __future__ import annotations

import http.server
import ipaddress
import logging
import socket
import socketserver
import threading
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT_SECONDS", "MetricsHttpServer", "parse_listen"]

logger = logging.getLogger("tgi_collector.selfmetrics")

#: Requests answered at once; Prometheus needs one, a few more for people and probes.
MAX_CONNECTIONS = 16
#: How long a connection may take to send its request (and be sent the answer).
REQUEST_TIMEOUT_SECONDS = 10.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError naming ``metrics_listen``."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"metrics_listen {listen!r} is not host:port (like 127.0.0.1:9464)")
    return host, int(port)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per request, but never more than MAX_CONNECTIONS: past that a connection
        # is closed unanswered, so that a flood of idle connections cannot pile up threads.
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        # Not HTTPServer's: it looks up the host's FQDN (reverse DNS), which can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class MetricsHttpServer:
    """``registry`` over HTTP (``GET`` any path) on ``listen``, served by a thread of its own.

    Each scrape is answered in a short-lived thread of its own, never on the event loop.
    :meth:`start` binds (OSError naming the address when it cannot); :meth:`close` stops the
    thread and closes the socket.
    """

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        self.listen = listen
        self._address = parse_listen(listen)
        self._registry = registry
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0)."""
        host, port = self._address

        class Handler(MetricsHandler):
            registry = self._registry
            timeout = REQUEST_TIMEOUT_SECONDS  # a silent client does not keep its thread long

        server_class = type("_Server", (_Server,), {"address_family": _family(host)})
        try:
            httpd = server_class((host, port), Handler)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.listen}: {exc.strerror or exc}") from None
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tgi-collector-metrics:{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("serving metrics on http://%s/metrics", _shown(host, self.port))
        return self.port

    def close(self) -> None:
        """Stop serving and close the socket (blocks at most ~50 ms). Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self.port = None


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET  # a host name: resolved to IPv4 by bind


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
