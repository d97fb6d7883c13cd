"""The gRPC server: ``CollectorService`` on ``grpc.aio``, with health and reflection.

Only this module (with its handlers, :mod:`tgi_collector._servicer`), :mod:`tgi_collector.auth`
(the token interceptor, TLS credentials), :mod:`tgi_collector.selfmetrics` (the RPC counting
interceptor) and the client import ``grpc``. Domain errors become status codes in the handlers,
once:

- :class:`~tgi_collector.errors.InvalidRequestError` -> ``INVALID_ARGUMENT`` (names the field)
- :class:`~tgi_collector.errors.TargetDeniedError` -> ``PERMISSION_DENIED`` (generic message)
- :class:`~tgi_collector.errors.CapacityError` -> ``RESOURCE_EXHAUSTED`` (too many subscribers or
  targets, or a subscriber too slow to read its stream)
- anything unexpected -> ``INTERNAL`` with a generic message; the traceback goes to the log,
  never to the caller, and no handler ever answers ``UNKNOWN``.

Before any handler: a call without a configured bearer token is ``UNAUTHENTICATED``
(:mod:`tgi_collector.auth`); a Collect past ``max_concurrent_collects`` or a Watch past
``max_subscribers_per_peer`` is ``RESOURCE_EXHAUSTED`` at once; a request larger than
``max_receive_bytes`` is ``RESOURCE_EXHAUSTED`` from grpc itself.

A target that fails is not an RPC error: ``Collect`` answers OK with a down snapshot. A call
its client already left (a failing write or status) ends as cancelled, quietly. The server's own
metrics: :attr:`CollectorServer.metrics`, on HTTP at ``metrics_listen`` when set.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from tgi_collector import _limits, auth, convert, selfmetrics
from tgi_collector._server_config import (
    DEFAULT_MAX_RECEIVE_BYTES,
    DEFAULT_MAX_SEND_BYTES,
    ServerConfig,
)
from tgi_collector._servicer import SERVICE_NAME, CollectorServicer, add_service
from tgi_collector.hub import Hub
from tgi_collector.policy import TargetPolicy
from tgi_collector.registry import TargetRegistry
from tgi_collector.scraper import Scraper
from tgi_collector.v1 import collector_pb2

__all__ = [
    "DEFAULT_MAX_RECEIVE_BYTES",
    "DEFAULT_MAX_SEND_BYTES",
    "SERVICE_NAME",
    "CollectorServer",
    "ServerConfig",
    "serve",
]

logger = logging.getLogger(__name__)

# The methods the RPC metrics name (anything else is "other": method names come from callers).
_METHODS = selfmetrics.method_names(
    collector_pb2.DESCRIPTOR.services_by_name["CollectorService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)


class CollectorServer:
    """A running collector: the gRPC server, health, reflection, the scraper and the hub."""

    def __init__(self, config: ServerConfig | None = None, *, scraper: Scraper | None = None):
        self.config = config or ServerConfig()
        self.config.check()
        # Files are read now: a missing or bad token or TLS file fails before anything starts.
        self._credentials = (
            auth.server_credentials(self.config.tls_files)
            if self.config.tls_files.enabled
            else None
        )
        self.metrics = selfmetrics.SelfMetrics(self.config.metrics_listen)
        # First: it wraps what the token interceptor returns, so refused calls are counted too.
        interceptors: list[grpc.aio.ServerInterceptor] = [self.metrics.interceptor(_METHODS)]
        self._auth: auth.BearerTokenInterceptor | None = None
        if self.config.token_file is not None:
            digests = auth.load_tokens(self.config.token_file)
            exempt = () if self.config.auth_health_and_reflection else auth.DEFAULT_EXEMPT_PREFIXES
            self._auth = auth.BearerTokenInterceptor(digests, exempt_prefixes=exempt)
            interceptors.append(self._auth)
        self._owns_scraper = scraper is None
        # Bad policy entries or registered targets are a ValueError naming the setting.
        policy = TargetPolicy(
            allow_link_local=self.config.allow_link_local,
            allow_cloud_metadata=self.config.allow_cloud_metadata,
            allow_networks=self.config.allow_networks,
            deny_networks=self.config.deny_networks,
            allow_hosts=self.config.allow_hosts,
            deny_hosts=self.config.deny_hosts,
        )
        self.registry = TargetRegistry(
            self.config.registered_targets, registered_only=self.config.registered_only
        )
        self._scraper = scraper or Scraper(policy=policy, recorder=self.metrics)
        self.hub = Hub(
            self._scraper,
            convert.encode_watch_snapshot,
            max_subscribers=self.config.max_subscribers,
            max_targets_per_subscription=self.config.max_targets_per_watch,
        )
        self.metrics.watch_hub(self.hub)
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            interceptors=interceptors, options=_limits.server_options(self.config)
        )
        self._servicer = CollectorServicer(self._scraper, self.hub, self.config, self.registry)
        add_service(self._server, self._servicer)
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

    @property
    def _token_count(self) -> int:
        return 0 if self._auth is None else self._auth.token_count

    def reload_tokens(self) -> bool:
        """Read ``token_file`` again and accept exactly its tokens from the next call on.

        For rotation without a restart (``serve`` calls it on SIGHUP). A file that cannot be
        read or holds no valid token changes nothing: the tokens loaded before stay, and the
        problem is logged. Returns whether the new set is in use.
        """
        if self._auth is None or self.config.token_file is None:
            logger.warning("token reload asked for, but no token file is configured")
            return False
        try:
            digests = auth.load_tokens(self.config.token_file)
        except (OSError, ValueError) as exc:
            logger.error(
                "token reload failed, the %d token(s) loaded before stay in use: %s",
                self._auth.token_count,
                exc,
            )
            return False
        self._auth.replace_digests(digests)
        logger.info("reloaded %d token(s) from %s", len(digests), self.config.token_file)
        return True

    @property
    def metrics_port(self) -> int | None:
        """The bound port of the metrics HTTP server; None when it is off (or not started)."""
        return self.metrics.port

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0).

        OSError naming the address when the gRPC or the metrics port cannot be bound.
        """
        self.metrics.start()  # first: when it cannot bind, nothing else is bound yet
        try:
            if self._credentials is None:
                self.port = self._server.add_insecure_port(self.config.listen)
            else:
                self.port = self._server.add_secure_port(self.config.listen, self._credentials)
        except RuntimeError as exc:
            self.metrics.close()
            raise OSError(f"cannot listen on {self.config.listen}: {exc}") from exc
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "serving on %s (port %d); %s; %s",
            self.config.listen, self.port, self._describe_tls(), self._describe_auth(),
        )  # fmt: skip
        if self._token_count and self._credentials is None and not _is_loopback(self.config.listen):
            logger.warning(
                "bearer tokens are required but the port is plaintext: tokens cross the network"
                " in the clear (set tls_cert_file and tls_key_file)"
            )
        return self.port

    def _describe_tls(self) -> str:
        if self._credentials is None:
            return "plaintext"
        if self.config.tls_client_ca_file is not None:
            return "TLS, client certificates required"
        return "TLS"

    def _describe_auth(self) -> str:
        if not self._token_count:
            return "no bearer token required"
        scope = (
            "every call"
            if self.config.auth_health_and_reflection
            else "all but health and reflection"
        )
        return f"bearer token required for {scope} ({self._token_count} token(s) loaded)"

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop.

        Health goes NOT_SERVING; new Watch calls get UNAVAILABLE; open Watch streams end with
        OK (clients may resubscribe elsewhere); in-flight Collect calls get ``grace`` seconds;
        then the scraper closes.
        """
        await self._health.enter_graceful_shutdown()
        self._servicer.draining = True
        await self.hub.aclose()
        await self._server.stop(self.config.grace_seconds if grace is None else grace)
        if self._owns_scraper:
            await self._scraper.aclose()
        self.metrics.close()

    async def wait_for_termination(self) -> None:
        """Block until the server has stopped."""
        await self._server.wait_for_termination()

    async def __aenter__(self) -> CollectorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]") or listen
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The per-target scrape caches hold millions of long-lived objects, and a busy scrape
# allocates thousands more. With CPython's default first threshold (700) the youngest
# generation was collected after every few hundred lines parsed: a third of the CPU of busy
# targets (bench/README.md). A larger first threshold keeps that cost small; the older
# generations keep their default ratios, so reference cycles (tasks, tracebacks) are still
# collected within seconds (the soak, tests/test_soak.py, checks that nothing piles up).
_GC_THRESHOLDS = (10_000, 10, 10)


async def serve(config: ServerConfig, *, ready: Callable[[int], None] | None = None) -> None:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads tokens.

    This is the process's main job, so it also tunes the process's garbage collector (see
    ``_GC_THRESHOLDS``); a :class:`CollectorServer` embedded elsewhere leaves it alone.
    """
    gc.set_threshold(*_GC_THRESHOLDS)
    server = CollectorServer(config)
    port = await server.start()
    gc.freeze()  # what start-up made lives as long as the process: never walk it again
    if ready is not None:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off the main thread or on some platforms: then Ctrl-C still works.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, server.reload_tokens)  # no SIGHUP on Windows
    try:
        await stop.wait()
        logger.info("shutting down (grace %.1f s)", config.grace_seconds)
    finally:
        await server.stop()
