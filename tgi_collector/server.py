"""The gRPC server: ``CollectorService`` on ``grpc.aio``, with health and reflection.

This is the only module that imports ``grpc``. Domain errors become status codes here, once:

- :class:`~tgi_collector.errors.InvalidRequestError` -> ``INVALID_ARGUMENT`` (names the field)
- :class:`~tgi_collector.errors.TargetDeniedError` -> ``PERMISSION_DENIED`` (generic message)
- anything unexpected -> ``INTERNAL`` with a generic message; the traceback goes to the log,
  never to the caller, and no handler ever answers ``UNKNOWN``.

A target that fails is not an RPC error: ``Collect`` answers OK with a down snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tgi_collector import convert
from tgi_collector.errors import InvalidRequestError, TargetDeniedError
from tgi_collector.policy import TargetPolicy
from tgi_collector.scraper import Scraper
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc

__all__ = ["SERVICE_NAME", "CollectorServer", "ServerConfig", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = collector_pb2.DESCRIPTOR.services_by_name["CollectorService"].full_name

# Requests are a target and a few options: 1 MiB is generous and keeps hostile requests cheap.
DEFAULT_MAX_RECEIVE_BYTES = 1024 * 1024
# A snapshot with raw metrics of a real TGI is ~150 kB; huge label sets can be far larger.
DEFAULT_MAX_SEND_BYTES = 64 * 1024 * 1024

_Response = TypeVar("_Response")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the server listens and shuts down."""

    listen: str = "127.0.0.1:50051"
    grace_seconds: float = 5.0
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    allow_link_local: bool = False


async def _guarded(
    context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[_Response]]
) -> _Response:
    """Run a unary handler body, turning domain errors and bugs into proper status codes."""
    try:
        return await call()
    except InvalidRequestError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except TargetDeniedError:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, "target is not allowed by the scrape policy"
        )
    except grpc.aio.AbortError:
        raise
    except Exception:
        logger.exception("unexpected error in handler")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


class _CollectorServicer(collector_pb2_grpc.CollectorServiceServicer):
    def __init__(self, scraper: Scraper) -> None:
        self._scraper = scraper

    async def Collect(
        self, request: collector_pb2.CollectRequest, context: grpc.aio.ServicerContext
    ) -> collector_pb2.CollectResponse:
        async def collect() -> collector_pb2.CollectResponse:
            target, options = convert.collect_request_from_proto(request)
            snapshot = await self._scraper.scrape(target, options)
            return collector_pb2.CollectResponse(snapshot=convert.snapshot_to_proto(snapshot))

        return await _guarded(context, collect)

    async def Watch(
        self, request: collector_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch is not implemented yet")


class CollectorServer:
    """A running collector: the gRPC server, its health service and the shared scraper."""

    def __init__(self, config: ServerConfig | None = None, *, scraper: Scraper | None = None):
        self.config = config or ServerConfig()
        self._owns_scraper = scraper is None
        self._scraper = scraper or Scraper(
            policy=TargetPolicy(allow_link_local=self.config.allow_link_local)
        )
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.config.max_receive_bytes),
                ("grpc.max_send_message_length", self.config.max_send_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        collector_pb2_grpc.add_CollectorServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _CollectorServicer(self._scraper), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0)."""
        try:
            self.port = self._server.add_insecure_port(self.config.listen)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.config.listen}: {exc}") from exc
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info("serving on %s (port %d)", self.config.listen, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, in-flight calls get ``grace`` seconds, then resources close."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.config.grace_seconds if grace is None else grace)
        if self._owns_scraper:
            await self._scraper.aclose()

    async def wait_for_termination(self) -> None:
        """Block until the server has stopped."""
        await self._server.wait_for_termination()

    async def __aenter__(self) -> CollectorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(config: ServerConfig, *, ready: Callable[[int], None] | None = None) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully."""
    server = CollectorServer(config)
    port = await server.start()
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off the main thread or on some platforms: then Ctrl-C still works.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        logger.info("shutting down (grace %.1f s)", config.grace_seconds)
    finally:
        await server.stop()
