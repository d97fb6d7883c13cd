"""The ``CollectorService`` handlers, and how their errors become gRPC status codes.

Why it is separate: :mod:`tgi_collector.server` assembles and runs the server (credentials,
interceptors, health, reflection, start and drain); this module is what one Collect or Watch
call does, from request bytes to the status it ends with. The mapping of errors to status codes
is documented in :mod:`tgi_collector.server`, which re-exports :data:`SERVICE_NAME`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from tgi_collector import _limits, convert
from tgi_collector._server_config import ServerConfig
from tgi_collector.errors import CapacityError, InvalidRequestError, TargetDeniedError
from tgi_collector.hub import EventKind, Hub, Subscription
from tgi_collector.policy import DENIED_MESSAGE
from tgi_collector.registry import TargetRegistry
from tgi_collector.scraper import Scraper
from tgi_collector.v1 import collector_pb2

__all__ = ["SERVICE_NAME", "CollectorServicer", "add_service"]

# The server's logger: these lines are about its calls.
logger = logging.getLogger("tgi_collector.server")

SERVICE_NAME: str = collector_pb2.DESCRIPTOR.services_by_name["CollectorService"].full_name


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


_EVENT_KINDS = {
    EventKind.SNAPSHOT: "snapshot",
    EventKind.SYNC: "sync",
    EventKind.HEARTBEAT: "heartbeat",
}


class CollectorServicer:
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


def add_service(server: grpc.aio.Server, servicer: CollectorServicer) -> None:
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
