"""The window between two scrapes: rates from counter deltas, quantiles from bucket deltas.

Expected values come from the exposition text (regular expressions and ``tests/reference.py``),
from the Prometheus rules written out here, or by hand; never from the code under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from tgi_collector.exposition import parse
from tgi_collector.simulator import SimulatorConfig, TgiSimulator
from tgi_collector.tgi import HistogramSummary
from tgi_collector.v1 import snapshot_pb2
from tgi_collector.window import Window, compute_window

BUSY = SimulatorConfig(seed=7, failure_ratio=0.2)  # failures often enough to hit every `err`
_FAILURE = re.compile(r'^tgi_request_failure\{err="(\w+)"\} (\S+)$', re.MULTILINE)
_BUCKET_LINE = re.compile(r"^(\w+)_bucket\{([^}]*)\} \S+$", re.MULTILINE)
_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def _two_scrapes(config: SimulatorConfig = BUSY, warmup: float = 60.0) -> tuple[str, str]:
    """Two renders of one simulator, 10 simulated seconds apart."""
    simulator = TgiSimulator(config)
    simulator.advance(warmup)
    before = simulator.render_metrics()
    simulator.advance(10.0)
    return before, simulator.render_metrics()


def _failures(text: str) -> dict[str, float]:
    return {err: float(value) for err, value in _FAILURE.findall(text)}


def _scalar(text: str, sample: str) -> float:
    """An unlabelled sample's value; 0 when absent (an empty body, a series not yet hit)."""
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def _series(text: str) -> set[tuple[str, str]]:
    """(family, other labels' text) of every histogram series with buckets in ``text``."""
    found = set()
    for family, labels in _BUCKET_LINE.findall(text):
        found.add((family, ",".join(p for p in labels.split(",") if p and "le=" not in p)))
    return found


def _rates(window: Window) -> list[float]:
    return [
        window.success_rate,
        window.failure_rate,
        window.request_rate,
        window.generated_tokens_rate,
        window.input_tokens_rate,
    ]


def _labels_text(summary: HistogramSummary) -> str:
    return ",".join(f'{key}="{value}"' for key, value in summary.labels)


def _by_series(window: Window) -> dict[tuple[str, str], HistogramSummary]:
    return {(h.family, _labels_text(h)): h for h in window.histograms}


def _bucket_deltas(before: str, after: str, family: str, labels: str) -> list[tuple[float, float]]:
    """Per-bucket differences of one series between two texts (absent before: from zero)."""
    old = dict(reference.buckets_from_text(before, family, labels))
    new = reference.buckets_from_text(after, family, labels)
    assert not old or set(old) == {le for le, _ in new}, "the test assumes an unchanged layout"
    return [(le, count - old.get(le, 0.0)) for le, count in new]


def _count_sum(text: str, family: str, labels: str) -> tuple[float, float]:
    braces = f"{{{labels}}}" if labels else ""
    return _scalar(text, f"{family}_count{braces}"), _scalar(text, f"{family}_sum{braces}")


def _assert_quantiles(summary: HistogramSummary, buckets: list[tuple[float, float]]) -> None:
    for field, q in _QUANTILES.items():
        expected = reference.histogram_quantile(q, buckets)
        got = getattr(summary, field)
        if math.isnan(expected):
            assert got is None, (summary.family, field)
        else:
            assert got == pytest.approx(expected, rel=1e-12), (summary.family, field)


def _assert_window_histograms(window: Window, before: str, after: str) -> None:
    """Every series of ``after``: count, sum, mean and quantiles of its deltas since ``before``."""
    found = _by_series(window)
    assert set(found) == _series(after)
    assert len(found) == len(window.histograms)  # no series twice
    for (family, labels), summary in found.items():
        buckets = _bucket_deltas(before, after, family, labels)
        new_count, new_sum = _count_sum(after, family, labels)
        old_count, old_sum = _count_sum(before, family, labels)
        assert summary.count == new_count - old_count
        assert summary.sum == pytest.approx(new_sum - old_sum, rel=1e-9, abs=1e-9)
        if summary.count:
            assert summary.mean == pytest.approx(summary.sum / summary.count)
        else:
            assert summary.mean is None
        _assert_quantiles(summary, buckets)


# -- a window of one running simulator -------------------------------------------------------


def test_rates_are_counter_deltas_per_second() -> None:
    before, after = _two_scrapes()
    window = compute_window(parse(before), parse(after), 10.0)

    success = _scalar(after, "tgi_request_success") - _scalar(before, "tgi_request_success")
    old_failures, new_failures = _failures(before), _failures(after)
    by_err = {err: value - old_failures.get(err, 0.0) for err, value in new_failures.items()}
    assert success > 0 and sum(by_err.values()) > 0  # a window where something happened
    assert window.duration_seconds == 10.0
    assert window.success_rate == pytest.approx(success / 10)
    assert dict(window.failure_rate_by_err) == pytest.approx(
        {err: delta / 10 for err, delta in by_err.items()}
    )
    assert window.failure_rate == pytest.approx(sum(by_err.values()) / 10)
    assert window.request_rate == pytest.approx((success + sum(by_err.values())) / 10)
    for rate, family in (
        (window.generated_tokens_rate, "tgi_request_generated_tokens"),
        (window.input_tokens_rate, "tgi_request_input_length"),
    ):
        delta = _scalar(after, f"{family}_sum") - _scalar(before, f"{family}_sum")
        assert delta > 0
        assert rate == pytest.approx(delta / 10)
    assert window.counter_reset is False


def test_window_quantiles_come_from_bucket_deltas() -> None:
    before, after = _two_scrapes()
    window = compute_window(parse(before), parse(after), 10.0)
    _assert_window_histograms(window, before, after)
    # The window differs from the lifetime: a summary of the current counts would fail above.
    duration = _by_series(window)[("tgi_request_duration", "")]
    lifetime = reference.buckets_from_text(after, "tgi_request_duration")
    assert duration.count < lifetime[-1][1]
    assert duration.p50 is not None


def test_restart_counts_from_the_new_values() -> None:
    old = TgiSimulator(SimulatorConfig(seed=8, failure_ratio=0.2))
    old.advance(300.0)
    new = TgiSimulator(SimulatorConfig(seed=9, failure_ratio=0.2))
    new.advance(5.0)
    before, after = old.render_metrics(), new.render_metrics()
    # Preconditions: every counter and histogram count of the restarted target is lower.
    assert 0 < _scalar(after, "tgi_request_success") < _scalar(before, "tgi_request_success")
    old_failures, new_failures = _failures(before), _failures(after)
    assert new_failures and all(v < old_failures[err] for err, v in new_failures.items())
    assert all(
        _count_sum(after, *series)[0] < _count_sum(before, *series)[0] for series in _series(after)
    )

    window = compute_window(parse(before), parse(after), 10.0)
    assert window.counter_reset is True
    assert window.success_rate == pytest.approx(_scalar(after, "tgi_request_success") / 10)
    assert dict(window.failure_rate_by_err) == pytest.approx(
        {err: value / 10 for err, value in new_failures.items()}
    )
    assert window.failure_rate == pytest.approx(sum(new_failures.values()) / 10)
    assert window.generated_tokens_rate == pytest.approx(
        _scalar(after, "tgi_request_generated_tokens_sum") / 10
    )
    assert window.input_tokens_rate == pytest.approx(
        _scalar(after, "tgi_request_input_length_sum") / 10
    )
    assert all(rate >= 0 for rate in [*_rates(window), *window.failure_rate_by_err.values()])
    # Reset series: the window is the new lifetime, i.e. deltas from an empty exposition.
    _assert_window_histograms(window, "", after)


def test_unchanged_target_gives_an_empty_window() -> None:
    text = _two_scrapes()[1]
    window = compute_window(parse(text), parse(text), 10.0)
    assert window.counter_reset is False
    assert _rates(window) == [0.0] * 5
    assert dict(window.failure_rate_by_err) == {err: 0.0 for err in _failures(text)}
    assert {(h.family, _labels_text(h)) for h in window.histograms} == _series(text)
    for summary in window.histograms:
        assert (summary.count, summary.sum, summary.mean) == (0.0, 0.0, None)
        assert (summary.p50, summary.p90, summary.p95, summary.p99) == (None,) * 4
    # A frozen value, hashable like the rest of the domain model.
    assert hash(window) == hash(compute_window(parse(text), parse(text), 10.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        window.success_rate = 1.0  # type: ignore[misc]


def test_first_requests_after_an_empty_body() -> None:
    after = _two_scrapes()[1]
    window = compute_window(parse(""), parse(after), 4.0)
    assert window.counter_reset is False
    assert window.success_rate == pytest.approx(_scalar(after, "tgi_request_success") / 4)
    assert dict(window.failure_rate_by_err) == pytest.approx(
        {err: value / 4 for err, value in _failures(after).items()}
    )
    _assert_window_histograms(window, "", after)


def test_a_target_back_to_an_empty_body_restarted() -> None:
    before = _two_scrapes()[1]
    window = compute_window(parse(before), parse(""), 10.0)
    assert window.counter_reset is True
    assert (window.success_rate, window.failure_rate, window.histograms) == (0.0, 0.0, ())
    assert dict(window.failure_rate_by_err) == {}


@pytest.mark.parametrize("duration", [0.0, -5.0, math.nan, math.inf])
def test_no_rates_without_a_positive_duration(duration: float) -> None:
    before, after = _two_scrapes()
    window = compute_window(parse(before), parse(after), duration)
    assert window.duration_seconds == 0.0
    assert _rates(window) == [0.0] * 5
    assert set(window.failure_rate_by_err.values()) == {0.0}
    # Quantiles do not depend on the duration.
    _assert_window_histograms(window, before, after)


# -- the real TGI scrape, bumped by known amounts --------------------------------------------


def _bump(text: str, family: str, from_bound: float, observations: int, total: float) -> str:
    """``observations`` more in the unlabelled series of ``family``, all in the bucket whose
    upper bound is ``from_bound``, adding ``total`` to its sum."""

    def bucket(match: re.Match[str]) -> str:
        value = int(match[2]) + (observations if float(match[1]) >= from_bound else 0)
        return f'{family}_bucket{{le="{match[1]}"}} {value}'

    text, n = re.subn(rf'^{family}_bucket\{{le="([^"]+)"\}} (\d+)$', bucket, text, flags=re.M)
    assert n > 2
    text, n = re.subn(
        rf"^{family}_count (\d+)$",
        lambda m: f"{family}_count {int(m[1]) + observations}",
        text,
        flags=re.M,
    )
    assert n == 1
    text, n = re.subn(
        rf"^{family}_sum (\S+)$",
        lambda m: f"{family}_sum {float(m[1]) + total!r}",
        text,
        flags=re.M,
    )
    assert n == 1
    return text


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_real_scrape_with_known_increments() -> None:
    before = reference.TGI_REAL.read_text()
    after = _replace(before, "tgi_request_success 109\n", "tgi_request_success 119\n")
    after = _replace(
        after,
        'tgi_request_failure{err="validation"} 2\n',
        'tgi_request_failure{err="validation"} 5\ntgi_request_failure{err="overloaded"} 4\n',
    )
    # TGI double counts tgi_request_count; a window built on it would say 60 / 5 = 12.
    after = _replace(after, "tgi_request_count 111\n", "tgi_request_count 171\n")
    # 10 requests of ~3 s, in (2.525..., 3.787...]; 4 prompts of 25 tokens, in (20.44, 25.55];
    # 10 answers of 50 tokens, in (46.08, 51.2].
    after = _bump(after, "tgi_request_duration", 3.787675244106352, 10, 30.0)
    after = _bump(after, "tgi_request_input_length", 25.55, 4, 100.0)
    after = _bump(after, "tgi_request_generated_tokens", 51.2, 10, 500.0)

    window = compute_window(parse(before), parse(after), 5.0)

    assert window.counter_reset is False
    assert window.success_rate == 2.0  # 10 / 5
    assert dict(window.failure_rate_by_err) == {"validation": 0.6, "overloaded": 0.8}
    assert window.failure_rate == pytest.approx(1.4)  # (3 + 4) / 5
    assert window.request_rate == pytest.approx(3.4)  # (10 + 7) / 5, not 12
    assert window.generated_tokens_rate == 100.0  # 500 / 5
    assert window.input_tokens_rate == 20.0  # 100 / 5
    found = _by_series(window)
    assert set(found) == _series(before)
    low, high = 2.5251168294042348, 3.787675244106352
    expected = {
        "tgi_request_duration": (10, 30.0, 3.0, low, high),
        "tgi_request_input_length": (4, 100.0, 25.0, 20.44, 25.55),
        "tgi_request_generated_tokens": (10, 500.0, 50.0, 46.08, 51.2),
    }
    for (family, _), summary in found.items():
        if family not in expected:
            assert (summary.count, summary.mean, summary.p50, summary.p99) == (0, None, None, None)
            continue
        count, total, mean, lower, upper = expected[family]
        assert summary.count == count
        assert summary.sum == pytest.approx(total)
        assert summary.mean == pytest.approx(mean)
        # Every observation in one bucket: linear interpolation from its lower bound.
        for field, q in _QUANTILES.items():
            assert getattr(summary, field) == pytest.approx(lower + (upper - lower) * q), field


def test_total_spelling_of_counters() -> None:
    """metrics-exporter-prometheus 0.18 adds `_total` to counters; the rates are the same."""
    before, after = _two_scrapes()
    plain = compute_window(parse(before), parse(after), 10.0)
    renamed = [
        re.sub(r"\btgi_request_(success|failure)\b", r"tgi_request_\1_total", text)
        for text in (before, after)
    ]
    assert "tgi_request_success_total " in renamed[1]
    window = compute_window(parse(renamed[0]), parse(renamed[1]), 10.0)
    assert window.success_rate == plain.success_rate > 0
    assert dict(window.failure_rate_by_err) == dict(plain.failure_rate_by_err)
    assert window.failure_rate > 0


def test_plan_sample_untyped_totals() -> None:
    """The plan's sample: untyped `_total` samples, a failure without `err` (filed under "")."""
    before = reference.SEED_SAMPLE.read_text()
    after = _replace(before, "tgi_request_success_total 250\n", "tgi_request_success_total 260\n")
    after = _replace(after, "tgi_request_failure_total 3\n", "tgi_request_failure_total 5\n")
    grown = _replace(
        after,
        "tgi_request_generated_tokens_total 64000\n",
        "tgi_request_generated_tokens_total 66000\n",
    )
    window = compute_window(parse(before), parse(grown), 2.0)
    assert (window.success_rate, window.failure_rate, window.request_rate) == (5.0, 1.0, 6.0)
    assert dict(window.failure_rate_by_err) == {"": 1.0}
    assert (window.generated_tokens_rate, window.counter_reset) == (1000.0, False)
    # An untyped total that went down is a restart too: its increase is its new value.
    restarted = _replace(
        after,
        "tgi_request_generated_tokens_total 64000\n",
        "tgi_request_generated_tokens_total 100\n",
    )
    window = compute_window(parse(before), parse(restarted), 2.0)
    assert (window.generated_tokens_rate, window.counter_reset) == (50.0, True)


@pytest.mark.parametrize(("old", "new"), [("5", "NaN"), ("NaN", "5"), ("+Inf", "+Inf")])
def test_unusable_counter_values_give_no_rate(old: str, new: str) -> None:
    """NaN and inf - inf have no increase: the rate is 0, never NaN or negative."""
    window = compute_window(
        parse(f"tgi_request_success {old}\n"), parse(f"tgi_request_success {new}\n"), 1.0
    )
    assert (window.success_rate, window.request_rate, window.counter_reset) == (0.0, 0.0, False)


# -- histogram series rules, on small hand-written expositions --------------------------------


def _histogram(*lines: str) -> str:
    return "# TYPE h histogram\n" + "\n".join(lines) + "\n"


_BEFORE = _histogram(
    'h_bucket{le="1"} 2', 'h_bucket{le="2"} 4', 'h_bucket{le="+Inf"} 4', "h_sum 5", "h_count 4"
)


@pytest.mark.parametrize(
    ("after", "reset", "count", "p50"),
    [
        # Plain growth: deltas [1, 2, 2], rank 1 in (0, 1] -> 1.0; count 2.
        (
            _histogram('h_bucket{le="1"} 3', 'h_bucket{le="2"} 6', 'h_bucket{le="+Inf"} 6')
            + "h_sum 9\nh_count 6\n",
            False,
            2,
            1.0,
        ),
        # Another layout: the current lifetime, never mixed by position: rank 4 -> 1 + 3 / 5.
        (
            _histogram('h_bucket{le="1"} 3', 'h_bucket{le="4"} 8', 'h_bucket{le="+Inf"} 8')
            + "h_sum 20\nh_count 8\n",
            True,
            8,
            1.6,
        ),
        # One bucket went down, _count did not: the whole series restarted: rank 2.5 -> 1.375.
        (
            _histogram('h_bucket{le="1"} 1', 'h_bucket{le="2"} 5', 'h_bucket{le="+Inf"} 5')
            + "h_sum 6\nh_count 5\n",
            True,
            5,
            1.375,
        ),
        # Only _sum went down: restarted too (count and buckets are the new lifetime's).
        (
            _histogram('h_bucket{le="1"} 2', 'h_bucket{le="2"} 4', 'h_bucket{le="+Inf"} 4')
            + "h_sum 3\nh_count 4\n",
            True,
            4,
            1.0,
        ),
    ],
)
def test_histogram_series_rules(after: str, reset: bool, count: float, p50: float) -> None:
    window = compute_window(parse(_BEFORE), parse(after), 1.0)
    (summary,) = window.histograms
    assert window.counter_reset is reset
    assert summary.count == count
    assert summary.p50 == pytest.approx(p50)


_small = st.integers(0, 30)


@st.composite
def _series_scraped_twice(draw: st.DrawFn) -> tuple[list[float], list[int], list[int]]:
    """A series' bounds (+Inf last) and its cumulative counts in two scrapes: the second one
    adds observations, or (sometimes) is a new lifetime, which may have buckets that are lower.
    """
    tenths = draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=12, unique=True))
    bounds = [tenth / 10 for tenth in sorted(tenths)] + [math.inf]
    counts = st.lists(_small, min_size=len(bounds), max_size=len(bounds)).map(
        lambda increments: list(itertools.accumulate(increments))
    )
    before = draw(counts)
    if draw(st.booleans()):
        after = draw(counts)
    else:
        after = [then + more for then, more in zip(before, draw(counts), strict=True)]
    return bounds, before, after


def _render(bounds: list[float], counts: list[int], with_count_and_sum: bool) -> str:
    buckets = [
        f'h_bucket{{le="{"+Inf" if bound == math.inf else bound}"}} {count}'
        for bound, count in zip(bounds, counts, strict=True)
    ]
    # _sum: 1.5 per observation, so that it grows with _count and stays exact.
    totals = [f"h_sum {counts[-1] * 1.5}", f"h_count {counts[-1]}"] if with_count_and_sum else []
    return _histogram(*buckets, *totals)


@settings(max_examples=300, deadline=None)
@given(_series_scraped_twice(), st.booleans())
def test_window_of_one_series_matches_the_reference(
    scrapes: tuple[list[float], list[int], list[int]], with_count_and_sum: bool
) -> None:
    """Deltas bucket by bucket; or, after a bucket went down, the new lifetime as a whole."""
    bounds, before, after = scrapes
    went_down = any(now < then for now, then in zip(after, before, strict=True))
    window = compute_window(
        parse(_render(bounds, before, with_count_and_sum)),
        parse(_render(bounds, after, with_count_and_sum)),
        1.0,
    )
    (summary,) = window.histograms
    if went_down:
        counts = [float(count) for count in after]
    else:
        counts = [float(now - then) for now, then in zip(after, before, strict=True)]
    assert window.counter_reset is went_down
    # Without _count, the count is the +Inf bucket's; without _sum, the sum is 0.
    assert summary.count == counts[-1]
    assert summary.sum == (counts[-1] * 1.5 if with_count_and_sum else 0.0)
    if with_count_and_sum and counts[-1] > 0:
        assert summary.mean == 1.5
    else:
        assert summary.mean is None
    # Deltas need not be cumulative (the new lifetime may be ahead in the low buckets only):
    # PromQL lifts each to the highest one before it, the "envelope".
    envelope = list(itertools.accumulate(counts, max))
    _assert_quantiles(summary, list(zip(bounds, envelope, strict=True)))


def test_histogram_series_are_matched_by_labels() -> None:
    before = _histogram(
        'h_bucket{a="x",b="y",le="1"} 1', 'h_bucket{a="x",b="y",le="+Inf"} 3', "h_count{} 0"
    )
    # Label order changed; one series is new (not a reset); one without observations vanished
    # (not a reset either: nothing went down).
    after = _histogram(
        'h_bucket{b="y",a="x",le="1"} 2',
        'h_bucket{b="y",a="x",le="+Inf"} 5',
        'h_bucket{a="z",le="1"} 0',
        'h_bucket{a="z",le="+Inf"} 7',
    )
    window = compute_window(parse(before), parse(after), 1.0)
    assert window.counter_reset is False
    counts = {summary.labels: summary.count for summary in window.histograms}
    assert counts == {(("b", "y"), ("a", "x")): 2.0, (("a", "z"),): 7.0}


def test_vanished_series_mean_a_restart() -> None:
    failure = 'tgi_request_failure{err="validation"} 3\n'
    assert compute_window(parse(failure), parse(""), 1.0).counter_reset is True
    other = "# TYPE tgi_batch_inference_count counter\ntgi_batch_inference_count 3\n"
    assert compute_window(parse(other), parse(""), 1.0).counter_reset is True
    assert compute_window(parse(_BEFORE), parse(""), 1.0).counter_reset is True
    # Down in a counter the window does not report still says the target restarted.
    lower = "# TYPE tgi_batch_inference_count counter\ntgi_batch_inference_count 2\n"
    assert compute_window(parse(other), parse(lower), 1.0).counter_reset is True
    assert compute_window(parse(lower), parse(other), 1.0).counter_reset is False


def test_window_maps_onto_the_wire_message() -> None:
    wire = [field.name for field in snapshot_pb2.Window.DESCRIPTOR.fields]
    ours = [field.name for field in dataclasses.fields(Window)]
    assert ours == ["duration_seconds" if name == "duration" else name for name in wire]


# -- nothing negative, ever ------------------------------------------------------------------

_values = st.integers(min_value=0, max_value=1000)


def _counters(success: int, failure: int, tokens: int) -> str:
    return (
        f"# TYPE tgi_request_success counter\ntgi_request_success {success}\n"
        f'# TYPE tgi_request_failure counter\ntgi_request_failure{{err="dropped"}} {failure}\n'
        f"# TYPE tgi_request_generated_tokens histogram\n"
        f'tgi_request_generated_tokens_bucket{{le="+Inf"}} 0\n'
        f"tgi_request_generated_tokens_sum {tokens}\ntgi_request_generated_tokens_count 0\n"
    )


@given(st.tuples(_values, _values, _values), st.tuples(_values, _values, _values))
def test_rates_follow_the_reset_rule(old: tuple[int, int, int], new: tuple[int, int, int]) -> None:
    window = compute_window(parse(_counters(*old)), parse(_counters(*new)), 2.0)
    # Prometheus: a counter that went down restarted, and its increase is its new value.
    increases = [b if b < a else b - a for a, b in zip(old, new, strict=True)]
    assert window.success_rate == increases[0] / 2
    assert window.failure_rate == increases[1] / 2
    assert window.generated_tokens_rate == increases[2] / 2
    assert window.request_rate == (increases[0] + increases[1]) / 2
    assert window.counter_reset is any(b < a for a, b in zip(old, new, strict=True))
    assert min(window.success_rate, window.failure_rate, window.generated_tokens_rate) >= 0
