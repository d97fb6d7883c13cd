"""Human-readable renderings of snapshots and expositions for the command line."""

from __future__ import annotations

from collections import Counter

from tgi_collector.metrics import Exposition
from tgi_collector.snapshot import Snapshot
from tgi_collector.tgi import HistogramSummary

__all__ = ["format_exposition", "format_snapshot"]

# Latency histograms worth a line in the summary, in the order a reader scans them.
_LATENCY_FAMILIES = (
    ("request", "tgi_request_duration"),
    ("validation", "tgi_request_validation_duration"),
    ("queue", "tgi_request_queue_duration"),
    ("inference", "tgi_request_inference_duration"),
    ("per token", "tgi_request_mean_time_per_token_duration"),
)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.3f} s"


def _unlabelled(summaries: tuple[HistogramSummary, ...], family: str) -> HistogramSummary | None:
    for summary in summaries:
        if summary.family == family and not summary.labels:
            return summary
    return None


def format_snapshot(snapshot: Snapshot) -> str:
    """A few lines a person can read at a glance: health, counters, latencies, tokens."""
    stats = snapshot.stats
    state = "UP" if snapshot.up else "DOWN"
    lines = [
        f"{snapshot.instance_id}  {state}"
        + ("" if snapshot.instance_id == snapshot.endpoint else f"  {snapshot.endpoint}"),
        f"  scraped {snapshot.timestamp:%Y-%m-%d %H:%M:%S} UTC"
        f" in {_seconds(stats.duration_seconds)}, {stats.body_bytes:,} bytes,"
        f" {stats.samples:,} samples",
    ]
    if snapshot.error is not None:
        status = f" (HTTP {snapshot.error.http_status})" if snapshot.error.http_status else ""
        lines.append(f"  error: {snapshot.error.kind.value}{status}: {snapshot.error.message}")
    if snapshot.model is not None and snapshot.model.model_id:
        model = snapshot.model
        lines.append(
            f"  model: {model.model_id}  TGI {model.version or '?'}"
            f"  max input/total tokens {model.max_input_tokens}/{model.max_total_tokens}"
        )
    view = snapshot.view
    if view is None:
        return "\n".join(lines)
    request = view.request
    by_err = ", ".join(f"{err} {_num(n)}" for err, n in sorted(request.failures_by_err.items()))
    lines.append(
        f"  requests: success {_num(request.success_total)}"
        f"  failure {_num(request.failure_total)}{f' ({by_err})' if by_err else ''}"
        f"  count {_num(request.request_count)}  queue {_num(request.queue_size)}"
    )
    generation = view.generation
    lines.append(
        f"  tokens: input mean {_num(generation.input_length)}"
        f"  generated mean {_num(generation.generated_tokens)}"
        f"  generated total {_num(generation.generated_tokens_total)}"
        f"  batch size {_num(generation.batch_current_size)}"
        f"  batch max tokens {_num(generation.batch_current_max_tokens)}"
    )
    rows = [
        (label, summary)
        for label, family in _LATENCY_FAMILIES
        if (summary := _unlabelled(view.histograms, family)) is not None
    ]
    if rows:
        lines.append(f"  {'latency':<12}{'count':>10}{'mean':>12}{'p50':>12}{'p90':>12}{'p99':>12}")
        for label, summary in rows:
            lines.append(
                f"  {label:<12}{_num(summary.count):>10}{_seconds(summary.mean):>12}"
                f"{_seconds(summary.p50):>12}{_seconds(summary.p90):>12}{_seconds(summary.p99):>12}"
            )
    return "\n".join(lines)


def format_exposition(exposition: Exposition) -> str:
    """Families by type and the number of samples, then one line per family."""
    types = Counter(family.type.value for family in exposition)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(types.items()))
    lines = [f"{len(exposition)} families ({summary or 'none'}), {exposition.sample_count} samples"]
    for family in exposition:
        lines.append(f"  {family.name:<48} {family.type.value:<10} {len(family.samples):>6}")
    return "\n".join(lines)
