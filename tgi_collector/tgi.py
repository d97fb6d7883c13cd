"""The TGI view: Prometheus families of a TGI server turned into typed, meaningful values.

The metric names, types and labels are those of Hugging Face TGI's router (v0.3 to v3.3);
the field names and their meanings are those of the README's "What a snapshot means".
Three kinds of input must give a sensible view, never an exception:

- real TGI output: counters without ``_total``, ``*_duration`` histograms in seconds, labelled
  series that appear only once hit, an empty body before the first request, family order
  changing between scrapes;
- the same under metrics-exporter-prometheus 0.18 "recommended naming" (counters with
  ``_total``) and the plan's sample (plain values named like the histograms, some with
  ``_total``/``_seconds`` suffixes);
- ``tgi_*`` look-alikes served by prometheus_client (``0.0`` floats, ``_created`` series,
  extra labels).

Absent means zero (counters, gauges) or unknown (means: ``None``). Labelled series where one
value is expected are added up, because an extra label (a model, a shard) partitions the
same count.

Parts live in private modules and are re-exported here: :class:`FrozenMapping`
(``_frozen``), the exposition index and :func:`histogram_series` (``_index``), and
:class:`ModelInfo` with :func:`model_info_from_json` (``_info``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tgi_collector._frozen import FrozenMapping
from tgi_collector._index import ExpositionIndex, histogram_series, observation_count
from tgi_collector._info import ModelInfo, model_info_from_json
from tgi_collector._quantile import BucketLike, bucket_quantile, quantiles_of
from tgi_collector.metrics import Exposition, HistogramSeries, Labels, SummarySeries

__all__ = [
    "BatchMetrics",
    "BucketLike",
    "FrozenMapping",
    "GenerationMetrics",
    "HistogramSummary",
    "ModelInfo",
    "RequestMetrics",
    "TgiView",
    "ViewCache",
    "build_view",
    "histogram_quantile",
    "histogram_series",
    "model_info_from_json",
    "summarize_histogram",
]


@dataclass(frozen=True, slots=True)
class HistogramSummary:
    """count/sum/mean and PromQL-style quantiles of one histogram series.

    ``count`` is the series' ``_count`` (its ``+Inf`` bucket when ``_count`` is missing) and
    ``sum`` its ``_sum`` (0 when missing). ``mean`` is None when there are no observations or
    no ``_sum``; the quantiles are None when :func:`histogram_quantile` has no answer (no
    observations, no ``+Inf`` bucket, fewer than two buckets).
    """

    family: str
    labels: Labels
    count: float
    sum: float
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """Request counters and mean latencies (meanings: README, "What a snapshot means").

    ``failures_by_err`` maps each ``err`` label value to its count; a failure sample without
    an ``err`` label (the plan's sample) is filed under ``""``, Prometheus' reading of an
    absent label, so that the breakdown always adds up to ``failure_total``.
    """

    success_total: float = 0.0
    failure_total: float = 0.0
    failures_by_err: Mapping[str, float] = field(default_factory=FrozenMapping)
    request_count: float = 0.0
    queue_size: float = 0.0
    mean_time_per_token_seconds: float | None = None
    validation_duration_seconds: float | None = None
    queue_duration_seconds: float | None = None
    inference_duration_seconds: float | None = None
    request_duration_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class GenerationMetrics:
    """Token means per request and batch gauges (meanings: README, "What a snapshot means")."""

    input_length: float | None = None
    generated_tokens: float | None = None
    max_new_tokens: float | None = None
    generated_tokens_total: float = 0.0
    input_tokens_total: float = 0.0
    batch_current_size: float = 0.0
    batch_current_max_tokens: float = 0.0
    skipped_tokens: SummarySeries | None = None


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """Batch-level counters: inference calls by ``method``, concatenations by ``reason``.

    A sample without the label is filed under ``""`` (as for ``failures_by_err``).
    """

    inference_count_by_method: Mapping[str, float] = field(default_factory=FrozenMapping)
    inference_success_by_method: Mapping[str, float] = field(default_factory=FrozenMapping)
    inference_failure_by_method: Mapping[str, float] = field(default_factory=FrozenMapping)
    concat_by_reason: Mapping[str, float] = field(default_factory=FrozenMapping)


@dataclass(frozen=True, slots=True)
class TgiView:
    """Everything the TGI view derives from one exposition."""

    request: RequestMetrics
    generation: GenerationMetrics
    batch: BatchMetrics
    histograms: tuple[HistogramSummary, ...]


# -- quantiles ---------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Iterable[BucketLike]) -> float | None:
    """PromQL ``histogram_quantile`` over cumulative buckets; None where PromQL gives NaN.

    ``buckets`` are :class:`~tgi_collector.metrics.Bucket` objects or ``(upper_bound,
    cumulative_count)`` pairs in any order; they need not come from one scrape (Watch passes
    per-bucket deltas of a window, which PromQL's monotonicity fix makes usable). See
    :func:`tgi_collector._quantile.bucket_quantile` for the exact rules.
    """
    return bucket_quantile(q, buckets)


def _mean(total: float | None, count: float | None) -> float | None:
    # `count > 0` is False for NaN too, so the division never fails.
    if total is None or count is None or not count > 0:
        return None
    return total / count


_SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99)


def summarize_histogram(family: str, series: HistogramSeries) -> HistogramSummary:
    """count, sum, mean and p50/p90/p95/p99 of one histogram series.

    Works on lifetime counts (one scrape) and equally on a window's deltas: build a
    :class:`~tgi_collector.metrics.HistogramSeries` of per-bucket, ``_count`` and ``_sum``
    differences and pass it here (Watch itself goes through :func:`_summarize`, which takes
    the differences as lists).
    """
    buckets = series.buckets
    return _summarize(
        family,
        series.labels,
        count=series.count,
        total=series.sum,
        bounds=[bucket.upper_bound for bucket in buckets],
        counts=[bucket.cumulative_count for bucket in buckets],
    )


def _summarize(
    family: str,
    labels: Labels,
    *,
    count: float | None,
    total: float | None,
    bounds: Sequence[float],
    counts: Sequence[float],
) -> HistogramSummary:
    """:func:`summarize_histogram` of a series given by its parts.

    ``count`` and ``total`` are the series' ``_count`` and ``_sum`` (None when missing);
    ``bounds`` and ``counts`` its buckets as parallel lists, in the series' order. Watch
    summarizes a window's per-bucket deltas through this, without building a
    :class:`~tgi_collector.metrics.Bucket` per delta (which cost more than the quantiles).
    """
    if bounds:
        count = observation_count(count, bounds[-1], counts[-1])
    p50, p90, p95, p99 = quantiles_of(_SUMMARY_QUANTILES, bounds, counts)
    return HistogramSummary(
        family=family,
        labels=labels,
        count=count if count is not None else 0.0,
        sum=total if total is not None else 0.0,
        mean=_mean(total, count),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
    )


# -- the exposition, indexed by meaning (the index: tgi_collector._index) --------------------


def _with_suffixes(base: str, *suffixes: str) -> tuple[str, ...]:
    return (base, *(base + suffix for suffix in suffixes))


def _mean_of(index: ExpositionIndex, names: Sequence[str]) -> float | None:
    """Mean per observation of the first of ``names`` recorded as a histogram, else its value.

    The histogram (or its ``_count``/``_sum``) is TGI's real schema and wins; it decides even
    with no observations (None: unknown). Otherwise a plain sample of one of the names (the
    plan's sample: ``tgi_request_input_length 128``) is already the mean and is taken as is;
    several label sets of it are averaged, since means of partitions cannot be added.
    """
    for name in names:
        stats = index.count_sum(name)
        if stats is not None:
            count, total = stats
            return _mean(total, count)
    found = index.samples(names)
    if found is None:
        return None
    return sum((sample.value for sample in found), 0.0) / len(found)


def _sum_of(index: ExpositionIndex, histogram: str, plain_names: Sequence[str]) -> float:
    """Lifetime sum of a histogram's observations (``histogram_sum``), else a plain total."""
    stats = index.count_sum(histogram)
    if stats is not None and stats[1] is not None:
        return stats[1]
    total = index.total(plain_names)
    return total if total is not None else 0.0


def _skipped_tokens(index: ExpositionIndex) -> SummarySeries | None:
    # TGI exposes one unlabelled series; a look-alike with labels gets its first series, since
    # precomputed quantiles of different series cannot be merged.
    series = index.summaries.get(_SKIPPED_TOKENS)
    if not series:
        return None
    for candidate in series:
        if not candidate.labels:
            return candidate
    return series[0]


# Name aliases, preferred spelling first. Counters: TGI's names, then the `_total` spelling of
# metrics-exporter-prometheus 0.18. Durations: TGI's names, then the `_seconds` unit suffix
# of the plan's sample and of unit-suffixing exporters.
_SUCCESS = _with_suffixes("tgi_request_success", "_total")
_FAILURE = _with_suffixes("tgi_request_failure", "_total")
_REQUEST_COUNT = _with_suffixes("tgi_request_count", "_total")
_QUEUE_SIZE = ("tgi_queue_size",)
_BATCH_CURRENT_SIZE = ("tgi_batch_current_size",)
_BATCH_CURRENT_MAX_TOKENS = ("tgi_batch_current_max_tokens",)
_MEAN_TIME_PER_TOKEN = _with_suffixes("tgi_request_mean_time_per_token_duration", "_seconds")
_VALIDATION_DURATION = _with_suffixes("tgi_request_validation_duration", "_seconds")
_QUEUE_DURATION = _with_suffixes("tgi_request_queue_duration", "_seconds")
_INFERENCE_DURATION = _with_suffixes("tgi_request_inference_duration", "_seconds")
_REQUEST_DURATION = _with_suffixes("tgi_request_duration", "_seconds")
_INPUT_LENGTH = "tgi_request_input_length"
_GENERATED_TOKENS = "tgi_request_generated_tokens"
_MAX_NEW_TOKENS = "tgi_request_max_new_tokens"
_SKIPPED_TOKENS = "tgi_request_skipped_tokens"
_BATCH_INFERENCE_COUNT = _with_suffixes("tgi_batch_inference_count", "_total")
_BATCH_INFERENCE_SUCCESS = _with_suffixes("tgi_batch_inference_success", "_total")
_BATCH_INFERENCE_FAILURE = _with_suffixes("tgi_batch_inference_failure", "_total")
_BATCH_CONCAT = _with_suffixes("tgi_batch_concat", "_total")


def _zero_if_none(value: float | None) -> float:
    return value if value is not None else 0.0


def build_view(exposition: Exposition) -> TgiView:
    """Turn a parsed exposition into the TGI view (meanings in the README and the field docs).

    Never raises: any exposition, including an empty one or one with no ``tgi_*`` family at
    all (vLLM, SGLang), gives a view of zeros and Nones. The result does not depend on family
    order. Histogram summaries cover every histogram series in exposition order, TGI's or not.
    """
    return _build_view(exposition, {})


_SummaryMemo = dict[int, tuple[HistogramSeries, HistogramSummary]]
"""Summaries by ``id`` of their series, each kept with its series (so the id stays valid)."""


class ViewCache:
    """:func:`build_view` for one target's successive expositions, skipping unchanged work.

    The parser hands back the very same objects for what did not change between two scrapes
    (see :class:`~tgi_collector.exposition.Parser`): an identical exposition gets the last
    view as is, and a histogram series found again keeps its summary, so the quantile work
    is done only for the series that moved. Holds the last exposition and its summaries.
    """

    __slots__ = ("_exposition", "_summaries", "_view")

    def __init__(self) -> None:
        self._exposition: Exposition | None = None
        self._view: TgiView | None = None
        self._summaries: _SummaryMemo = {}

    def build(self, exposition: Exposition) -> TgiView:
        """The view of ``exposition``, equal to ``build_view(exposition)``."""
        if exposition is self._exposition and self._view is not None:
            return self._view
        summaries: _SummaryMemo = {}
        view = _build_view(exposition, self._summaries, summaries)
        self._exposition, self._view, self._summaries = exposition, view, summaries
        return view


def _summarize_all(
    order: Sequence[tuple[str, HistogramSeries]],
    known: _SummaryMemo,
    made: _SummaryMemo | None,
) -> tuple[HistogramSummary, ...]:
    """Summaries of ``order``'s series, taken from ``known`` for the very same series objects."""
    summaries = []
    for family, series in order:
        hit = known.get(id(series))
        summary = hit[1] if hit is not None and hit[0] is series else None
        if summary is None or summary.family != family:
            summary = summarize_histogram(family, series)
        if made is not None:
            made[id(series)] = (series, summary)
        summaries.append(summary)
    return tuple(summaries)


def _build_view(
    exposition: Exposition, known: _SummaryMemo, made: _SummaryMemo | None = None
) -> TgiView:
    index = ExpositionIndex(exposition)
    failures_by_err = index.by_label(_FAILURE, "err")
    request = RequestMetrics(
        success_total=_zero_if_none(index.total(_SUCCESS)),
        failure_total=sum(failures_by_err.values(), 0.0),
        failures_by_err=failures_by_err,
        request_count=_zero_if_none(index.total(_REQUEST_COUNT)),
        queue_size=_zero_if_none(index.total(_QUEUE_SIZE)),
        mean_time_per_token_seconds=_mean_of(index, _MEAN_TIME_PER_TOKEN),
        validation_duration_seconds=_mean_of(index, _VALIDATION_DURATION),
        queue_duration_seconds=_mean_of(index, _QUEUE_DURATION),
        inference_duration_seconds=_mean_of(index, _INFERENCE_DURATION),
        request_duration_seconds=_mean_of(index, _REQUEST_DURATION),
    )
    generation = GenerationMetrics(
        input_length=_mean_of(index, (_INPUT_LENGTH,)),
        generated_tokens=_mean_of(index, (_GENERATED_TOKENS,)),
        max_new_tokens=_mean_of(index, (_MAX_NEW_TOKENS,)),
        # The plan's sample spells the generated total `tgi_request_generated_tokens_total`;
        # the input total gets the same spelling by analogy.
        generated_tokens_total=_sum_of(
            index, _GENERATED_TOKENS, _with_suffixes(_GENERATED_TOKENS, "_total")[1:]
        ),
        input_tokens_total=_sum_of(
            index, _INPUT_LENGTH, _with_suffixes(_INPUT_LENGTH, "_total")[1:]
        ),
        batch_current_size=_zero_if_none(index.total(_BATCH_CURRENT_SIZE)),
        batch_current_max_tokens=_zero_if_none(index.total(_BATCH_CURRENT_MAX_TOKENS)),
        skipped_tokens=_skipped_tokens(index),
    )
    batch = BatchMetrics(
        inference_count_by_method=index.by_label(_BATCH_INFERENCE_COUNT, "method"),
        inference_success_by_method=index.by_label(_BATCH_INFERENCE_SUCCESS, "method"),
        inference_failure_by_method=index.by_label(_BATCH_INFERENCE_FAILURE, "method"),
        concat_by_reason=index.by_label(_BATCH_CONCAT, "reason"),
    )
    histograms = _summarize_all(index.histogram_order, known, made)
    return TgiView(request=request, generation=generation, batch=batch, histograms=histograms)
