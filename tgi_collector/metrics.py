"""Plain data model of a parsed Prometheus text exposition.

The parser (:mod:`tgi_collector.exposition`) produces these; everything downstream (the TGI
view, the protobuf conversion) reads them. Values are kept exactly as on the wire: sample names
are not renamed (no ``_total`` stripping), labels keep their wire order, NaN and +/-Inf stay
floats. Histogram and summary families additionally carry their series grouped, so that bucket
bounds and counts travel together.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "Bucket",
    "Exposition",
    "HistogramSeries",
    "Labels",
    "MetricFamily",
    "MetricType",
    "Quantile",
    "Sample",
    "SummarySeries",
    "group_histograms",
    "group_summaries",
]

Labels = tuple[tuple[str, str], ...]
"""Label pairs in wire order."""


class MetricType(enum.Enum):
    """The ``# TYPE`` of a family; families without one are ``UNTYPED``."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    UNTYPED = "untyped"


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: ``name{labels} value [timestamp_ms]``."""

    name: str
    labels: Labels
    value: float
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One cumulative histogram bucket: observations ``<= upper_bound``."""

    upper_bound: float
    cumulative_count: float


@dataclass(frozen=True, slots=True)
class HistogramSeries:
    """One label set of a histogram family, buckets sorted by bound (``+Inf`` last if present)."""

    labels: Labels
    buckets: tuple[Bucket, ...]
    count: float | None
    sum: float | None


@dataclass(frozen=True, slots=True)
class Quantile:
    """One precomputed quantile of a summary."""

    quantile: float
    value: float


@dataclass(frozen=True, slots=True)
class SummarySeries:
    """One label set of a summary family."""

    labels: Labels
    quantiles: tuple[Quantile, ...]
    count: float | None
    sum: float | None


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """A metric family: every sample in wire order, plus grouped series for histograms/summaries."""

    name: str
    type: MetricType
    help: str | None
    samples: tuple[Sample, ...]
    histograms: tuple[HistogramSeries, ...] = ()
    summaries: tuple[SummarySeries, ...] = ()


@dataclass(frozen=True, slots=True)
class Exposition:
    """A whole parsed exposition: families in wire order, looked up by name with :meth:`get`."""

    families: tuple[MetricFamily, ...]
    _by_name: dict[str, MetricFamily] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {family.name: family for family in self.families})

    def get(self, name: str) -> MetricFamily | None:
        """The family called ``name``, or None."""
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[MetricFamily]:
        return iter(self.families)

    def __len__(self) -> int:
        return len(self.families)

    @property
    def sample_count(self) -> int:
        """Number of samples over all families."""
        return sum(len(family.samples) for family in self.families)


def _without(labels: Labels, name: str) -> tuple[Labels, str | None]:
    """Split ``labels`` into the pairs other than ``name`` and the value of ``name``."""
    rest: list[tuple[str, str]] = []
    found: str | None = None
    for key, value in labels:
        if key == name:
            found = value
        else:
            rest.append((key, value))
    return tuple(rest), found


def _series_key(labels: Labels) -> Labels:
    # The same series may list its labels in a different order on different lines.
    return tuple(sorted(labels))


def _parse_bound(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(slots=True)
class _Grouped:
    """One label set of a histogram or summary while it is being gathered."""

    labels: Labels
    items: list[tuple[float, float]]  # (le or quantile, value)
    count: float | None = None
    sum: float | None = None


def _group(
    family_name: str, samples: Iterable[Sample], item_name: str, item_label: str
) -> list[_Grouped]:
    """Gather ``item_name`` samples (placed by ``item_label``), ``_count`` and ``_sum`` by series.

    Items whose placing label is missing or not a number are ignored (they cannot be placed).
    Series keep the order in which they first appear; items come out sorted by position.
    """
    count_name = family_name + "_count"
    sum_name = family_name + "_sum"
    series: dict[Labels, _Grouped] = {}
    for sample in samples:
        if sample.name == item_name:
            labels, position_text = _without(sample.labels, item_label)
        else:
            labels, position_text = sample.labels, None
        key = _series_key(labels)
        entry = series.get(key)
        if entry is None:
            entry = series[key] = _Grouped(labels, [])
        if sample.name == item_name:
            position = _parse_bound(position_text) if position_text is not None else None
            if position is not None and not math.isnan(position):
                entry.items.append((position, sample.value))
        elif sample.name == count_name:
            entry.count = sample.value
        elif sample.name == sum_name:
            entry.sum = sample.value
    for entry in series.values():
        entry.items.sort(key=lambda item: item[0])
    return list(series.values())


def group_histograms(family_name: str, samples: Iterable[Sample]) -> tuple[HistogramSeries, ...]:
    """Group the ``_bucket``/``_count``/``_sum`` samples of a histogram family by label set.

    Buckets whose ``le`` is missing or not a number are ignored (they cannot be placed).
    Series keep the order in which they first appear.
    """
    return tuple(
        HistogramSeries(
            labels=entry.labels,
            buckets=tuple(Bucket(bound, value) for bound, value in entry.items),
            count=entry.count,
            sum=entry.sum,
        )
        for entry in _group(family_name, samples, family_name + "_bucket", "le")
    )


def group_summaries(family_name: str, samples: Iterable[Sample]) -> tuple[SummarySeries, ...]:
    """Group the quantile/``_count``/``_sum`` samples of a summary family by label set."""
    return tuple(
        SummarySeries(
            labels=entry.labels,
            quantiles=tuple(Quantile(q, value) for q, value in entry.items),
            count=entry.count,
            sum=entry.sum,
        )
        for entry in _group(family_name, samples, family_name, "quantile")
    )
