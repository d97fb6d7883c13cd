"""The collector's own metrics (``prometheus_client``), an RPC interceptor, and their HTTP port.

Every :class:`~tgi_collector.server.CollectorServer` has a :class:`SelfMetrics` with a registry of
its own (several servers may live in one process), served over HTTP on ``metrics_listen`` when
that is set and otherwise just kept. Only this module imports ``prometheus_client``: the scraper
and the hub stay free of it (the scraper is told of each scrape through
:class:`~tgi_collector.scraper.ScrapeRecorder`; the hub's counts are read at collection time).

Series (``target`` is the URL without user information, query or fragment, at most
:data:`MAX_TARGET_LABELS` distinct values, the rest counted as ``other``; ``outcome`` is ``ok``
or the error kind, ``connect``, ``timeout``, ``http_status``, ...)::

    tgi_collector_scrapes_total{target, outcome}            counter
    tgi_collector_scrape_duration_seconds{outcome}          histogram, 1 ms .. 10 s
    tgi_collector_scrape_loops                              gauge
    tgi_collector_watch_subscribers                         gauge
    tgi_collector_watch_coalesced_snapshots_total           counter
    tgi_collector_rpcs_total{method, code}                  counter, code as the client sees it
    tgi_collector_rpc_duration_seconds{method}              histogram, unary calls only
    tgi_collector_build_info{version}                       always 1
    process_*, python_info, python_gc_*                     prometheus_client's collectors
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tgi_collector._metrics_http import MetricsHttpServer
from tgi_collector._version import __version__
from tgi_collector.errors import ScrapeErrorKind
from tgi_collector.hub import Hub
from tgi_collector.targets import redacted_url

__all__ = [
    "MAX_TARGET_LABELS",
    "OTHER",
    "MetricsHttpServer",
    "MetricsInterceptor",
    "SelfMetrics",
    "method_names",
]

logger = logging.getLogger(__name__)

#: Distinct ``target`` label values at most: callers may Collect any URL they like.
MAX_TARGET_LABELS = 1_000
#: The label value of targets past the cap and of methods no service registered.
OTHER = "other"
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# (raw URL, outcome) -> counter child: the per-scrape hook is two dictionary lookups.
_MAX_CACHED_CHILDREN = 4 * MAX_TARGET_LABELS


class _HubCollector(Collector):
    """The hub's counts, read when the registry is collected (from the HTTP thread)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterable[Metric]:
        hub = self._hub
        yield GaugeMetricFamily(
            "tgi_collector_scrape_loops",
            "Running Watch scrape loops (one per target, interval and options).",
            value=hub.loop_count,
        )
        yield GaugeMetricFamily(
            "tgi_collector_watch_subscribers",
            "Open Watch subscriptions.",
            value=hub.subscriber_count,
        )
        yield CounterMetricFamily(
            "tgi_collector_watch_coalesced_snapshots",
            "Snapshots a slow Watch subscriber never got because a newer one replaced them.",
            value=hub.coalesced_total,
        )

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class SelfMetrics:
    """The metrics of one collector, on a registry of their own (:attr:`registry`).

    Is the scraper's :class:`~tgi_collector.scraper.ScrapeRecorder`; :meth:`watch_hub` adds the
    hub's gauges; :meth:`interceptor` makes the RPC counting interceptor. With ``listen``
    (``host:port``; ValueError when malformed) :meth:`start` serves them over HTTP there.
    """

    def __init__(self, listen: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.http = None if listen is None else MetricsHttpServer(self.registry, listen)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("tgi_collector_build", "The collector's version.", registry=self.registry).info(
            {"version": __version__}
        )
        self._scrapes = Counter(
            "tgi_collector_scrapes",
            "Scrapes of targets (Collect and Watch) by target and outcome (ok or the error kind).",
            ["target", "outcome"],
            registry=self.registry,
        )
        self._scrape_seconds = Histogram(
            "tgi_collector_scrape_duration_seconds",
            "How long scrapes took (request, body and parse), by outcome.",
            ["outcome"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._rpcs = Counter(
            "tgi_collector_rpcs",
            "gRPC calls handled, by method and the status code the client got.",
            ["method", "code"],
            registry=self.registry,
        )
        self._rpc_seconds = Histogram(
            "tgi_collector_rpc_duration_seconds",
            "How long unary gRPC calls took, by method.",
            ["method"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._targets: set[str] = set()
        self._scrape_children: dict[tuple[str, str], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._outcomes = {None: "ok"} | {kind: kind.value for kind in ScrapeErrorKind}

    @property
    def port(self) -> int | None:
        """The bound HTTP port while serving; None when not served."""
        return None if self.http is None else self.http.port

    def start(self) -> None:
        """Serve over HTTP, if ``listen`` was given (OSError naming it when it cannot bind)."""
        if self.http is not None:
            self.http.start()

    def close(self) -> None:
        """Stop serving over HTTP (idempotent)."""
        if self.http is not None:
            self.http.close()

    def watch_hub(self, hub: Hub) -> None:
        """Expose ``hub``'s loops, subscribers and coalesced snapshots."""
        self.registry.register(_HubCollector(hub))

    def interceptor(self, methods: Collection[str]) -> MetricsInterceptor:
        """An interceptor counting every call; ``methods`` (``/pkg.Service/Method``) are the
        method label values allowed, anything else is ``other``."""
        return MetricsInterceptor(self, methods)

    def scraped(self, url: str, error: ScrapeErrorKind | None, seconds: float) -> None:
        """:class:`~tgi_collector.scraper.ScrapeRecorder`: count one scrape."""
        outcome = self._outcomes[error]
        child = self._scrape_children.get((url, outcome))
        if child is None:
            child = self._scrapes.labels(self._target_label(url), outcome)
            if len(self._scrape_children) < _MAX_CACHED_CHILDREN:
                self._scrape_children[url, outcome] = child
        child.inc()
        durations = self._duration_children.get(outcome)
        if durations is None:
            durations = self._duration_children[outcome] = self._scrape_seconds.labels(outcome)
        durations.observe(seconds)

    def _target_label(self, url: str) -> str:
        label = redacted_url(url)
        if label in self._targets:
            return label
        if len(self._targets) >= MAX_TARGET_LABELS:
            return OTHER
        self._targets.add(label)
        return label

    def rpc_done(self, method: str, code: str, seconds: float | None) -> None:
        """Count one call; ``seconds`` for unary calls (None: not timed)."""
        self._rpcs.labels(method, code).inc()
        if seconds is not None:
            self._rpc_seconds.labels(method).observe(seconds)


def method_names(*services: Any) -> frozenset[str]:
    """``/pkg.Service/Method`` of every method of the given service descriptors."""
    return frozenset(
        f"/{service.full_name}/{method.name}" for service in services for method in service.methods
    )


def _code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    """The status code name the client gets when a handler ended with ``exc`` (None: returned)."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = context.code()
    if code is None or code == grpc.StatusCode.OK:
        # An exception without a status set is UNKNOWN for the client (gRPC's rule).
        return "OK" if exc is None else "UNKNOWN"
    return str(getattr(code, "name", code))


_Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
_BEHAVIORS = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every call by method and the status code its client gets.

    Put it first in the server's interceptors so that it wraps what the others return: a call
    the bearer-token interceptor refuses is counted as ``UNAUTHENTICATED``. Calls of methods
    no service has (``UNIMPLEMENTED`` from gRPC itself, without a handler) are not counted,
    nor calls gRPC refuses before any handler runs (a request over the size limit).
    """

    def __init__(self, metrics: SelfMetrics, methods: Collection[str]) -> None:
        self._metrics = metrics
        self._methods = frozenset(methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        label = method.lstrip("/") if method in self._methods else OTHER
        return self._wrap(handler, label)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        shape = (bool(handler.request_streaming), bool(handler.response_streaming))
        behavior: _Behavior = getattr(handler, _BEHAVIORS[shape])
        done = self._metrics.rpc_done
        unary = shape == (False, False)
        clock = asyncio.get_running_loop().time

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as exc:
                    done(method, _code(context, exc), None)
                    raise
                done(method, _code(context, None), None)

            wrapped: _Behavior = stream
        elif inspect.iscoroutinefunction(behavior):

            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = clock()
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    done(method, _code(context, exc), clock() - started if unary else None)
                    raise
                done(method, _code(context, None), clock() - started if unary else None)
                return response

            wrapped = call
        else:
            return handler  # a synchronous handler (none here) runs in an executor: not counted
        return _FACTORIES[shape](
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
