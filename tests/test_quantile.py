"""``histogram_quantile``: PromQL semantics, checked three ways.

1. Hand-computed cases, with the derivation from the bucket numbers next to each.
2. An independent, deliberately naive reimplementation (``_naive_quantile``: dict merge,
   running maximum, linear scan) compared on the real TGI scrape and on generated buckets.
3. Properties: result inside the bucket range, monotone in q, independent of input order.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgi_collector import tgi
from tgi_collector._quantile import bucket_quantile
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
