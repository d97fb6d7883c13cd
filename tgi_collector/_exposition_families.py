"""Families as the parser collects them, and their building into :class:`MetricFamily` objects.

The parse loop of :mod:`tgi_collector.exposition` only sorts entries (see
:mod:`tgi_collector._exposition_entries`) into a :class:`Family` per name and notes its HELP
and TYPE. Building the immutable :class:`~tgi_collector.metrics.MetricFamily` from that, with
a histogram's buckets or a summary's quantiles grouped per label set, is a separate step run
once per changed family after the loop (the parser reuses an unchanged family's previous
result), so it lives here, away from the per-line code.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter, itemgetter
from typing import Any, Final, cast

from tgi_collector._exposition_entries import LE, QUANTILE, Entry, group_info, item_of
from tgi_collector.metrics import (
    HistogramSeries,
    Labels,
    MetricFamily,
    MetricType,
    Sample,
    SummarySeries,
)

__all__ = ["Family", "build"]

_sample_of: Final = cast(Callable[[Entry], Sample], itemgetter(3))
_bound_of: Final = attrgetter("upper_bound")
_quantile_of: Final = attrgetter("quantile")


class Family:
    """A family while it is being parsed."""

    __slots__ = ("allowed", "bad_type", "entries", "help", "name", "type")

    def __init__(self, name: str) -> None:
        self.name = name
        self.type = MetricType.UNTYPED
        self.help: str | None = None
        self.entries: list[Entry] = []
        self.allowed = frozenset((name,))
        self.bad_type: tuple[str, int, str] | None = None  # type, line number, line

    def set_type(self, kind: MetricType | str, lineno: int, line: str) -> None:
        # prometheus_client checks a type only when it builds the family, so a later TYPE
        # line may mend an unknown one; an unknown last type is an error after the parse.
        self.bad_type = (kind, lineno, line) if isinstance(kind, str) else None
        kind = MetricType.UNTYPED if isinstance(kind, str) else kind
        self.type = kind
        name = self.name
        if kind is MetricType.HISTOGRAM:
            self.allowed = frozenset((name + "_bucket", name + "_count", name + "_sum"))
        elif kind is MetricType.SUMMARY:
            self.allowed = frozenset((name, name + "_count", name + "_sum"))
        else:
            self.allowed = frozenset((name,))


class _Series:
    """One label set of a histogram or summary family while it is grouped."""

    __slots__ = ("count", "items", "labels", "sum")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.items: list[Any] = []
        self.count: float | None = None
        self.sum: float | None = None


def _group(family: Family, label: str, items_name: str) -> list[_Series]:
    """Group a histogram (``le`` on ``F_bucket``) or summary (``quantile`` on ``F``) family."""
    count_name, sum_name = family.name + "_count", family.name + "_sum"
    groups: dict[Labels, _Series] = {}
    last_key: Labels | None = None
    append: Callable[[Any], None] = list.append.__get__([])
    for entry in family.entries:
        name = entry[0]
        if name == items_name:
            info, item = entry[4], entry[5]
            if info is None or info[0] != label:  # unusual label mix: not precomputed
                info = group_info(entry[1], label, {})
                item = item_of(info, entry[3].value)
            if info[2] is not last_key:  # buckets of one series come in a row, sharing a key
                last_key = info[2]
                series = groups.get(last_key)
                if series is None:
                    series = groups[last_key] = _Series(info[1])
                append = series.items.append
            if item is not None:
                append(item)
        elif name == count_name or name == sum_name:  # noqa: PLR1714, SIM109 (faster)
            labels = entry[1]
            key = labels if len(labels) < 2 else tuple(sorted(labels))
            other = groups.get(key)
            if other is None:
                other = groups[key] = _Series(labels)
            if name == count_name:
                other.count = entry[3].value
            else:
                other.sum = entry[3].value
    return list(groups.values())


def build(family: Family) -> MetricFamily:
    """The :class:`MetricFamily` of a parsed family, its histograms or summaries grouped."""
    histograms: tuple[HistogramSeries, ...] = ()
    summaries: tuple[SummarySeries, ...] = ()
    if family.type is MetricType.HISTOGRAM:
        histograms = tuple(
            HistogramSeries(s.labels, tuple(sorted(s.items, key=_bound_of)), s.count, s.sum)
            for s in _group(family, LE, family.name + "_bucket")
        )
    elif family.type is MetricType.SUMMARY:
        summaries = tuple(
            SummarySeries(s.labels, tuple(sorted(s.items, key=_quantile_of)), s.count, s.sum)
            for s in _group(family, QUANTILE, family.name)
        )
    samples = tuple(map(_sample_of, family.entries))
    return MetricFamily(family.name, family.type, family.help, samples, histograms, summaries)
