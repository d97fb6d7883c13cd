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
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable

from tgi_collector.metrics import Bucket

__all__ = ["BucketLike", "bucket_quantile", "bucket_quantiles"]

BucketLike = Bucket | tuple[float, float]
"""A cumulative bucket: a :class:`~tgi_collector.metrics.Bucket` or ``(upper_bound, count)``."""

# Prometheus' smallDeltaTolerance: relative differences between neighbouring cumulative
# counts below this are floating point noise (from rate() or delta arithmetic), not data.
_SMALL_DELTA_TOLERANCE = 1e-12
_MIN_NORMAL = sys.float_info.min  # Go: math.Float64frombits(0x0010000000000000)
_MAX_FLOAT = sys.float_info.max


def _pairs(buckets: Iterable[BucketLike]) -> list[list[float]]:
    # Mutable [bound, count] pairs: the PromQL steps below rewrite counts in place.
    pairs: list[list[float]] = []
    for bucket in buckets:
        if isinstance(bucket, Bucket):
            bound, count = bucket.upper_bound, bucket.cumulative_count
        else:
            bound, count = bucket
        if bound == bound:  # noqa: PLR0124 - the cheapest NaN test on the hot path
            pairs.append([float(bound), float(count)])
    return pairs


def _coalesce(pairs: list[list[float]]) -> list[list[float]]:
    """Merge buckets with the same bound by adding their counts (Go: ``coalesceBuckets``)."""
    merged = [pairs[0]]
    for pair in pairs[1:]:
        if pair[0] == merged[-1][0]:
            merged[-1][1] += pair[1]
        else:
            merged.append(pair)
    return merged


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


def _ensure_monotonic(pairs: list[list[float]]) -> None:
    """Go: ``ensureMonotonicAndIgnoreSmallDeltas``.

    Absorbs noise-sized differences in either direction, then lifts any remaining decrease to
    the last accepted count (the "envelope"), so the binary search below stays meaningful.
    ``prev`` is deliberately not advanced by a correction, exactly as upstream.
    """
    prev = pairs[0][1]
    for pair in pairs[1:]:
        current = pair[1]
        if current == prev:
            continue
        if _almost_equal(prev, current, _SMALL_DELTA_TOLERANCE) or current < prev:
            pair[1] = prev
            continue
        prev = current


def _search(n: int, predicate: Callable[[int], bool]) -> int:
    """Go's ``sort.Search``: the smallest index in ``[0, n)`` where ``predicate`` holds, or n.

    Spelled out (not :mod:`bisect`) so that odd inputs such as NaN counts take the same
    path through the search as in Prometheus.
    """
    low, high = 0, n
    while low < high:
        middle = (low + high) // 2
        if predicate(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _divide(x: float, y: float) -> float:
    """IEEE 754 division as Go does it: x/0 is +-Inf or NaN instead of an exception."""
    if y != 0:
        return x / y
    if x == 0 or math.isnan(x):
        return math.nan
    return math.copysign(math.inf, x) * math.copysign(1.0, y)


def _prepare(buckets: Iterable[BucketLike]) -> list[list[float]] | None:
    """The buckets as PromQL's search sees them, or None where every quantile is NaN.

    Sorted by bound, equal bounds merged, counts made monotone; None without a ``+Inf``
    bucket, with fewer than two bounds, or with no observations. Split from the per-quantile
    step so that one series' p50/p90/p95/p99 share this work (it dominates on 100 buckets).
    """
    pairs = _pairs(buckets)
    if not pairs:
        return None
    pairs.sort(key=lambda pair: pair[0])
    if pairs[-1][0] != math.inf:
        return None
    pairs = _coalesce(pairs)
    _ensure_monotonic(pairs)
    if len(pairs) < 2 or pairs[-1][1] == 0:
        return None
    return pairs


def _quantile(q: float, pairs: list[list[float]] | None) -> float | None:
    # PromQL looks at q before the buckets: q < 0 is -Inf even for an empty histogram.
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if pairs is None:
        return None
    rank = q * pairs[-1][1]
    # The +Inf bucket is left out of the search: a rank beyond every finite bucket lands on
    # index len - 1, which means "in +Inf".
    index = _search(len(pairs) - 1, lambda i: pairs[i][1] >= rank)
    if index == len(pairs) - 1:
        return pairs[-2][0]
    if index == 0 and pairs[0][0] <= 0:
        return pairs[0][0]
    bucket_start = 0.0
    bucket_end, count = pairs[index]
    if index > 0:
        bucket_start = pairs[index - 1][0]
        count -= pairs[index - 1][1]
        rank -= pairs[index - 1][1]
    result = bucket_start + (bucket_end - bucket_start) * _divide(rank, count)
    return None if math.isnan(result) else result


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
    return _quantile(q, _prepare(buckets))


def bucket_quantiles(
    qs: Iterable[float], buckets: Iterable[BucketLike]
) -> tuple[float | None, ...]:
    """:func:`bucket_quantile` for several ``qs`` over the same buckets, preparing them once."""
    pairs = _prepare(buckets)
    return tuple(_quantile(q, pairs) for q in qs)
