"""Conversion between the domain dataclasses and the ``tgi_collector.v1`` protobuf messages.

Protobuf stays at the edges: besides the server, this is the only module that touches the
generated code. Requests are read and validated into :class:`~tgi_collector.targets.Target`
and :class:`~tgi_collector.targets.ScrapeOptions`; snapshots are written out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from google.protobuf import duration_pb2, json_format

from tgi_collector.errors import CapacityError, InvalidRequestError, ScrapeErrorKind
from tgi_collector.metrics import Labels, MetricFamily, MetricType, SummarySeries
from tgi_collector.registry import TargetRegistry
from tgi_collector.snapshot import Snapshot
from tgi_collector.targets import (
    DEFAULT_TIMEOUT_SECONDS,
    ScrapeOptions,
    Target,
    WatchSpec,
    validate_options,
)
from tgi_collector.tgi import (
    BatchMetrics,
    GenerationMetrics,
    HistogramSummary,
    ModelInfo,
    RequestMetrics,
)
from tgi_collector.v1 import collector_pb2, snapshot_pb2
from tgi_collector.window import Window

__all__ = [
    "WatchLimits",
    "collect_request_from_proto",
    "duration_seconds",
    "encode_watch_snapshot",
    "families_to_proto",
    "histogram_summaries_to_proto",
    "options_from_proto",
    "snapshot_to_json",
    "snapshot_to_proto",
    "target_from_proto",
    "watch_request_from_proto",
    "watch_response_bytes",
]

_ERROR_KINDS: Mapping[ScrapeErrorKind, snapshot_pb2.ErrorKind] = {
    ScrapeErrorKind.CONNECT: snapshot_pb2.ERROR_KIND_CONNECT,
    ScrapeErrorKind.TIMEOUT: snapshot_pb2.ERROR_KIND_TIMEOUT,
    ScrapeErrorKind.HTTP_STATUS: snapshot_pb2.ERROR_KIND_HTTP_STATUS,
    ScrapeErrorKind.BODY_TOO_LARGE: snapshot_pb2.ERROR_KIND_BODY_TOO_LARGE,
    ScrapeErrorKind.TOO_MANY_SAMPLES: snapshot_pb2.ERROR_KIND_TOO_MANY_SAMPLES,
    ScrapeErrorKind.PARSE: snapshot_pb2.ERROR_KIND_PARSE,
    ScrapeErrorKind.PROTOCOL: snapshot_pb2.ERROR_KIND_PROTOCOL,
    ScrapeErrorKind.DENIED: snapshot_pb2.ERROR_KIND_DENIED,
}

_METRIC_TYPES: Mapping[MetricType, snapshot_pb2.MetricType] = {
    MetricType.COUNTER: snapshot_pb2.METRIC_TYPE_COUNTER,
    MetricType.GAUGE: snapshot_pb2.METRIC_TYPE_GAUGE,
    MetricType.HISTOGRAM: snapshot_pb2.METRIC_TYPE_HISTOGRAM,
    MetricType.SUMMARY: snapshot_pb2.METRIC_TYPE_SUMMARY,
    MetricType.UNTYPED: snapshot_pb2.METRIC_TYPE_UNTYPED,
}


# -- requests ---------------------------------------------------------------------------------


def duration_seconds(duration: duration_pb2.Duration, *, field: str) -> float:
    """Seconds of a ``google.protobuf.Duration``; negative or malformed is INVALID_ARGUMENT."""
    if duration.seconds < 0 or duration.nanos < 0 or duration.nanos >= 1_000_000_000:
        raise InvalidRequestError(field, "must be a non-negative duration")
    return duration.seconds + duration.nanos / 1e9


# No registered targets, any URL: what a caller without a registry gets.
_OPEN_REGISTRY = TargetRegistry()


def target_from_proto(
    target: collector_pb2.Target,
    *,
    field: str = "target",
    registry: TargetRegistry | None = None,
) -> Target:
    """Validate a ``Target`` message, resolving registered targets through ``registry``.

    An empty endpoint names the registered target of the instance id. In registered-only mode
    anything not registered raises :class:`~tgi_collector.errors.TargetDeniedError`.
    """
    return (registry or _OPEN_REGISTRY).resolve(target.instance_id, target.endpoint, field=field)


def options_from_proto(
    options: collector_pb2.ScrapeOptions, *, field: str = "options"
) -> ScrapeOptions:
    """Validate a ``ScrapeOptions`` message; zero values become the defaults."""
    return validate_options(
        timeout_seconds=duration_seconds(options.timeout, field=f"{field}.timeout"),
        max_body_bytes=options.max_body_bytes,
        max_samples=options.max_samples,
        fetch_info=not options.skip_info,
        include_raw_metrics=not options.omit_raw_metrics,
        field=field,
    )


def collect_request_from_proto(
    request: collector_pb2.CollectRequest, *, registry: TargetRegistry | None = None
) -> tuple[Target, ScrapeOptions]:
    """Validate a ``CollectRequest`` (``registry``: as in :func:`target_from_proto`)."""
    if not request.HasField("target"):
        raise InvalidRequestError("target", "is required")
    target = target_from_proto(request.target, registry=registry)
    return target, options_from_proto(request.options)


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """The server's bounds on Watch requests (see ``ServerConfig``)."""

    default_interval_seconds: float = 5.0
    min_interval_seconds: float = 1.0
    max_interval_seconds: float = 3600.0
    max_targets: int = 1_000


def watch_request_from_proto(
    request: collector_pb2.WatchRequest,
    limits: WatchLimits,
    *,
    registry: TargetRegistry | None = None,
) -> WatchSpec:
    """Validate a ``WatchRequest`` (``registry``: as in :func:`target_from_proto`).

    Raises :class:`InvalidRequestError` for a malformed field, :class:`CapacityError` for
    more targets than the server allows in one stream, and
    :class:`~tgi_collector.errors.TargetDeniedError` for a target refused in registered-only
    mode.
    """
    if not request.targets:
        raise InvalidRequestError("targets", "at least one target is required")
    if len(request.targets) > limits.max_targets:
        raise CapacityError(f"targets: at most {limits.max_targets} targets per stream")
    targets = tuple(
        target_from_proto(target, field=f"targets[{index}]", registry=registry)
        for index, target in enumerate(request.targets)
    )
    interval = duration_seconds(request.interval, field="interval")
    if interval == 0:
        interval = limits.default_interval_seconds
    elif not limits.min_interval_seconds <= interval <= limits.max_interval_seconds:
        raise InvalidRequestError(
            "interval",
            f"must be between {limits.min_interval_seconds:g} s and"
            f" {limits.max_interval_seconds:g} s"
            f" (0 = default {limits.default_interval_seconds:g} s)",
        )
    timeout = duration_seconds(request.options.timeout, field="options.timeout")
    if timeout > interval:
        raise InvalidRequestError(
            "options.timeout", f"must not exceed the interval ({interval:g} s)"
        )
    heartbeat = duration_seconds(request.heartbeat_interval, field="heartbeat_interval")
    if heartbeat and not limits.min_interval_seconds <= heartbeat <= limits.max_interval_seconds:
        raise InvalidRequestError(
            "heartbeat_interval",
            f"must be between {limits.min_interval_seconds:g} s and"
            f" {limits.max_interval_seconds:g} s (0 = no heartbeats)",
        )
    options = options_from_proto(request.options)
    if timeout == 0:
        # The default deadline shrinks to the interval so that scrapes never overlap.
        options = replace(options, timeout_seconds=min(DEFAULT_TIMEOUT_SECONDS, interval))
    return WatchSpec(
        targets=tuple(dict.fromkeys(targets)),
        interval_seconds=interval,
        options=options,
        updates_only=request.updates_only,
        suppress_unchanged=request.suppress_unchanged,
        heartbeat_seconds=heartbeat or None,
    )


# -- snapshots --------------------------------------------------------------------------------


def _fill_labels(into: Mapping[str, str], labels: Labels) -> None:
    # Protobuf map fields behave like dicts; a label repeated on the wire keeps its last value.
    into.update(labels)  # type: ignore[attr-defined]


def _request_metrics(metrics: RequestMetrics) -> snapshot_pb2.RequestMetrics:
    message = snapshot_pb2.RequestMetrics(
        success_total=metrics.success_total,
        failure_total=metrics.failure_total,
        failures_by_err=dict(metrics.failures_by_err),
        request_count=metrics.request_count,
        queue_size=metrics.queue_size,
    )
    _set_optional(message, "mean_time_per_token_seconds", metrics.mean_time_per_token_seconds)
    _set_optional(message, "validation_duration_seconds", metrics.validation_duration_seconds)
    _set_optional(message, "queue_duration_seconds", metrics.queue_duration_seconds)
    _set_optional(message, "inference_duration_seconds", metrics.inference_duration_seconds)
    _set_optional(message, "request_duration_seconds", metrics.request_duration_seconds)
    return message


def _summary_value(series: SummarySeries) -> snapshot_pb2.SummaryValue:
    return snapshot_pb2.SummaryValue(
        quantiles=[
            snapshot_pb2.QuantileValue(quantile=q.quantile, value=q.value) for q in series.quantiles
        ],
        count=series.count or 0.0,
        sum=series.sum or 0.0,
    )


def _generation_metrics(metrics: GenerationMetrics) -> snapshot_pb2.GenerationMetrics:
    message = snapshot_pb2.GenerationMetrics(
        generated_tokens_total=metrics.generated_tokens_total,
        input_tokens_total=metrics.input_tokens_total,
        batch_current_size=metrics.batch_current_size,
        batch_current_max_tokens=metrics.batch_current_max_tokens,
    )
    _set_optional(message, "input_length", metrics.input_length)
    _set_optional(message, "generated_tokens", metrics.generated_tokens)
    _set_optional(message, "max_new_tokens", metrics.max_new_tokens)
    if metrics.skipped_tokens is not None:
        message.skipped_tokens.CopyFrom(_summary_value(metrics.skipped_tokens))
    return message


def _batch_metrics(metrics: BatchMetrics) -> snapshot_pb2.BatchMetrics:
    return snapshot_pb2.BatchMetrics(
        inference_count_by_method=dict(metrics.inference_count_by_method),
        inference_success_by_method=dict(metrics.inference_success_by_method),
        inference_failure_by_method=dict(metrics.inference_failure_by_method),
        concat_by_reason=dict(metrics.concat_by_reason),
    )


def histogram_summaries_to_proto(
    summaries: Iterable[HistogramSummary],
) -> list[snapshot_pb2.HistogramSummary]:
    """``HistogramSummary`` messages; Watch reuses this for window quantiles."""
    messages = []
    for summary in summaries:
        message = snapshot_pb2.HistogramSummary(
            family=summary.family, count=summary.count, sum=summary.sum
        )
        _fill_labels(message.labels, summary.labels)
        _set_optional(message, "mean", summary.mean)
        _set_optional(message, "p50", summary.p50)
        _set_optional(message, "p90", summary.p90)
        _set_optional(message, "p95", summary.p95)
        _set_optional(message, "p99", summary.p99)
        messages.append(message)
    return messages


def _family(family: MetricFamily) -> snapshot_pb2.MetricFamily:
    message = snapshot_pb2.MetricFamily(
        name=family.name, type=_METRIC_TYPES[family.type], help=family.help or ""
    )
    if family.type is MetricType.HISTOGRAM:
        for series in family.histograms:
            out = message.histograms.add(count=series.count or 0.0, sum=series.sum or 0.0)
            _fill_labels(out.labels, series.labels)
            out.buckets.extend(
                snapshot_pb2.Bucket(upper_bound=b.upper_bound, cumulative_count=b.cumulative_count)
                for b in series.buckets
            )
    elif family.type is MetricType.SUMMARY:
        for summary in family.summaries:
            out_summary = message.summaries.add(value=_summary_value(summary))
            _fill_labels(out_summary.labels, summary.labels)
    else:
        for sample in family.samples:
            out_sample = message.samples.add(name=sample.name, value=sample.value)
            _fill_labels(out_sample.labels, sample.labels)
            if sample.timestamp_ms is not None:
                out_sample.timestamp_ms = sample.timestamp_ms
    return message


def families_to_proto(families: Iterable[MetricFamily]) -> list[snapshot_pb2.MetricFamily]:
    """``MetricFamily`` messages of parsed families (``raw_metrics``, ``parse --json``)."""
    return [_family(family) for family in families]


def _model_info(info: ModelInfo) -> snapshot_pb2.ModelInfo:
    return snapshot_pb2.ModelInfo(
        model_id=info.model_id,
        model_sha=info.model_sha,
        model_dtype=info.model_dtype,
        version=info.version,
        max_input_tokens=max(0, info.max_input_tokens),
        max_total_tokens=max(0, info.max_total_tokens),
        max_concurrent_requests=max(0, info.max_concurrent_requests),
    )


def _set_optional(message: object, name: str, value: float | None) -> None:
    # Proto3 `optional` fields: leaving them unset is how "unknown" travels (absent in JSON).
    if value is not None:
        setattr(message, name, value)


def _window(window: Window) -> snapshot_pb2.Window:
    message = snapshot_pb2.Window(
        success_rate=window.success_rate,
        failure_rate=window.failure_rate,
        failure_rate_by_err=dict(window.failure_rate_by_err),
        request_rate=window.request_rate,
        generated_tokens_rate=window.generated_tokens_rate,
        input_tokens_rate=window.input_tokens_rate,
        histograms=histogram_summaries_to_proto(window.histograms),
        counter_reset=window.counter_reset,
    )
    message.duration.FromNanoseconds(round(window.duration_seconds * 1e9))
    return message


def snapshot_to_proto(snapshot: Snapshot) -> snapshot_pb2.Snapshot:
    """The ``Snapshot`` message of a domain snapshot."""
    message = snapshot_pb2.Snapshot(
        instance_id=snapshot.instance_id,
        endpoint=snapshot.endpoint,
        health=snapshot_pb2.HEALTH_UP if snapshot.up else snapshot_pb2.HEALTH_DOWN,
    )
    message.timestamp.FromDatetime(snapshot.timestamp)
    message.stats.duration.FromNanoseconds(round(snapshot.stats.duration_seconds * 1e9))
    message.stats.body_bytes = snapshot.stats.body_bytes
    message.stats.samples = snapshot.stats.samples
    if snapshot.error is not None:
        message.error.kind = _ERROR_KINDS[snapshot.error.kind]
        message.error.message = snapshot.error.message
        message.error.http_status = snapshot.error.http_status or 0
    if snapshot.view is not None:
        message.request_metrics.CopyFrom(_request_metrics(snapshot.view.request))
        message.generation_metrics.CopyFrom(_generation_metrics(snapshot.view.generation))
        message.batch_metrics.CopyFrom(_batch_metrics(snapshot.view.batch))
        message.histograms.extend(histogram_summaries_to_proto(snapshot.view.histograms))
    if snapshot.exposition is not None:
        message.raw_metrics.extend(families_to_proto(snapshot.exposition))
    if snapshot.model is not None:
        message.model_info.CopyFrom(_model_info(snapshot.model))
    if snapshot.window is not None:
        message.window.CopyFrom(_window(snapshot.window))
    return message


# -- Watch responses as bytes -----------------------------------------------------------------
# Watch sends pre-serialized ``WatchResponse`` bytes: a tick's snapshot is encoded once and the
# same bytes go to every subscriber. Protobuf parses concatenated encodings as a merge, so the
# per-subscriber ``coalesced`` count is appended to the shared bytes rather than re-encoding.

_SYNC_BYTES = collector_pb2.WatchResponse(sync=collector_pb2.SyncMarker()).SerializeToString()
_HEARTBEAT_BYTES = collector_pb2.WatchResponse(
    heartbeat=collector_pb2.Heartbeat()
).SerializeToString()


def encode_watch_snapshot(snapshot: Snapshot) -> bytes:
    """A ``WatchResponse`` carrying ``snapshot``, serialized (done once per tick)."""
    return collector_pb2.WatchResponse(snapshot=snapshot_to_proto(snapshot)).SerializeToString()


def watch_response_bytes(kind: str, payload: bytes = b"", coalesced: int = 0) -> bytes:
    """The bytes of one Watch message: ``kind`` is ``snapshot``, ``sync`` or ``heartbeat``."""
    if kind == "snapshot":
        head = payload
    elif kind == "sync":
        head = _SYNC_BYTES
    else:
        head = _HEARTBEAT_BYTES
    if coalesced:
        return head + collector_pb2.WatchResponse(coalesced=coalesced).SerializeToString()
    return head


def snapshot_to_json(message: snapshot_pb2.Snapshot, *, indent: int | None = 2) -> str:
    """The protobuf JSON mapping of a snapshot, with proto field names (as grpcurl shows them)."""
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, indent=indent, sort_keys=False
    )
