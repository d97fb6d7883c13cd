"""``histogram_quantile``: PromQL semantics, checked three ways.

1. Hand-computed cases, with the derivation from the bucket numbers next to each.
2. An independent, deliberately naive reimplementation (``_naive_quantile``: dict merge,
   running maximum, linear scan) compared on the real TGI scrape and on generated buckets.
3. Properties: result inside the bucket range, monotone in q, independent of input order.

The fast path (bounds that already rise strictly skip the sort and merge) is checked bit for
bit against the general path, and the monotonicity fix's inlined common case against
Prometheus' formulation calling ``almost.Equal``, on edge values around every branch.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from tgi_collector import _quantile, tgi
from tgi_collector._quantile import bucket_quantile, bucket_quantiles, quantiles_of
from tgi_collector.metrics import Bucket
from tgi_collector.tgi import histogram_quantile

INF = math.inf
REAL_SCRAPE = Path(__file__).parent / "data" / "tgi" / "tgi-3.3-real.prom"


def _naive_quantile(q: float, pairs: list[tuple[float, float]]) -> float | None:
    """Straight from the PromQL docs, written without looking at the implementation.

    Merge equal bounds, take the running maximum of the cumulative counts (PromQL's
    "envelope" for non-monotone input), then walk the finite buckets until one reaches
    rank = q * total. Does not model PromQL's 1e-12 noise tolerance, so callers feed it
    integer counts, where every real difference is far above the tolerance.
    """
    if math.isnan(q):
        return None
    if q < 0:
        return -INF
    if q > 1:
        return INF
    merged: dict[float, float] = {}
    for bound, count in pairs:
        merged[bound] = merged.get(bound, 0.0) + count
    bounds = sorted(merged)
    if len(bounds) < 2 or bounds[-1] != INF:
        return None
    counts: list[float] = []
    for bound in bounds:
        counts.append(max([merged[bound], *counts[-1:]]))
    total = counts[-1]
    if total == 0:
        return None
    rank = q * total
    for i in range(len(bounds) - 1):
        if counts[i] >= rank:
            break
    else:
        return bounds[-2]  # the rank is in the +Inf bucket
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    lower_bound = bounds[i - 1] if i > 0 else 0.0
    lower_count = counts[i - 1] if i > 0 else 0.0
    if counts[i] == lower_count:
        return None  # 0/0: only q == 0 with an empty first bucket gets here
    return lower_bound + (bounds[i] - lower_bound) * (rank - lower_count) / (
        counts[i] - lower_count
    )


# -- hand-computed -----------------------------------------------------------------------------

# 10 observations <= 1, 10 more <= 2, 20 more <= 4, none above.
_LADDER = [(1.0, 10.0), (2.0, 20.0), (4.0, 40.0), (INF, 40.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # rank 0.1*40 = 4 -> first bucket (10 >= 4), from 0: 0 + (1-0) * 4/10 = 0.4
        (0.1, 0.4),
        # rank 10 lands exactly on the first bucket's count: lowest bucket reaching it,
        # 0 + 1 * 10/10 = 1.0 (its upper bound, not the start of the next bucket)
        (0.25, 1.0),
        # rank 20, exactly the le=2 count: 1 + (2-1) * (20-10)/(20-10) = 2.0
        (0.5, 2.0),
        # rank 30 -> le=4 bucket: 2 + (4-2) * (30-20)/(40-20) = 3.0
        (0.75, 3.0),
        # rank 39.6 -> le=4: 2 + 2 * (39.6-20)/20 = 3.96
        (0.99, 3.96),
        # rank 40 -> the le=4 bucket already holds all 40, so its bound: 2 + 2 * 20/20 = 4.0
        (1.0, 4.0),
        # rank 0 -> first bucket: 0 + 1 * 0/10 = 0.0
        (0.0, 0.0),
    ],
)
def test_hand_computed_ladder(q: float, expected: float) -> None:
    assert histogram_quantile(q, _LADDER) == pytest.approx(expected, rel=1e-12)


def test_rank_in_inf_bucket_gives_highest_finite_bound() -> None:
    # 5 <= 1, 3 more <= 2, 2 more only in +Inf. q=0.9: rank 9 > 8 (the le=2 count), so the
    # rank is in +Inf and PromQL answers the highest finite bound, 2.
    buckets = [(1.0, 5.0), (2.0, 8.0), (INF, 10.0)]
    assert histogram_quantile(0.9, buckets) == 2.0
    assert histogram_quantile(1.0, buckets) == 2.0
    # q=0.8: rank 8 equals the le=2 count, so it is still inside le=2:
    # 1 + (2-1) * (8-5)/(8-5) = 2.0
    assert histogram_quantile(0.8, buckets) == 2.0
    # q=0.7: rank 7 -> 1 + 1 * (7-5)/(8-5) = 1.6666...
    assert histogram_quantile(0.7, buckets) == pytest.approx(1 + 2 / 3)


def test_first_bucket_with_non_positive_bound_is_returned_as_is() -> None:
    # Bounds -1, 0, 1: 5 observations <= -1, none in (-1, 0], 5 in (0, 1].
    buckets = [(-1.0, 5.0), (0.0, 5.0), (1.0, 10.0), (INF, 10.0)]
    # rank 2 -> first bucket, bound -1 <= 0: no lower bound to interpolate from, answer -1
    assert histogram_quantile(0.2, buckets) == -1.0
    # rank 5 == first count -> still the first bucket: -1
    assert histogram_quantile(0.5, buckets) == -1.0
    # rank 6 -> le=1 (le=0 has 5 < 6): 0 + (1-0) * (6-5)/(10-5) = 0.2
    assert histogram_quantile(0.6, buckets) == pytest.approx(0.2)
    # A first bound of exactly 0 counts as non-positive: rank 2 of 8 -> 0.0
    assert histogram_quantile(0.25, [(0.0, 4.0), (1.0, 8.0), (INF, 8.0)]) == 0.0
    # ... which matters for q=0 with nothing <= 0: the bound 0 is returned, where
    # interpolating would compute 0 + 0 * 0/0 (NaN).
    assert histogram_quantile(0.0, [(0.0, 0.0), (1.0, 8.0), (INF, 8.0)]) == 0.0


def test_first_bucket_with_positive_bound_interpolates_from_zero() -> None:
    # rank 0.5*4 = 2 in the first bucket (4 observations <= 10): 0 + 10 * 2/4 = 5.0
    assert histogram_quantile(0.5, [(10.0, 4.0), (INF, 4.0)]) == 5.0


@pytest.mark.parametrize(
    "buckets",
    [
        pytest.param([], id="no buckets"),
        pytest.param([(INF, 10.0)], id="only +Inf"),
        pytest.param([(INF, 3.0), (INF, 4.0)], id="+Inf twice coalesces to one bucket"),
        pytest.param([(1.0, 5.0), (2.0, 10.0)], id="no +Inf bucket"),
        pytest.param([(1.0, 0.0), (2.0, 0.0), (INF, 0.0)], id="no observations"),
        pytest.param([(-1.0, 0.0), (1.0, 0.0), (INF, 0.0)], id="no observations, bound <= 0"),
        pytest.param([(math.nan, 1.0), (INF, 1.0)], id="a NaN bound is dropped"),
    ],
)
def test_no_answer_is_none(buckets: list[tuple[float, float]]) -> None:
    for q in (0.0, 0.5, 0.99, 1.0):
        assert histogram_quantile(q, buckets) is None


def test_q_outside_zero_one_and_nan() -> None:
    # PromQL checks q before looking at the buckets, so even no buckets give +-Inf.
    assert histogram_quantile(-0.1, _LADDER) == -INF
    assert histogram_quantile(1.1, _LADDER) == INF
    assert histogram_quantile(-1.0, []) == -INF
    assert histogram_quantile(2.0, []) == INF
    assert histogram_quantile(math.nan, _LADDER) is None


def test_q_zero_with_empty_first_bucket_is_none() -> None:
    # rank 0 -> first bucket (0 >= 0), which holds nothing: 0 + 1 * 0/0 is NaN in PromQL.
    assert histogram_quantile(0.0, [(1.0, 0.0), (2.0, 4.0), (INF, 4.0)]) is None


def test_non_monotone_counts_use_the_envelope() -> None:
    # The le=2 count (8) is below le=1 (10), as when buckets of a window delta were scraped
    # at slightly different moments. PromQL lifts it to 10: counts 10, 10, 12, 12.
    buckets = [(1.0, 10.0), (2.0, 8.0), (3.0, 12.0), (INF, 12.0)]
    # rank 0.5*12 = 6 -> first bucket: 0 + 1 * 6/10 = 0.6
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.6)
    # rank 0.9*12 = 10.8 -> le=3 (le=2 is 10 after the fix): 2 + 1 * (10.8-10)/(12-10) = 2.4
    assert histogram_quantile(0.9, buckets) == pytest.approx(2.4)
    # A +Inf count below the finite ones is lifted too, and the lifted value is the total:
    # counts 10, 10 -> rank 0.5*10 = 5 -> 0 + 1 * 5/10 = 0.5
    assert histogram_quantile(0.5, [(1.0, 10.0), (INF, 6.0)]) == pytest.approx(0.5)


def test_float_noise_between_counts_is_ignored() -> None:
    # le=3 and +Inf exceed the le=2 count by 1e-10, a relative difference of 5e-13, below
    # PromQL's 1e-12 tolerance: both become 100, so the total is 100 and rank(q=1) = 100 is
    # reached at le=2: 1 + (2-1) * (100-50)/(100-50) = 2.0. Taken at face value, the rank
    # 100 + 1e-10 would land in le=3 and give 3.0.
    noisy = 100.0 + 1e-10
    buckets = [(1.0, 50.0), (2.0, 100.0), (3.0, noisy), (INF, noisy)]
    assert histogram_quantile(1.0, buckets) == 2.0


def test_nan_bounds_are_dropped() -> None:
    # Without the NaN bucket: 2 observations <= 1, 2 more in +Inf. q=0.5: rank 2 -> le=1:
    # 1 * 2/2 = 1.0. Kept, its count 5 would lift +Inf to 5 and move the rank.
    assert histogram_quantile(0.5, [(1.0, 2.0), (math.nan, 5.0), (INF, 4.0)]) == 1.0
    assert histogram_quantile(0.5, [(math.nan, 5.0), (1.0, 2.0), (INF, 4.0)]) == 1.0


def test_equal_bounds_are_added_and_order_does_not_matter() -> None:
    # Two le=1 buckets (3 and 2) coalesce to 5: rank 0.5*10 = 5 -> le=1: 1 * 5/5 = 1.0;
    # rank 2.5 -> 1 * 2.5/5 = 0.5
    buckets = [(2.0, 10.0), (1.0, 3.0), (INF, 10.0), (1.0, 2.0)]
    assert histogram_quantile(0.5, buckets) == 1.0
    assert histogram_quantile(0.25, buckets) == 0.5


def test_bucket_objects_and_pairs_agree() -> None:
    as_objects = [Bucket(bound, count) for bound, count in _LADDER]
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert histogram_quantile(q, as_objects) == histogram_quantile(q, _LADDER)
    # Generators work too (Watch may pass lazily computed deltas).
    assert histogram_quantile(0.5, (pair for pair in _LADDER)) == 2.0


def test_input_is_not_modified() -> None:
    buckets = [(2.0, 8.0), (1.0, 10.0), (INF, 12.0)]
    copy = list(buckets)
    histogram_quantile(0.5, buckets)
    assert buckets == copy


def test_tgi_reexports_the_same_function() -> None:
    assert tgi.histogram_quantile(0.5, _LADDER) == bucket_quantile(0.5, _LADDER)


# -- the real scrape ---------------------------------------------------------------------------

_BUCKET_LINE = re.compile(r"^(\w+)_bucket\{(.*)\} (\S+)$")


def _real_series() -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Every histogram series of the real scrape, read with a regex (no project parser)."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for line in REAL_SCRAPE.read_text().splitlines():
        match = _BUCKET_LINE.match(line)
        if match is None:
            continue
        name, label_text, value = match.groups()
        labels = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        bound = float(labels.pop("le"))
        key = (name, ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
        series.setdefault(key, []).append((bound, float(value)))
    return series


def test_real_scrape_matches_naive_reimplementation() -> None:
    series = _real_series()
    # 14 histogram families: 9 unlabelled, 4 with method=prefill and =decode, and
    # tgi_batch_concat_duration with decode only: 9 + 8 + 1 series.
    assert len(series) == 18
    for key, pairs in series.items():
        for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
            expected = _naive_quantile(q, pairs)
            actual = histogram_quantile(q, pairs)
            if expected is None:
                assert actual is None, (key, q)
            else:
                assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15), (key, q)


def test_real_request_duration_by_hand() -> None:
    pairs = _real_series()[("tgi_request_duration", "")]
    # 109 requests. p50: rank 54.5; le=3.787675244106352 holds 51 < 54.5, le=5.681512866159528
    # holds 77 >= 54.5: 3.787675244106352 + (5.681512866159528 - 3.787675244106352) * 3.5/26
    assert histogram_quantile(0.5, pairs) == pytest.approx(
        3.787675244106352 + (5.681512866159528 - 3.787675244106352) * 3.5 / 26
    )
    # p99: rank 107.91; le=12.783403948858936 holds 104, le=19.175105923288406 holds 108:
    # 12.783403948858936 + (19.175105923288406 - 12.783403948858936) * 3.91/4
    assert histogram_quantile(0.99, pairs) == pytest.approx(
        12.783403948858936 + (19.175105923288406 - 12.783403948858936) * 3.91 / 4
    )


# -- generated buckets -------------------------------------------------------------------------


@st.composite
def _histograms(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Cumulative buckets as a scrape or a window delta may give them.

    Distinct finite bounds (negative ones too), integer counts, usually a +Inf bucket,
    sometimes a duplicated bound or a count knocked below its predecessor, in any order.
    """
    bounds = sorted(
        draw(
            st.lists(
                st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                max_size=10,
                unique=True,
            )
        )
    )
    if draw(st.booleans()) or not bounds:
        bounds.append(INF)
    increments = draw(st.lists(st.integers(0, 1000), min_size=len(bounds), max_size=len(bounds)))
    pairs: list[tuple[float, float]] = []
    running = 0
    for bound, increment in zip(bounds, increments, strict=True):
        running += increment
        pairs.append((bound, float(running)))
    lagging: bool = draw(st.booleans())
    if lagging:
        # Break monotonicity in one place (a bucket delta that lags behind).
        i = draw(st.integers(0, len(pairs) - 1))
        pairs[i] = (pairs[i][0], float(draw(st.integers(0, 1000))))
    duplicated: bool = draw(st.booleans())
    if duplicated:
        bound = draw(st.sampled_from([b for b, _ in pairs]))
        pairs.append((bound, float(draw(st.integers(0, 50)))))
    return draw(st.permutations(pairs))


_QS = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(_histograms(), _QS)
def test_agrees_with_naive_reimplementation(pairs: list[tuple[float, float]], q: float) -> None:
    expected = _naive_quantile(q, pairs)
    actual = histogram_quantile(q, pairs)
    if expected is None:
        assert actual is None
    else:
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(_histograms(), _QS)
def test_result_lies_within_the_bucket_range(pairs: list[tuple[float, float]], q: float) -> None:
    result = histogram_quantile(q, pairs)
    if result is None:
        return
    finite = sorted({bound for bound, _ in pairs if bound != INF})
    lowest = min(0.0, finite[0])  # interpolation starts at 0, or at a non-positive bound
    tolerance = 1e-9 * max(1.0, abs(finite[-1]), abs(lowest))
    assert lowest - tolerance <= result <= finite[-1] + tolerance


@settings(max_examples=300, deadline=None)
@given(_histograms(), st.lists(_QS, min_size=2, max_size=6))
def test_monotone_in_q(pairs: list[tuple[float, float]], qs: list[float]) -> None:
    results = [(q, histogram_quantile(q, pairs)) for q in sorted(qs)]
    known = [(q, r) for q, r in results if r is not None]
    for (_, low), (_, high) in itertools.pairwise(known):
        assert low <= high + 1e-9 * max(1.0, abs(high))


@settings(max_examples=200, deadline=None)
@given(_histograms(), _QS, st.randoms(use_true_random=False))
def test_independent_of_input_order(
    pairs: list[tuple[float, float]], q: float, rng: random.Random
) -> None:
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    first, second = histogram_quantile(q, pairs), histogram_quantile(q, shuffled)
    if first is None:
        assert second is None
    else:
        # Equal bounds are added in input order; with integer counts the sum is exact.
        assert first == second


# -- the fast path: bounds that already rise strictly ------------------------------------------
#
# Bounds as the parser hands them over (sorted, distinct, no NaN) skip the sort and the merge,
# which are no-ops on them; the answer must be the very same float as through the general path.
# Counts here are any floats (NaN, infinities, negatives, subnormals, noise around PromQL's
# 1e-12 tolerance), since that path must not care where they come from.

_ODD_COUNTS = [
    0.0,
    -0.0,
    5e-324,
    1e-320,
    sys.float_info.min,
    sys.float_info.max / 2,
    sys.float_info.max,
    INF,
    -INF,
    math.nan,
    -1.0,
    1.0,
    1.0 + 1e-12,
    1.0 + 2e-12,
    1.0 + 3e-12,
    1e15,
    1e15 + 1,
]
_COUNTS = st.one_of(st.floats(), st.sampled_from(_ODD_COUNTS), st.integers(0, 1000).map(float))


def _same(first: tuple[float | None, ...], second: tuple[float | None, ...]) -> bool:
    """Identical answers: None where None, and floats equal to the bit (sign of zero too)."""
    return [None if x is None else struct.pack("<d", x) for x in first] == [
        None if x is None else struct.pack("<d", x) for x in second
    ]


_ALL_QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)


@st.composite
def _rising_buckets(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """Strictly increasing bounds (usually with +Inf) and arbitrary float counts."""
    finite = draw(
        st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=12, unique=True)
    )
    bounds = sorted(finite) + ([INF] if draw(st.booleans()) else [])
    counts = draw(st.lists(_COUNTS, min_size=len(bounds), max_size=len(bounds)))
    if draw(st.booleans()):
        # Noise-sized steps between neighbours, PromQL's small-delta case.
        scale = draw(st.sampled_from([1.0, 1e-300, 1e300, 5e-324]))
        steps = draw(st.lists(st.sampled_from([0.0, 1e-13, 5e-13, 1e-12, 2e-12, -1e-12, 1.0])))
        running = scale
        for i in range(min(len(counts), len(steps))):
            running *= 1 + steps[i]
            counts[i] = running
    return bounds, counts


@settings(max_examples=500, deadline=None)
@given(_rising_buckets(), st.randoms(use_true_random=False))
def test_fast_path_matches_the_general_path(
    buckets: tuple[list[float], list[float]], rng: random.Random
) -> None:
    bounds, counts = buckets
    fast = quantiles_of(_ALL_QS, bounds, counts)
    if len(bounds) >= 2:
        assert _quantile._rising_floats(bounds) is not None  # the fast path was taken
    # Reversed (and shuffled) input cannot take it: sorted again, the same operations follow.
    pairs = list(zip(bounds, counts, strict=True))
    for reordered in (pairs[::-1], rng.sample(pairs, len(pairs))):
        again = [bound for bound, _ in reordered]
        if len(again) >= 2 and reordered != pairs:
            assert _quantile._rising_floats(again) is None
        assert _same(fast, bucket_quantiles(_ALL_QS, reordered))


@settings(max_examples=300, deadline=None)
@given(_rising_buckets(), st.data())
def test_merged_and_dropped_buckets_match_the_fast_path(
    buckets: tuple[list[float], list[float]], data: st.DataObject
) -> None:
    """A bound given twice (general path: merged) answers like one bucket holding the sum,
    and a NaN bound (general path: dropped) like its absence."""
    bounds, counts = buckets
    if not bounds:
        return
    i = data.draw(st.integers(0, len(bounds) - 1))
    part = data.draw(_COUNTS)
    split = list(zip(bounds, counts, strict=True))
    split.insert(i + 1, (bounds[i], part))
    split.insert(data.draw(st.integers(0, len(split))), (math.nan, data.draw(_COUNTS)))
    merged = list(counts)
    merged[i] = counts[i] + part  # what coalescing computes, in the same order
    assert _same(quantiles_of(_ALL_QS, bounds, merged), bucket_quantiles(_ALL_QS, split))


@settings(max_examples=300, deadline=None)
@given(_histograms(), st.lists(_QS, max_size=5))
def test_quantiles_of_lists_agrees_with_buckets(
    pairs: list[tuple[float, float]], qs: list[float]
) -> None:
    bounds, counts = [b for b, _ in pairs], [c for _, c in pairs]
    copies = (list(bounds), list(counts))
    expected = bucket_quantiles(qs, pairs)
    assert _same(quantiles_of(qs, bounds, counts), expected)
    assert _same(expected, tuple(histogram_quantile(q, pairs) for q in qs))
    assert (bounds, counts) == copies  # neither list is modified


def test_quantiles_of_needs_one_count_per_bound() -> None:
    with pytest.raises(ValueError, match="2 bounds but 3 counts"):
        quantiles_of([0.5], [1.0, INF], [1.0, 2.0, 3.0])


@st.composite
def _well_formed(draw: st.DrawFn) -> list[tuple[float, float]]:
    """A scrape as TGI serves it: positive rising bounds, +Inf, cumulative integer counts."""
    finite = sorted(draw(st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=12, unique=True)))
    increments = draw(st.lists(st.integers(0, 50), min_size=len(finite) + 1))
    counts = list(itertools.accumulate(float(i) for i in increments[: len(finite) + 1]))
    return list(zip([*finite, INF], counts, strict=True))


@settings(max_examples=300, deadline=None)
@given(_well_formed(), st.floats(0.0, 1.0, exclude_min=True))
def test_fast_path_agrees_with_the_reference(buckets: list[tuple[float, float]], q: float) -> None:
    (result,) = quantiles_of([q], [b for b, _ in buckets], [c for _, c in buckets])
    expected = reference.histogram_quantile(q, buckets)
    if math.isnan(expected):
        assert result is None
    else:
        assert result == pytest.approx(expected, rel=1e-12)


# -- the monotonicity fix: the inlined common case of almost.Equal ---------------------------


def _upstream_monotonic(counts: list[float]) -> list[float]:
    """``ensureMonotonicAndIgnoreSmallDeltas`` as written in Prometheus, calling almost.Equal."""
    fixed = list(counts)
    prev = fixed[0]
    for i in range(1, len(fixed)):
        current = fixed[i]
        if current == prev:
            continue
        if _quantile._almost_equal(prev, current, 1e-12) or current < prev:
            fixed[i] = prev
            continue
        prev = current
    return fixed


def _bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", value) for value in values]


_EDGES = [
    0.0,
    -0.0,
    5e-324,
    1e-320,
    3e-320,
    sys.float_info.min,
    math.nextafter(sys.float_info.min, 0.0),
    math.nextafter(sys.float_info.min, INF),
    1.0,
    1.0 + 1.5e-12,
    1.0 + 2e-12,
    math.nextafter(1.0 + 2e-12, INF),
    math.nextafter(1.0 + 2e-12, 0.0),
    1.0 + 3e-12,
    0.0009766493169739657,  # with the next one: a relative difference of exactly 1e-12
    0.000976649316975919,
    sys.float_info.max / 2,
    math.nextafter(sys.float_info.max / 2, INF),
    sys.float_info.max,
    INF,
    -INF,
    math.nan,
    -1.0,
]


@pytest.mark.parametrize("prev", _EDGES)
def test_monotonic_fix_matches_upstream_on_edge_values(prev: float) -> None:
    # Zero, subnormals, the smallest normal, the tolerance, the overflow limit of the
    # shortcut's sum, infinities and NaN, on either side of every other edge value.
    for current, after in itertools.product(_EDGES, repeat=2):
        counts = [prev, current, after]
        fixed = list(counts)
        _quantile._ensure_monotonic(fixed)
        assert _bits(fixed) == _bits(_upstream_monotonic(counts)), counts


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(),
            st.sampled_from(_EDGES),
            st.tuples(st.floats(0.0, 1e300), st.sampled_from([1e-13, 5e-13, 1e-12, 2e-12])).map(
                lambda base_step: base_step[0] * (1 + base_step[1])
            ),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_monotonic_fix_matches_upstream(counts: list[float]) -> None:
    fixed = list(counts)
    _quantile._ensure_monotonic(fixed)
    assert _bits(fixed) == _bits(_upstream_monotonic(counts))


_AT_TOLERANCE = (0.0009766493169739657, 0.000976649316975919)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # Relative difference 1.5e-12 / 2 = 7.5e-13 < 1e-12: noise, absorbed.
        ([1.0, 1.0 + 1.5e-12], [1.0, 1.0]),
        # 3e-12 / 2 = 1.5e-12: a real difference, kept.
        ([1.0, 1.0 + 3e-12], [1.0, 1.0 + 3e-12]),
        # Exactly 1e-12 in floating point ((b - a) / (a + b) == 1e-12): not below it, kept.
        ([_AT_TOLERANCE[0], _AT_TOLERANCE[1]], list(_AT_TOLERANCE)),
        # From 0 the tolerance is absolute, 1e-12 times the smallest normal (~2.2e-320).
        ([0.0, 1e-320], [0.0, 0.0]),
        ([0.0, 3e-320], [0.0, 3e-320]),
        # A sum beyond the largest float: Prometheus divides by the largest float instead.
        (
            [sys.float_info.max / 2, sys.float_info.max],
            [sys.float_info.max / 2, sys.float_info.max],
        ),
        # Decreases are lifted to the last accepted count; NaN is accepted as is.
        ([5.0, 3.0, 4.0, 6.0], [5.0, 5.0, 5.0, 6.0]),
        ([1.0, math.nan, 2.0], [1.0, math.nan, 2.0]),
    ],
)
def test_monotonic_fix_by_hand(counts: list[float], expected: list[float]) -> None:
    _quantile._ensure_monotonic(counts)
    assert _bits(counts) == _bits(expected)


# -- remembered layouts ------------------------------------------------------------------------


@pytest.fixture
def no_layouts() -> Iterator[None]:
    saved = dict(_quantile._RISING)
    _quantile._RISING.clear()
    yield
    _quantile._RISING.clear()
    _quantile._RISING.update(saved)


@pytest.mark.usefixtures("no_layouts")
def test_a_remembered_layout_answers_like_a_new_one() -> None:
    bounds, counts = [0.5, 1.0, 2.5, INF], [1.0, 3.0, 7.0, 8.0]
    first = quantiles_of(_ALL_QS, bounds, counts)
    assert _quantile._RISING  # remembered
    # The same list, an equal list of other float objects, and ints equal to the floats.
    for again in (bounds, [float(str(b)) for b in bounds], [0.5, 1, 2.5, INF]):
        assert _same(quantiles_of(_ALL_QS, again, counts), first)
    # A layout that no longer rises is not mistaken for the remembered one.
    assert _same(
        quantiles_of(_ALL_QS, [0.5, 2.5, 1.0, INF], [1.0, 7.0, 3.0, 8.0]),
        quantiles_of(_ALL_QS, [0.5, 1.0, 2.5, INF], [1.0, 3.0, 7.0, 8.0]),
    )
    assert quantiles_of(_ALL_QS, [0.5, math.nan, 2.5, INF], counts) == quantiles_of(
        _ALL_QS, [0.5, 2.5, INF], [1.0, 7.0, 8.0]
    )


@pytest.mark.usefixtures("no_layouts")
def test_layouts_with_a_zero_are_not_remembered() -> None:
    # -0.0 == 0.0: a remembered [0.0, ...] would hand back the wrong zero for [-0.0, ...].
    counts = [4.0, 8.0, 8.0]
    for zero in (0.0, -0.0, 0.0):
        (answer,) = quantiles_of([0.25], [zero, 1.0, INF], counts)
        assert answer == 0.0
        assert math.copysign(1.0, answer) == math.copysign(1.0, zero)
    assert not _quantile._RISING


@pytest.mark.usefixtures("no_layouts")
def test_remembered_layouts_are_bounded() -> None:
    for start in range(3 * _quantile._RISING_MAX):
        quantiles_of([0.5], [float(start + 1), INF], [1.0, 2.0])
        assert len(_quantile._RISING) <= _quantile._RISING_MAX
