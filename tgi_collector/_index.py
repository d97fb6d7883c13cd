"""The exposition, indexed by meaning: the one pass that :func:`tgi_collector.tgi.build_view` reads.

:class:`ExpositionIndex` files every sample of an exposition once (plain samples by name,
histogram and summary series by family) so that the view's lookups by name and its aliases are
cheap and never depend on family order. :func:`histogram_series` is the rule for which series of
a histogram family describe observations, shared by Collect and Watch.

Why it is separate: the index is the mechanics of looking samples up; :mod:`tgi_collector.tgi`
keeps the meaning (which names, which aliases, what each field is). ``histogram_series`` is
re-exported by :mod:`tgi_collector.tgi`, which is where callers import it from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from tgi_collector._frozen import FrozenMapping
from tgi_collector.metrics import (
    Exposition,
    HistogramSeries,
    MetricFamily,
    MetricType,
    Sample,
    SummarySeries,
    group_histograms,
    group_summaries,
)

__all__ = ["ExpositionIndex", "histogram_series", "observation_count", "series_count"]


def observation_count(
    count: float | None, last_bound: float | None, last_count: float | None
) -> float | None:
    """How many observations a series holds, from its ``_count`` and its last bucket.

    `_count` normally; a series that lost it still knows its total from the +Inf bucket.
    None when it says nothing about it.
    """
    if count is not None:
        return count
    if last_bound == math.inf:
        return last_count
    return None


def series_count(series: HistogramSeries) -> float | None:
    """How many observations ``series`` holds; None when it says nothing about it."""
    last = series.buckets[-1] if series.buckets else None
    if last is None:
        return series.count
    return observation_count(series.count, last.upper_bound, last.cumulative_count)


def _is_junk(series: HistogramSeries) -> bool:
    # A stray non-histogram sample inside a histogram family becomes a "series" with nothing
    # in it; it describes no observations, so it gets no summary.
    return not series.buckets and series.count is None and series.sum is None


def histogram_series(family: MetricFamily) -> list[HistogramSeries]:
    """The series of a histogram family that describe observations, in wire order.

    Collect (lifetime summaries) and Watch (window deltas) both read series through this, so
    they never disagree on which series exist.
    """
    # Fall back to grouping here when a family was built without its series.
    histograms = family.histograms or group_histograms(family.name, family.samples)
    return [series for series in histograms if not _is_junk(series)]


class ExpositionIndex:
    """One pass over an exposition: plain samples by name, histogram/summary series by family.

    A "plain" sample is any sample that is not part of a histogram's or summary's structure
    (``_bucket``/``_count``/``_sum``, summary quantiles, ``_created``): values of counter,
    gauge and untyped families, and stray values inside histogram/summary families. Lookups
    go by sample name, never by family name, because parsers and exporters disagree on how a
    counter family is named (``x`` vs ``x_total``) while the sample name is what is on the
    wire. Several families with one name (a split family) are all taken into account.
    """

    def __init__(self, exposition: Exposition) -> None:
        self.plain: dict[str, list[Sample]] = {}
        self.histograms: dict[str, list[HistogramSeries]] = {}
        self.summaries: dict[str, list[SummarySeries]] = {}
        self.histogram_order: list[tuple[str, HistogramSeries]] = []
        for family in exposition.families:
            name = family.name
            structural: frozenset[str] = frozenset()
            if family.type is MetricType.HISTOGRAM:
                structural = frozenset(
                    {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
                )
                kept = histogram_series(family)
                self.histograms.setdefault(name, []).extend(kept)
                self.histogram_order.extend((name, series) for series in kept)
            elif family.type is MetricType.SUMMARY:
                structural = frozenset({name, f"{name}_count", f"{name}_sum", f"{name}_created"})
                summaries = family.summaries or group_summaries(name, family.samples)
                self.summaries.setdefault(name, []).extend(summaries)
            for sample in family.samples:
                if sample.name not in structural:
                    self.plain.setdefault(sample.name, []).append(sample)

    def samples(self, names: Sequence[str]) -> list[Sample] | None:
        """The plain samples of the first of ``names`` that has any (aliases never add up)."""
        for name in names:
            found = self.plain.get(name)
            if found:
                return found
        return None

    def total(self, names: Sequence[str]) -> float | None:
        """Sum over every label set of the first name present; None when none is."""
        found = self.samples(names)
        if found is None:
            return None
        return sum((sample.value for sample in found), 0.0)

    def by_label(self, names: Sequence[str], label: str) -> FrozenMapping:
        """Sums per value of ``label`` (``""`` when absent) of the first name present."""
        sums: dict[str, float] = {}
        for sample in self.samples(names) or ():
            # dict(): a label repeated on the wire keeps its last value, as in convert.
            key = dict(sample.labels).get(label, "")
            sums[key] = sums.get(key, 0.0) + sample.value
        return FrozenMapping(sums)

    def count_sum(self, name: str) -> tuple[float | None, float | None] | None:
        """``(count, sum)`` of the observations recorded under ``name``, over all label sets.

        From a histogram family, else a summary family (a look-alike may use one), else plain
        ``name_count``/``name_sum`` samples (the same series without ``# TYPE``). None when
        ``name`` has no series at all.
        """
        series: list[HistogramSeries] | list[SummarySeries] | None = self.histograms.get(
            name
        ) or self.summaries.get(name)
        if series:
            counts = [
                series_count(s) if isinstance(s, HistogramSeries) else s.count for s in series
            ]
            return _add(counts), _add(s.sum for s in series)
        count, total = self.total([f"{name}_count"]), self.total([f"{name}_sum"])
        if count is None and total is None:
            return None
        return count, total


def _add(values: Iterable[float | None]) -> float | None:
    """Sum of the values that are known; None when none is."""
    known = [value for value in values if value is not None]
    return sum(known, 0.0) if known else None
