"""A small asyncio client of ``CollectorService`` over ``grpc.aio``.

For Python callers who would rather not touch the generated stubs directly. It returns the
protobuf messages as the server sent them.

:meth:`CollectorClient.watch` is the way to hold a long-lived ``Watch``: an async iterator that
resubscribes, with exponential backoff and full jitter, whenever the stream ends for a reason
worth retrying (a server drain, a restart, a dropped connection, a subscriber ended for reading
too slowly). A resubscribed stream starts over: its first snapshot of each target has lifetime
values and no window, and a new sync marker follows.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable, Sequence
from types import TracebackType

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tgi_collector.v1 import collector_pb2, collector_pb2_grpc, snapshot_pb2

__all__ = [
    "INITIAL_BACKOFF_SECONDS",
    "NON_RETRYABLE_CODES",
    "CollectorClient",
    "RetryCallback",
    "backoff_delay",
    "watch_request",
]

logger = logging.getLogger(__name__)

#: Status codes that :meth:`CollectorClient.watch` raises instead of resubscribing: asking
#: again would get the same answer (a bad request, a denied target, no such method, bad
#: credentials). Every other code, and a clean end (OK, e.g. a server drain), is retried.
NON_RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)

#: The first resubscribe waits up to this long; each failed attempt doubles the cap.
INITIAL_BACKOFF_SECONDS = 0.1

#: Called before each resubscribe with the status code that ended the stream (OK for a clean
#: end), its details, and the delay about to be slept, in seconds.
RetryCallback = Callable[[grpc.StatusCode, str, float], None]

# A stream with heartbeats that stays silent for this many heartbeat intervals is presumed
# dead (a half-open connection, a stuck proxy) and is replaced.
_SILENT_HEARTBEATS = 3.0


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def backoff_delay(
    attempt: int, *, max_backoff: float, rng: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential, full jitter.

    Uniform in ``[0, min(max_backoff, INITIAL_BACKOFF_SECONDS * 2**attempt)]``, so that many
    clients cut off by the same server restart do not come back in lockstep.
    """
    cap = min(max_backoff, INITIAL_BACKOFF_SECONDS * 2.0 ** min(attempt, 62))
    return rng(0.0, max(0.0, cap))


def watch_request(
    endpoints: Sequence[str | tuple[str, str]],
    *,
    interval: float = 0.0,
    omit_raw_metrics: bool = True,
    updates_only: bool = False,
    suppress_unchanged: bool = False,
    heartbeat: float = 0.0,
) -> collector_pb2.WatchRequest:
    """The ``WatchRequest`` for ``endpoints`` (URLs, or ``(instance_id, url)`` pairs).

    Zero ``interval`` asks for the server's default; zero ``heartbeat`` for no heartbeats.
    """
    targets = [
        collector_pb2.Target(endpoint=entry)
        if isinstance(entry, str)
        else collector_pb2.Target(instance_id=entry[0], endpoint=entry[1])
        for entry in endpoints
    ]
    request = collector_pb2.WatchRequest(
        targets=targets,
        options=collector_pb2.ScrapeOptions(omit_raw_metrics=omit_raw_metrics),
        updates_only=updates_only,
        suppress_unchanged=suppress_unchanged,
    )
    if interval:
        request.interval.CopyFrom(_duration(interval))
    if heartbeat:
        request.heartbeat_interval.CopyFrom(_duration(heartbeat))
    return request


class CollectorClient:
    """A connection to a collector at ``address`` (``host:port``).

    ``max_reconnect_backoff`` bounds how long the channel waits between connection attempts
    to a collector that is gone (gRPC's own default grows to 120 s, far longer than a Watch
    consumer wants to stay blind after the collector comes back).

    ``token`` is sent as ``authorization: Bearer <token>`` on every call (health included).
    The channel is plaintext unless ``tls`` is true or a TLS file is given:
    ``root_certificates`` (PEM bytes of the CA that signed the server's certificate; None:
    the system's roots), and for mutual TLS ``certificate_chain`` and ``private_key`` (PEM
    bytes of the client's certificate and key).
    """

    def __init__(
        self,
        address: str,
        *,
        max_reconnect_backoff: float = 10.0,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
    ) -> None:
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key go together (mutual TLS)")
        if token is not None and not (token and all("!" <= char <= "~" for char in token)):
            raise ValueError("token must be non-empty printable ASCII without spaces")
        self.address = address
        self._metadata: tuple[tuple[str, str], ...] = (
            () if token is None else (("authorization", f"Bearer {token}"),)
        )
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", max(100, round(max_reconnect_backoff * 1000))),
        ]
        if tls or root_certificates is not None or certificate_chain is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        # The generated _pb2_grpc module has no type annotations (protoc writes none for it).
        self._stub = collector_pb2_grpc.CollectorServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def collect(
        self,
        endpoint: str,
        *,
        instance_id: str = "",
        omit_raw_metrics: bool = True,
        timeout: float | None = 30.0,
    ) -> snapshot_pb2.Snapshot:
        """Scrape ``endpoint`` through the collector now; raises ``grpc.aio.AioRpcError``."""
        request = collector_pb2.CollectRequest(
            target=collector_pb2.Target(instance_id=instance_id, endpoint=endpoint),
            options=collector_pb2.ScrapeOptions(omit_raw_metrics=omit_raw_metrics),
        )
        response = await self._stub.Collect(request, timeout=timeout, metadata=self._metadata)
        snapshot: snapshot_pb2.Snapshot = response.snapshot
        return snapshot

    async def watch(
        self,
        endpoints: Sequence[str | tuple[str, str]],
        *,
        interval: float = 0.0,
        omit_raw_metrics: bool = True,
        updates_only: bool = False,
        suppress_unchanged: bool = False,
        heartbeat: float = 0.0,
        resubscribe: bool = True,
        max_backoff: float = 30.0,
        stop_on: frozenset[grpc.StatusCode] = NON_RETRYABLE_CODES,
        on_retry: RetryCallback | None = None,
    ) -> AsyncGenerator[collector_pb2.WatchResponse, None]:
        """Watch ``endpoints`` (URLs, or ``(instance_id, url)`` pairs); yields every message.

        The messages are the stream's ``WatchResponse``: snapshots, the sync marker, heartbeats.
        When the stream ends cleanly (OK: the server drained) or with a status not in
        ``stop_on`` (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, INTERNAL, ...), the
        iterator resubscribes after a backoff: uniform in ``[0, min(max_backoff, 0.1 s *
        2**attempt)]``, with ``attempt`` back to 0 once a stream delivered a message.
        ``on_retry`` hears about each retry. A status in ``stop_on`` raises
        ``grpc.aio.AioRpcError``. With ``resubscribe=False`` a clean end ends the iteration
        and any other status raises.

        With ``heartbeat`` set, a stream silent for three heartbeat intervals is presumed dead
        (half-open connection) and replaced, as if it had ended with DEADLINE_EXCEEDED.

        Cancelling the consuming task, or closing the iterator (``aclose()``, leaving an
        ``async with contextlib.aclosing(...)``), cancels the call at once. An iterator that is
        merely abandoned keeps its call open until it is garbage collected: close it.
        """
        request = watch_request(
            endpoints,
            interval=interval,
            omit_raw_metrics=omit_raw_metrics,
            updates_only=updates_only,
            suppress_unchanged=suppress_unchanged,
            heartbeat=heartbeat,
        )
        silence = _SILENT_HEARTBEATS * heartbeat if heartbeat > 0 else None
        attempt = 0
        while True:
            received = False
            call = self._stub.Watch(request, metadata=self._metadata)
            try:
                while True:
                    async with asyncio.timeout(silence):
                        response = await call.read()
                    if response is grpc.aio.EOF:
                        break
                    received = True
                    yield response
                code, details = grpc.StatusCode.OK, "stream ended"
                error: grpc.aio.AioRpcError | None = None
            except grpc.aio.AioRpcError as exc:
                code, details, error = exc.code(), exc.details() or "", exc
            except TimeoutError:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                details = f"no message for {silence:g} s (heartbeat {heartbeat:g} s)"
                error = grpc.aio.AioRpcError(
                    code, grpc.aio.Metadata(), grpc.aio.Metadata(), details
                )
            finally:
                # Idempotent; after an end it does nothing, after a cancel or an aclose() it
                # releases the server's subscription now rather than at garbage collection.
                call.cancel()
            if error is not None and (code in stop_on or not resubscribe):
                raise error
            if not resubscribe:
                return
            if received:
                attempt = 0
            delay = backoff_delay(attempt, max_backoff=max_backoff)
            attempt += 1
            logger.info(
                "watch of %d target(s) on %s ended (%s: %s); resubscribing in %.2f s",
                len(request.targets), self.address, code.name, details, delay,
            )  # fmt: skip
            if on_retry is not None:
                on_retry(code, details, delay)
            await asyncio.sleep(delay)

    async def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The serving status name from the standard health service, e.g. ``"SERVING"``."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        response = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, metadata=self._metadata
        )
        status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return status

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> CollectorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
