"""PromQL ``histogram_quantile`` over classic (``le``) buckets, ported step by step.

Users compare our percentiles with their Grafana panels, so this follows Prometheus'
``promql/quantile.go`` (``BucketQuantile`` with ``coalesceBuckets`` and
``ensureMonotonicAndIgnoreSmallDeltas``, v3.x) operation by operation rather than
implementing "a" quantile estimate. The only deliberate differences:

- NaN results come back as ``None`` ("no answer"), because downstream code turns ``None``
  into an absent protobuf field and a NaN would travel as a misleading number.
- No buckets at all gives ``None`` (Go indexes past the end of the slice and panics).
- Buckets whose bound is NaN are dropped: PromQL's sort assumes they never occur, so its
  answer for them is undefined.

The counts are cumulative but need not come from one scrape: Watch feeds per-bucket deltas
between two scrapes, which can be non-monotone when buckets were scraped at slightly
different moments; the monotonicity fix exists for exactly that.

This runs for every histogram series of every target on every tick (lifetime and window), so
the buckets are kept as two parallel lists of floats, and the sort and merge steps are skipped
when the bounds already rise strictly (as the parser hands them over): both are no-ops then,
so the answer is the same to the bit. Layouts found to rise are remembered (a series keeps its
layout), which makes that check one list comparison.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from itertools import islice
from operator import lt

from tgi_collector.metrics import Bucket

__all__ = ["BucketLike", "bucket_quantile", "bucket_quantiles", "quantiles_of"]

BucketLike = Bucket | tuple[float, float]
"""A cumulative bucket: a :class:`~tgi_collector.metrics.Bucket` or ``(upper_bound, count)``."""

# Prometheus' smallDeltaTolerance: relative differences between neighbouring cumulative
# counts below this are floating point noise (from rate() or delta arithmetic), not data.
_SMALL_DELTA_TOLERANCE = 1e-12
_MIN_NORMAL = sys.float_info.min  # Go: math.Float64frombits(0x0010000000000000)
_MAX_FLOAT = sys.float_info.max
# Two positive floats up to this add up to at most _MAX_FLOAT (halving is exact), so their
# sum cannot overflow: _ensure_monotonic's shortcut relies on it.
_HALF_MAX = _MAX_FLOAT / 2

_Prepared = tuple[list[float], list[float]]
"""Bounds and counts as PromQL's search sees them: sorted, merged, monotone."""


def _split(buckets: Iterable[BucketLike]) -> tuple[list[float], list[float]]:
    """The bounds and the counts of ``buckets``, as given (unconverted, in input order)."""
    bounds: list[float] = []
    counts: list[float] = []
    for bucket in buckets:
        if isinstance(bucket, Bucket):
            bound, count = bucket.upper_bound, bucket.cumulative_count
        else:
            bound, count = bucket
        bounds.append(bound)
        counts.append(count)
    return bounds, counts


def _pairs(bounds: Sequence[float], counts: Sequence[float]) -> list[list[float]]:
    # Mutable [bound, count] pairs, the way the general path sorts and merges them.
    return [
        [float(bound), float(count)]
        for bound, count in zip(bounds, counts, strict=True)
        if bound == bound  # noqa: PLR0124 - NaN bounds are dropped
    ]


def _coalesce(pairs: list[list[float]]) -> list[list[float]]:
    """Merge buckets with the same bound by adding their counts (Go: ``coalesceBuckets``)."""
    merged = [pairs[0]]
    for pair in pairs[1:]:
        if pair[0] == merged[-1][0]:
            merged[-1][1] += pair[1]
        else:
            merged.append(pair)
    return merged


def _sorted_and_merged(bounds: Sequence[float], counts: Sequence[float]) -> _Prepared:
    """The general path: NaN bounds dropped, sorted by bound (stably), equal bounds merged."""
    pairs = _pairs(bounds, counts)
    if not pairs:
        return [], []
    pairs.sort(key=lambda pair: pair[0])
    pairs = _coalesce(pairs)
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


def _strictly_increasing(bounds: list[float]) -> bool:
    """Whether ``bounds`` (two or more) rise strictly, which also rules out NaN.

    Every bound takes part in a ``<`` comparison, and any comparison with NaN is False.
    """
    return all(map(lt, bounds, islice(bounds, 1, None)))


# Layouts found to rise strictly, by length and first bound. A series keeps its layout for
# life and TGI's families share a handful, so checking one is usually a single list
# comparison (by identity, where the parser reuses its bound objects) instead of a float()
# and a comparison per bound: a fifth of all the quantile work of a busy target. Bounded; a
# race between threads can only lose an entry.
_RISING: dict[tuple[int, float], list[float]] = {}
_RISING_MAX = 64


def _rising_floats(bounds: Sequence[float]) -> list[float] | None:
    """``bounds`` as floats if there are two or more and they rise strictly, else None.

    A layout equal to one found before gives that one's list (to be read, never modified):
    a number equal to a float converts to that very float, and NaN equals nothing. Layouts
    holding a zero are not kept, because ``-0.0 == 0.0`` and the other zero could change a
    result's sign bit.
    """
    if len(bounds) < 2:
        return None
    key = (len(bounds), bounds[0])
    known = _RISING.get(key)
    if known is not None and known == bounds:
        return known
    floats = list(map(float, bounds))
    if not _strictly_increasing(floats):
        return None
    if 0.0 not in floats:
        if len(_RISING) >= _RISING_MAX:
            _RISING.clear()
        _RISING[key] = floats
    return floats


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    """Prometheus ``util/almost.Equal``: relative difference below ``epsilon``."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    # abs_sum is at least _MIN_NORMAL here (or NaN), so the division cannot fail.
    return diff / min(abs_sum, _MAX_FLOAT) < epsilon


def _ensure_monotonic(counts: list[float]) -> None:
    """Go: ``ensureMonotonicAndIgnoreSmallDeltas``, on ``counts`` in place.

    Absorbs noise-sized differences in either direction, then lifts any remaining decrease to
    the last accepted count (the "envelope"), so the binary search below stays meaningful.
    ``prev`` is deliberately not advanced by a correction, exactly as upstream.
    """
    prev = counts[0]
    for index in range(1, len(counts)):
        current = counts[index]
        if current == prev:
            continue
        if _MIN_NORMAL <= prev < current <= _HALF_MAX:
            # The common case, _almost_equal(prev, current) spelled out: both positive and
            # normal, so abs() is the identity, neither is 0, the sum is at least _MIN_NORMAL
            # and cannot overflow (no min() needed); and current < prev is False.
            if (current - prev) / (prev + current) < _SMALL_DELTA_TOLERANCE:
                counts[index] = prev
            else:
                prev = current
        elif _almost_equal(prev, current, _SMALL_DELTA_TOLERANCE) or current < prev:
            counts[index] = prev
        else:
            prev = current


def _divide(x: float, y: float) -> float:
    """IEEE 754 division as Go does it: x/0 is +-Inf or NaN instead of an exception."""
    if y != 0:
        return x / y
    if x == 0 or math.isnan(x):
        return math.nan
    return math.copysign(math.inf, x) * math.copysign(1.0, y)


def _prepare(bounds: Sequence[float], counts: Sequence[float]) -> _Prepared | None:
    """The buckets as PromQL's search sees them, or None where every quantile is NaN.

    Sorted by bound, equal bounds merged, counts made monotone; None without a ``+Inf``
    bucket, with fewer than two bounds, or with no observations. Split from the per-quantile
    step so that one series' p50/p90/p95/p99 share this work (it dominates on 100 buckets).
    """
    if len(bounds) != len(counts):
        raise ValueError(f"{len(bounds)} bounds but {len(counts)} counts")
    rising = _rising_floats(bounds)
    if rising is not None:
        # Already sorted and without equal or NaN bounds: sorting and merging change nothing.
        sorted_bounds, sorted_counts = rising, list(map(float, counts))
    else:
        sorted_bounds, sorted_counts = _sorted_and_merged(bounds, counts)
    if not sorted_bounds or sorted_bounds[-1] != math.inf:
        return None
    _ensure_monotonic(sorted_counts)
    if len(sorted_bounds) < 2 or sorted_counts[-1] == 0:
        return None
    return sorted_bounds, sorted_counts


def _quantile(q: float, prepared: _Prepared | None) -> float | None:
    # PromQL looks at q before the buckets: q < 0 is -Inf even for an empty histogram.
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if prepared is None:
        return None
    bounds, counts = prepared
    last = len(counts) - 1
    rank = q * counts[last]
    # Go's sort.Search for the first count >= rank, inlined (a predicate call per step cost
    # more than the rest) and not bisect, so that odd inputs such as NaN counts take the same
    # path as in Prometheus. The +Inf bucket is left out of the search: a rank beyond every
    # finite bucket lands on `last`, which means "in +Inf".
    low, high = 0, last
    while low < high:
        middle = (low + high) // 2
        if counts[middle] >= rank:
            high = middle
        else:
            low = middle + 1
    if low == last:
        return bounds[-2]
    if low == 0 and bounds[0] <= 0:
        return bounds[0]
    bucket_start = 0.0
    bucket_end, count = bounds[low], counts[low]
    if low > 0:
        bucket_start = bounds[low - 1]
        count -= counts[low - 1]
        rank -= counts[low - 1]
    result = bucket_start + (bucket_end - bucket_start) * _divide(rank, count)
    return None if math.isnan(result) else result


def quantiles_of(
    qs: Iterable[float], bounds: Sequence[float], counts: Sequence[float]
) -> tuple[float | None, ...]:
    """:func:`bucket_quantiles` of buckets given as parallel ``bounds`` and ``counts``.

    The summaries' entry point: a window's per-bucket deltas are computed as plain lists, and
    building a :class:`~tgi_collector.metrics.Bucket` per delta would cost more than the
    quantiles. ``bounds[i]`` is the upper bound of the bucket counting ``counts[i]``; the two
    must have the same length (ValueError otherwise). Neither is modified.
    """
    prepared = _prepare(bounds, counts)
    return tuple([_quantile(q, prepared) for q in qs])


def bucket_quantile(q: float, buckets: Iterable[BucketLike]) -> float | None:
    """The ``q``-quantile of cumulative ``buckets``, as PromQL ``histogram_quantile`` computes it.

    Linear interpolation inside the bucket holding the rank ``q * total``; the lowest bucket
    interpolates from 0 when its bound is positive (and returns its bound otherwise); a rank
    in the ``+Inf`` bucket gives the highest finite bound. A rank landing exactly on a
    cumulative count belongs to the lowest bucket reaching it, so the answer is that
    bucket's upper bound. ``q < 0`` gives ``-inf`` and ``q > 1`` gives ``+inf``.

    ``None`` where PromQL answers NaN: NaN ``q``, no ``+Inf`` bucket, fewer than two distinct
    bounds, zero total count, and arithmetic NaN (``q == 0`` with an empty lowest bucket
    interpolates 0/0). Buckets may come in any order; equal bounds are added together.
    """
    return _quantile(q, _prepare(*_split(buckets)))


def bucket_quantiles(
    qs: Iterable[float], buckets: Iterable[BucketLike]
) -> tuple[float | None, ...]:
    """:func:`bucket_quantile` for several ``qs`` over the same buckets, preparing them once."""
    return quantiles_of(qs, *_split(buckets))
