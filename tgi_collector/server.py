"""The gRPC server: ``CollectorService`` on ``grpc.aio``, with health and reflection.

Only this module, :mod:`tgi_collector.auth` (the token interceptor, TLS credentials),
:mod:`tgi_collector.selfmetrics` (the RPC counting interceptor) and the client import ``grpc``.
Domain errors become status codes here, once:

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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from tgi_collector import _limits, auth, convert, selfmetrics
from tgi_collector.errors import CapacityError, InvalidRequestError, TargetDeniedError
from tgi_collector.hub import EventKind, Hub, Subscription
from tgi_collector.policy import DENIED_MESSAGE, TargetPolicy
from tgi_collector.registry import TargetRegistry
from tgi_collector.scraper import Scraper
from tgi_collector.v1 import collector_pb2

__all__ = ["SERVICE_NAME", "CollectorServer", "ServerConfig", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = collector_pb2.DESCRIPTOR.services_by_name["CollectorService"].full_name

# Requests are a target and a few options: 1 MiB is generous and keeps hostile requests cheap.
DEFAULT_MAX_RECEIVE_BYTES = 1024 * 1024
# A snapshot with raw metrics of a real TGI is ~150 kB; huge label sets can be far larger.
DEFAULT_MAX_SEND_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the server listens, what it allows, and how it shuts down."""

    listen: str = "127.0.0.1:50051"
    grace_seconds: float = 5.0
    # host:port of the collector's own Prometheus metrics (HTTP); None: not served.
    metrics_listen: str | None = None
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    # -- scrape policy (tgi_collector.policy) --
    allow_link_local: bool = False
    allow_cloud_metadata: bool = False
    # CIDRs; when any allow list is set, a target must match one of them. Deny wins.
    allow_networks: tuple[str, ...] = ()
    deny_networks: tuple[str, ...] = ()
    # Host names as in the URL: exact ("tgi-0.internal") or a suffix pattern ("*.internal").
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()
    # (instance_id, url) pairs from the config file; callers may name them by instance id.
    registered_targets: tuple[tuple[str, str], ...] = ()
    # Only registered targets may be scraped.
    registered_only: bool = False
    # -- who may call --
    # A file with one bearer token per line (blank lines and # comments ignored).
    token_file: str | None = None
    # Whether health and reflection also need a token (off: probes and grpcurl list work).
    auth_health_and_reflection: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Set: clients must present a certificate signed by this CA (mutual TLS).
    tls_client_ca_file: str | None = None
    # -- server limits --
    max_concurrent_collects: int = 64
    max_subscribers_per_peer: int = 1_000
    max_concurrent_streams_per_connection: int = 1_000
    # Clients may ping at most this often without data; more is a ping flood and is cut off.
    keepalive_min_ping_interval_seconds: float = 10.0
    # Watch: a control plane wants seconds, not minutes; below 1 s a TGI scrape is mostly cost.
    default_watch_interval_seconds: float = 5.0
    min_watch_interval_seconds: float = 1.0
    max_watch_interval_seconds: float = 3600.0
    max_targets_per_watch: int = 1_000
    max_subscribers: int = 10_000
    # A subscriber that takes no message for this long is ended with RESOURCE_EXHAUSTED.
    stall_timeout_seconds: float = 30.0

    @property
    def watch_limits(self) -> convert.WatchLimits:
        """The Watch request bounds of this configuration."""
        return convert.WatchLimits(
            default_interval_seconds=self.default_watch_interval_seconds,
            min_interval_seconds=self.min_watch_interval_seconds,
            max_interval_seconds=self.max_watch_interval_seconds,
            max_targets=self.max_targets_per_watch,
        )

    @property
    def tls_files(self) -> auth.TlsFiles:
        """The TLS files of the gRPC port (none set: plaintext)."""
        return auth.TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range (reads no file).

        Limits must be positive (byte and stream counts at most 2**31 - 1, grpc's C ints),
        durations positive and finite, the Watch intervals ordered min <= default <= max,
        and TLS settings complete (a cert needs its key; a client CA needs both).
        """
        _limits.check_server_config(self)
        self.tls_files.check()


def _call_gone(what: str, exc: BaseException) -> asyncio.CancelledError:
    """What a handler raises when its client cancelled or dropped the call: gRPC ends it
    quietly (a debug line), as a cancelled call."""
    logger.debug("%s failed: the call is already over (%s)", what, type(exc).__name__)
    return asyncio.CancelledError()


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str
) -> NoReturn:
    """``context.abort``, ending the call quietly if the status cannot be sent (a stalled
    Watch's status waits behind buffered messages; if its client cancels, the send fails with
    gRPC's ExecuteBatchError, which gRPC would log as an ERROR)."""
    try:
        await context.abort(code, details)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        raise _call_gone(f"sending {code.name}", exc) from None
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


@contextlib.asynccontextmanager
async def _status_codes(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Turn domain errors and bugs raised inside a handler into proper status codes."""
    try:
        yield
    except InvalidRequestError as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except TargetDeniedError:
        await _abort(context, grpc.StatusCode.PERMISSION_DENIED, DENIED_MESSAGE)
    except CapacityError as exc:
        await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    except grpc.aio.AbortError:
        raise
    except Exception:
        logger.exception("unexpected error in handler")
        await _abort(context, grpc.StatusCode.INTERNAL, "internal error")


# The methods the RPC metrics name (anything else is "other": method names come from callers).
_METHODS = selfmetrics.method_names(
    collector_pb2.DESCRIPTOR.services_by_name["CollectorService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)

_EVENT_KINDS = {
    EventKind.SNAPSHOT: "snapshot",
    EventKind.SYNC: "sync",
    EventKind.HEARTBEAT: "heartbeat",
}


class _CollectorServicer:
    """``CollectorService``: Collect scrapes now; Watch streams from the shared hub."""

    def __init__(
        self,
        scraper: Scraper,
        hub: Hub,
        config: ServerConfig,
        registry: TargetRegistry | None = None,
    ) -> None:
        self._scraper = scraper
        self._registry = registry
        self._hub = hub
        self._config = config
        self.draining = False
        self._collects = _limits.ConcurrencyLimit(
            config.max_concurrent_collects,
            _limits.COLLECT_LIMIT_MESSAGE,
            setting="max_concurrent_collects",
        )
        self._watchers = _limits.PerKeyLimit(
            config.max_subscribers_per_peer, "Watch streams", setting="max_subscribers_per_peer"
        )

    async def collect(
        self, data: bytes, context: grpc.aio.ServicerContext
    ) -> collector_pb2.CollectResponse:
        async with _status_codes(context):
            request = _decode(collector_pb2.CollectRequest, data)
            # Past the limit a call is refused at once (RESOURCE_EXHAUSTED), never queued.
            with self._collects.hold():
                target, options = convert.collect_request_from_proto(
                    request, registry=self._registry
                )
                snapshot = await self._scraper.scrape(target, options)
                return collector_pb2.CollectResponse(snapshot=convert.snapshot_to_proto(snapshot))
        raise AssertionError("unreachable: _status_codes aborts")  # pragma: no cover

    async def watch(self, data: bytes, context: grpc.aio.ServicerContext) -> None:
        if self.draining:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        async with _status_codes(context):
            request = _decode(collector_pb2.WatchRequest, data)
            spec = convert.watch_request_from_proto(
                request, self._config.watch_limits, registry=self._registry
            )
            # One slot per open stream of this client address, released when the stream ends.
            with self._watchers.hold(_limits.peer_host(context.peer())):
                for target in spec.targets:
                    await self._scraper.check_target(target)
                subscription = self._hub.subscribe(
                    spec.targets,
                    interval_seconds=spec.interval_seconds,
                    options=spec.options,
                    updates_only=spec.updates_only,
                    suppress_unchanged=spec.suppress_unchanged,
                    heartbeat_seconds=spec.heartbeat_seconds,
                )
                async with subscription:
                    await self._stream(subscription, context)

    async def _stream(self, subscription: Subscription, context: grpc.aio.ServicerContext) -> None:
        stall = self._config.stall_timeout_seconds
        while (event := await subscription.next()) is not None:
            data = convert.watch_response_bytes(
                _EVENT_KINDS[event.kind], event.payload, event.coalesced
            )
            try:
                # A write blocks while the client's flow-control window is full: a client
                # that stops reading is found here, and only its own stream waits.
                async with asyncio.timeout(stall):
                    await context.write(data)
            except TimeoutError:
                raise CapacityError(
                    f"subscriber read nothing for {stall:g} s; it was ended (resubscribe)"
                ) from None
            except Exception as exc:
                # A client that cancels (or drops) while a write waits on its full window makes
                # the write fail with gRPC's ExecuteBatchError, before the context knows it is
                # cancelled: the bytes are always ours and valid, so a failing write means the
                # call is over, not a bug.
                raise _call_gone("a Watch write", exc) from None


_Request = TypeVar("_Request", collector_pb2.CollectRequest, collector_pb2.WatchRequest)


def _decode(message_type: type[_Request], data: bytes) -> _Request:
    """Parse request bytes; bytes that are no such message are INVALID_ARGUMENT.

    Done in the handler rather than by gRPC, which answers a failing deserializer with UNKNOWN
    and the parser's internals in the message.
    """
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise InvalidRequestError(
            "request", f"is not a valid {message_type.DESCRIPTOR.name} message"
        ) from exc


def _add_service(server: grpc.aio.Server, servicer: _CollectorServicer) -> None:
    # Registered by hand rather than with the generated helper: Watch writes bytes that are
    # already serialized (one encoding per tick shared by every subscriber), so its response
    # serializer is the identity; requests arrive as bytes and are parsed by the handlers.
    handlers = {
        "Collect": grpc.unary_unary_rpc_method_handler(
            servicer.collect,
            request_deserializer=None,
            response_serializer=collector_pb2.CollectResponse.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.watch,
            request_deserializer=None,
            response_serializer=None,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


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
        self._token_count = 0
        if self.config.token_file is not None:
            digests = auth.load_tokens(self.config.token_file)
            self._token_count = len(digests)
            exempt = () if self.config.auth_health_and_reflection else auth.DEFAULT_EXEMPT_PREFIXES
            interceptors.append(auth.BearerTokenInterceptor(digests, exempt_prefixes=exempt))
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
        self._servicer = _CollectorServicer(self._scraper, self.hub, self.config, self.registry)
        _add_service(self._server, self._servicer)
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
    """Run a server until SIGTERM or SIGINT, then shut down gracefully.

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
    try:
        await stop.wait()
        logger.info("shutting down (grace %.1f s)", config.grace_seconds)
    finally:
        await server.stop()
