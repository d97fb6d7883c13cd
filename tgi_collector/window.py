"""The window between two scrapes of one target: rates and quantiles of what happened in it.

Watch keeps, per target, the previous successful exposition and reports the interval since:
request, failure and token rates per second from counter deltas, and p50/p90/p95/p99 from
histogram bucket deltas (the README's "Watch semantics"). Pure domain code: no I/O, no protobuf;
:class:`Window` maps one-to-one onto the ``Window`` message.

Counters follow Prometheus' reset rule: a counter that went down was restarted, so its
increase is its new value, and the window says so (``counter_reset``). Absent means zero, as
everywhere in the TGI view: a series that vanished went down to 0 (TGI drops series only when
it restarts, and serves an empty body until its first request). Nothing in a window is ever
negative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tgi_collector import tgi
from tgi_collector.metrics import (
    Exposition,
    HistogramSeries,
    Labels,
    MetricType,
)

# The view's read-only mapping, so that a Window is hashable like the rest of the domain model.
from tgi_collector.tgi import FrozenMapping, HistogramSummary

__all__ = ["Window", "compute_window"]


@dataclass(frozen=True, slots=True)
class Window:
    """What one target did between two scrapes.

    Rates are per second over ``duration_seconds``; they are 0 when the duration is not a
    positive finite number (it is then reported as 0). ``request_rate`` is successes plus
    failures, not ``tgi_request_count``, which TGI double counts for OpenAI-route and Vertex
    requests. ``histograms`` summarize the bucket deltas of every histogram series of the
    current exposition, in its order; a series without observations in the window has count
    0 and None mean and quantiles. ``counter_reset`` is True when some counter, or some
    histogram count, bucket or sum, went down: the target restarted inside the window.
    """

    duration_seconds: float
    success_rate: float
    failure_rate: float
    failure_rate_by_err: Mapping[str, float]
    request_rate: float
    generated_tokens_rate: float
    input_tokens_rate: float
    histograms: tuple[HistogramSummary, ...]
    counter_reset: bool


def _increase(previous: float, current: float) -> tuple[float, bool]:
    """Increase of a counter and whether it was reset (Prometheus: a decrease is a restart)."""
    if current < previous:
        return max(current, 0.0), True
    delta = current - previous
    # NaN (a NaN sample, inf - inf) carries no usable increase, and a rate must be >= 0.
    return (delta if delta >= 0 else 0.0), False


_SeriesKey = tuple[str, Labels]


def _key(family: str, labels: Labels) -> _SeriesKey:
    # Label order may differ between scrapes of the same series.
    return family, tuple(sorted(labels))


def _histogram_series(exposition: Exposition) -> dict[_SeriesKey, HistogramSeries]:
    """Every histogram series of ``exposition`` by family and label set, in wire order."""
    found: dict[_SeriesKey, HistogramSeries] = {}
    for family in exposition:
        if family.type is not MetricType.HISTOGRAM:
            continue
        for series in tgi.histogram_series(family):
            found.setdefault(_key(family.name, series.labels), series)
    return found


def _went_down(previous: float | None, current: float | None) -> bool:
    return previous is not None and current is not None and current < previous


def _minus(current: float | None, previous: float | None) -> float | None:
    # A field absent before counted nothing yet: its delta is its current value.
    if current is None or previous is None:
        return current
    return current - previous


_Delta = tuple[list[float], list[float], float | None, float | None]
"""A series' window: its bounds, per-bucket count deltas, ``_count`` and ``_sum`` deltas."""


def _series_delta(
    previous: HistogramSeries | None, current: HistogramSeries
) -> tuple[_Delta | None, bool]:
    """The observations ``current`` added since ``previous``, and whether the series reset.

    A series new in ``current`` counts from zero: its deltas are its values, without a reset.
    A changed bucket layout, or any bucket, ``_count`` or ``_sum`` that went down, means the
    series restarted: its deltas are then its current values as a whole, because mixing
    counts of two lifetimes (or of two layouts) would describe no real distribution.

    The deltas are None where they are ``current``'s values as they are (a new or a reset
    series), so that the caller summarizes ``current`` itself.
    """
    if previous is None:
        return None, False
    delta = _increases(previous, current)
    return delta, delta is None


def _increases(previous: HistogramSeries, current: HistogramSeries) -> _Delta | None:
    """The bounds and the per-bucket, ``_count`` and ``_sum`` increases of ``current``.

    None when the layout changed or anything went down: the series restarted.
    """
    if _went_down(previous.count, current.count) or _went_down(previous.sum, current.sum):
        return None
    if len(current.buckets) != len(previous.buckets):
        return None
    # One pass for the layout, the decreases and the deltas, into plain lists: this runs for
    # every bucket of every moving series on every tick.
    bounds: list[float] = []
    counts: list[float] = []
    for now, before in zip(current.buckets, previous.buckets, strict=True):
        bound = now.upper_bound
        # `is` first, as list equality does: the very same NaN object is the same bound.
        if bound is not before.upper_bound and bound != before.upper_bound:
            return None
        count, earlier = now.cumulative_count, before.cumulative_count
        if count < earlier:
            return None
        bounds.append(bound)
        counts.append(count - earlier)
    return bounds, counts, _minus(current.count, previous.count), _minus(current.sum, previous.sum)


def _window_summary(
    family: str, previous: HistogramSeries | None, current: HistogramSeries
) -> tuple[HistogramSummary, bool]:
    """The summary of what ``current`` added since ``previous``, and whether it reset."""
    delta, reset = _series_delta(previous, current)
    if delta is None:
        return tgi.summarize_histogram(family, current), reset
    bounds, counts, count, total = delta
    summary = tgi._summarize(
        family, current.labels, count=count, total=total, bounds=bounds, counts=counts
    )
    return summary, reset


def _observed(series: HistogramSeries) -> bool:
    """Whether a series holds any observation (then its disappearance is a decrease)."""
    values = [series.count, series.sum, *(b.cumulative_count for b in series.buckets)]
    return any(value is not None and value > 0 for value in values)


def _histogram_window(
    previous: Exposition, current: Exposition
) -> tuple[tuple[HistogramSummary, ...], bool]:
    """Summaries of the bucket deltas of every current series, and whether any series reset."""
    before = _histogram_series(previous)
    now = _histogram_series(current)
    reset = any(_observed(series) for key, series in before.items() if key not in now)
    summaries = []
    for key, series in now.items():
        earlier = before.get(key)
        if earlier is not None and _unchanged(earlier, series):
            # Most series of a busy TGI do not move within one interval (batch concat and
            # filter durations, failure paths): their window is empty, and cheap.
            summaries.append(_empty_summary(key[0], series.labels))
            continue
        summary, series_reset = _window_summary(key[0], earlier, series)
        reset = reset or series_reset
        summaries.append(summary)
    return tuple(summaries), reset


def _unchanged(previous: HistogramSeries, current: HistogramSeries) -> bool:
    """Whether a series is the same in two scrapes (same layout, counts and sum)."""
    # The parser hands back the very same series for an unchanged family and the very same
    # bucket objects for unchanged lines: `is` is the usual answer, equality the fallback.
    return previous is current or (
        previous.count == current.count
        and previous.sum == current.sum
        and len(previous.buckets) == len(current.buckets)
        and all(
            now is before or now == before
            for now, before in zip(current.buckets, previous.buckets, strict=True)
        )
    )


def _empty_summary(family: str, labels: Labels) -> HistogramSummary:
    """What :func:`tgi.summarize_histogram` gives for a window without observations."""
    return HistogramSummary(
        family=family,
        labels=labels,
        count=0.0,
        sum=0.0,
        mean=None,
        p50=None,
        p90=None,
        p95=None,
        p99=None,
    )


def _counter_went_down(previous: Exposition, current: Exposition) -> bool:
    """Whether any sample of a counter family went down (vanished: down to 0).

    The view's totals cover the counters the window reports; this catches a restart that
    shows only in the others (``tgi_request_count``, batch counters).
    """

    def values(exposition: Exposition) -> dict[_SeriesKey, float]:
        return {
            _key(sample.name, sample.labels): sample.value
            for family in exposition
            if family.type is MetricType.COUNTER
            for sample in family.samples
        }

    if previous is current:
        return False
    now = values(current)
    return any(now.get(key, 0.0) < value for key, value in values(previous).items())


def compute_window(
    previous: Exposition,
    current: Exposition,
    duration_seconds: float,
    *,
    previous_view: tgi.TgiView | None = None,
    current_view: tgi.TgiView | None = None,
) -> Window:
    """The window from ``previous`` to ``current``, two scrapes ``duration_seconds`` apart.

    Counter values come from the TGI view, so its name aliases (``_total`` spellings, the
    plan's sample) apply unchanged. ``failure_rate_by_err`` has the ``err`` values of
    ``current``; each is its own counter under the reset rule. Never raises on any pair of
    expositions (an empty previous one is a target's first requests).

    A caller that already holds the views of the two expositions (Watch's loops do: every
    snapshot carries one) passes them, saving two :func:`~tgi_collector.tgi.build_view` calls
    on the hot path; they must be the views of ``previous`` and ``current``.
    """
    old = previous_view if previous_view is not None else tgi.build_view(previous)
    new = current_view if current_view is not None else tgi.build_view(current)
    success, reset = _increase(old.request.success_total, new.request.success_total)
    failures: dict[str, float] = {}
    for err, value in new.request.failures_by_err.items():
        failures[err], err_reset = _increase(old.request.failures_by_err.get(err, 0.0), value)
        reset = reset or err_reset
    # An `err` that vanished went down to 0: it adds nothing, but the target restarted.
    reset = reset or any(
        value > 0 for err, value in old.request.failures_by_err.items() if err not in failures
    )
    generated, generated_reset = _increase(
        old.generation.generated_tokens_total, new.generation.generated_tokens_total
    )
    input_tokens, input_reset = _increase(
        old.generation.input_tokens_total, new.generation.input_tokens_total
    )
    histograms, histogram_reset = _histogram_window(previous, current)
    reset = (
        reset
        or generated_reset
        or input_reset
        or histogram_reset
        or _counter_went_down(previous, current)
    )

    # Not a positive finite length: no rate can be computed (and the wire needs a finite one).
    duration = duration_seconds if 0 < duration_seconds < math.inf else 0.0

    def rate(delta: float) -> float:
        return delta / duration if duration > 0 else 0.0

    failure = sum(failures.values(), 0.0)
    return Window(
        duration_seconds=duration,
        success_rate=rate(success),
        failure_rate=rate(failure),
        failure_rate_by_err=FrozenMapping({err: rate(d) for err, d in failures.items()}),
        request_rate=rate(success + failure),
        generated_tokens_rate=rate(generated),
        input_tokens_rate=rate(input_tokens),
        histograms=histograms,
        counter_reset=reset,
    )
