"""The TGI view: real scrapes, the plan's sample, alias spellings, look-alikes, /info documents.

Expected values are read from the data files with regular expressions here (not through the
project's parser or view), or taken from the plan's own tests for the seed sample.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tgi_collector.errors import ExpositionError
from tgi_collector.exposition import Parser, parse
from tgi_collector.metrics import (
    Bucket,
    Exposition,
    HistogramSeries,
    MetricFamily,
    MetricType,
    Sample,
    group_histograms,
    group_summaries,
)
from tgi_collector.tgi import (
    BatchMetrics,
    GenerationMetrics,
    HistogramSummary,
    ModelInfo,
    RequestMetrics,
    TgiView,
    ViewCache,
    build_view,
    model_info_from_json,
    summarize_histogram,
)

DATA = Path(__file__).parent / "data"
REAL = DATA / "tgi" / "tgi-3.3-real.prom"
SEED = DATA / "seed" / "seed-plan-sample.prom"
VLLM = DATA / "vllm" / "vllm-0.5-real.prom"
SGLANG = DATA / "sglang" / "sglang-0.4-docs.prom"
OPENMETRICS = DATA / "openmetrics"


# -- a reference parser: prometheus_client, mapped onto tgi_collector.metrics -----------------

_TYPES = {
    "counter": MetricType.COUNTER,
    "gauge": MetricType.GAUGE,
    "histogram": MetricType.HISTOGRAM,
    "summary": MetricType.SUMMARY,
}
_SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", re.MULTILINE)


def _reference_parse(text: str) -> Exposition:
    """prometheus_client's parser, with its results put back into wire spelling.

    Used to check that the view does not depend on which parser built the exposition.

    prometheus_client strips ``_total`` from counter family names and adds it to counter
    sample names; the project's data model keeps sample names as on the wire, so the sample
    names are restored from the text.
    """
    wire_names = set(_SAMPLE_NAME.findall(text))
    families = []
    for metric in text_string_to_metric_families(text):
        kind = _TYPES.get(metric.type, MetricType.UNTYPED)
        samples = []
        for sample in metric.samples:
            name = sample.name
            if name not in wire_names and name.endswith("_total"):
                name = name.removesuffix("_total")
            timestamp = None if sample.timestamp is None else int(float(sample.timestamp) * 1000)
            samples.append(Sample(name, tuple(sample.labels.items()), sample.value, timestamp))
        histograms = group_histograms(metric.name, samples) if kind is MetricType.HISTOGRAM else ()
        summaries = group_summaries(metric.name, samples) if kind is MetricType.SUMMARY else ()
        families.append(
            MetricFamily(
                name=metric.name,
                type=kind,
                help=metric.documentation or None,
                samples=tuple(samples),
                histograms=histograms,
                summaries=summaries,
            )
        )
    return Exposition(tuple(families))


def _view_of(path: Path) -> TgiView:
    return build_view(parse(path.read_text()))


# -- expected values straight from the text -----------------------------------------------------


def _scalar(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name``."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match[1])


def _by_label(text: str, name: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of the samples ``name{label="..."}``."""
    pattern = rf'^{re.escape(name)}\{{{label}="([^"]*)"\}} (\S+)$'
    return {key: float(value) for key, value in re.findall(pattern, text, re.MULTILINE)}


def _buckets(text: str, family: str) -> list[tuple[float, float]]:
    """``(le, count)`` of the unlabelled histogram series ``family``, sorted by bound."""
    pattern = rf'^{re.escape(family)}_bucket\{{le="([^"]+)"\}} (\S+)$'
    return sorted((float(le), float(v)) for le, v in re.findall(pattern, text, re.MULTILINE))


def _interpolate(q: float, pairs: list[tuple[float, float]]) -> float:
    """Textbook histogram_quantile for a clean series whose rank is in a finite bucket > 0."""
    rank = q * pairs[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in pairs:
        if count >= rank:
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    raise AssertionError("rank beyond the finite buckets")


# -- the real TGI 3.3 scrape ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_text() -> str:
    return REAL.read_text()


@pytest.fixture(scope="module")
def real_view(real_text: str) -> TgiView:
    return build_view(parse(real_text))


def test_real_request_counters(real_text: str, real_view: TgiView) -> None:
    request = real_view.request
    assert request.success_total == _scalar(real_text, "tgi_request_success") == 109
    failures = _by_label(real_text, "tgi_request_failure", "err")
    assert failures == {"validation": 2.0}
    assert request.failures_by_err == failures
    assert request.failure_total == sum(failures.values()) == 2
    assert request.request_count == _scalar(real_text, "tgi_request_count") == 111
    assert request.queue_size == _scalar(real_text, "tgi_queue_size")


@pytest.mark.parametrize(
    ("field", "family"),
    [
        ("mean_time_per_token_seconds", "tgi_request_mean_time_per_token_duration"),
        ("validation_duration_seconds", "tgi_request_validation_duration"),
        ("queue_duration_seconds", "tgi_request_queue_duration"),
        ("inference_duration_seconds", "tgi_request_inference_duration"),
        ("request_duration_seconds", "tgi_request_duration"),
    ],
)
def test_real_request_means(real_text: str, real_view: TgiView, field: str, family: str) -> None:
    expected = _scalar(real_text, f"{family}_sum") / _scalar(real_text, f"{family}_count")
    assert getattr(real_view.request, field) == pytest.approx(expected, rel=1e-15)


def test_real_generation(real_text: str, real_view: TgiView) -> None:
    generation = real_view.generation

    def mean(family: str) -> float:
        return _scalar(real_text, f"{family}_sum") / _scalar(real_text, f"{family}_count")

    assert generation.input_length == pytest.approx(mean("tgi_request_input_length"))
    assert generation.generated_tokens == pytest.approx(mean("tgi_request_generated_tokens"))
    assert generation.max_new_tokens == pytest.approx(mean("tgi_request_max_new_tokens"))
    assert generation.generated_tokens_total == _scalar(
        real_text, "tgi_request_generated_tokens_sum"
    )
    assert generation.input_tokens_total == _scalar(real_text, "tgi_request_input_length_sum")
    assert generation.batch_current_size == _scalar(real_text, "tgi_batch_current_size")
    assert generation.batch_current_max_tokens == _scalar(real_text, "tgi_batch_current_max_tokens")


def test_real_skipped_tokens_summary(real_text: str, real_view: TgiView) -> None:
    skipped = real_view.generation.skipped_tokens
    assert skipped is not None
    assert skipped.count == _scalar(real_text, "tgi_request_skipped_tokens_count")
    assert skipped.sum == _scalar(real_text, "tgi_request_skipped_tokens_sum")
    quantiles = _by_label(real_text, "tgi_request_skipped_tokens", "quantile")
    assert {q.quantile: q.value for q in skipped.quantiles} == {
        float(k): v for k, v in quantiles.items()
    }
    # A summary is not a histogram: it has no HistogramSummary.
    assert "tgi_request_skipped_tokens" not in {h.family for h in real_view.histograms}


def test_real_batch(real_text: str, real_view: TgiView) -> None:
    batch = real_view.batch
    for field, name in [
        ("inference_count_by_method", "tgi_batch_inference_count"),
        ("inference_success_by_method", "tgi_batch_inference_success"),
        ("inference_failure_by_method", "tgi_batch_inference_failure"),
    ]:
        assert getattr(batch, field) == _by_label(real_text, name, "method"), field
    assert batch.inference_count_by_method == {"prefill": 16, "decode": 1509}
    assert batch.inference_failure_by_method == {}  # never hit in this scrape
    assert batch.concat_by_reason == _by_label(real_text, "tgi_batch_concat", "reason")
    assert batch.concat_by_reason == {"chunking": 3}


def test_real_histogram_summaries(real_text: str, real_view: TgiView) -> None:
    # One summary per `_count` line of a histogram family, in the order of the text.
    histogram_families = re.findall(r"^# TYPE (\S+) histogram$", real_text, re.MULTILINE)
    expected: list[tuple[str, tuple[tuple[str, str], ...], float, float]] = []
    for family in histogram_families:
        counts = re.findall(rf"^{family}_count(?:\{{(.*)\}})? (\S+)$", real_text, re.MULTILINE)
        for labels, count in counts:
            label_pairs = tuple(re.findall(r'(\w+)="([^"]*)"', labels))
            sum_pattern = rf"^{family}_sum{re.escape('{' + labels + '}' if labels else '')} (\S+)$"
            sum_match = re.search(sum_pattern, real_text, re.MULTILINE)
            assert sum_match is not None
            expected.append((family, label_pairs, float(count), float(sum_match[1])))
    assert len(expected) == 18
    actual = [(h.family, h.labels, h.count, h.sum) for h in real_view.histograms]
    assert actual == expected
    for summary in real_view.histograms:
        assert summary.mean == pytest.approx(summary.sum / summary.count)


def test_real_request_duration_percentiles(real_text: str, real_view: TgiView) -> None:
    (summary,) = [h for h in real_view.histograms if h.family == "tgi_request_duration"]
    pairs = _buckets(real_text, "tgi_request_duration")
    assert pairs[-1] == (math.inf, 109.0)
    # p50: rank 54.5 in (3.787675244106352, 5.681512866159528], counts 51 -> 77;
    # p90: rank 98.1 in (5.681512866159528, 8.52226929923929], counts 77 -> 104;
    # p99: rank 107.91 in (12.783403948858936, 19.175105923288406], counts 104 -> 108.
    assert summary.p50 == pytest.approx(_interpolate(0.5, pairs), rel=1e-12)
    assert summary.p90 == pytest.approx(_interpolate(0.9, pairs), rel=1e-12)
    assert summary.p99 == pytest.approx(_interpolate(0.99, pairs), rel=1e-12)
    assert summary.p50 == pytest.approx(4.0426, abs=1e-4)
    assert summary.p90 == pytest.approx(7.9015, abs=1e-4)
    assert summary.p99 == pytest.approx(19.0313, abs=1e-4)


def test_real_token_histogram_reads_le_from_the_scrape(real_view: TgiView) -> None:
    # Token bounds are k * max_input_tokens / 100 (511 here): 109 prompts, all in
    # (5.11, 10.22]. p50: rank 54.5 -> 5.11 + 5.11 * 54.5/109 = 7.665.
    (summary,) = [h for h in real_view.histograms if h.family == "tgi_request_input_length"]
    assert summary.p50 == pytest.approx(5.11 + 5.11 * 54.5 / 109)


# -- the plan's sample -----------------------------------------------------------------------------


def test_seed_plan_sample() -> None:
    view = _view_of(SEED)
    # The plan's own expected values (tests/data/README.md).
    assert view.request.success_total == 250
    assert view.request.failure_total == 3
    assert view.request.request_count == 253
    assert view.request.queue_size == 5
    assert view.request.mean_time_per_token_seconds == 0.015
    assert view.generation.input_length == 128
    assert view.generation.generated_tokens == 256
    assert view.generation.generated_tokens_total == 64000
    assert view.generation.batch_current_size == 8
    # The rest of the file, taken as is.
    assert view.request.validation_duration_seconds == 0.002
    assert view.request.queue_duration_seconds == 0.050
    assert view.request.inference_duration_seconds == 1.2
    assert view.request.request_duration_seconds is None  # not in the sample
    assert view.generation.max_new_tokens == 512
    assert view.generation.batch_current_max_tokens == 2048
    assert view.generation.input_tokens_total == 0  # not in the sample
    # An unlabelled failure count is filed under "" so the breakdown adds up.
    assert view.request.failures_by_err == {"": 3}
    assert view.histograms == ()
    assert view.batch == BatchMetrics()


# -- alias spellings --------------------------------------------------------------------------


def _rename(text: str, names: list[str], suffix: str) -> str:
    """Append ``suffix`` to families ``names`` everywhere: HELP/TYPE lines and samples.

    Only whole names, or names followed by a histogram suffix, are renamed: the counter
    ``tgi_batch_concat`` must not turn ``tgi_batch_concat_duration`` into a different name.
    """
    for name in names:
        after = r"(?=[ {]|_bucket[ {]|_count[ {]|_sum[ {])"
        pattern = rf"^((?:# (?:HELP|TYPE) )?){re.escape(name)}{after}"
        text = re.sub(pattern, rf"\g<1>{name}{suffix}", text, flags=re.MULTILINE)
    return text


def test_total_spellings_give_the_same_view(real_text: str, real_view: TgiView) -> None:
    # metrics-exporter-prometheus 0.18 "recommended naming": every counter gets `_total`.
    counters = re.findall(r"^# TYPE (\S+) counter$", real_text, re.MULTILINE)
    assert "tgi_request_success" in counters
    renamed = _rename(real_text, counters, "_total")
    assert re.search(r"^tgi_request_success_total 109$", renamed, re.MULTILINE)
    assert re.search(r'^tgi_request_failure_total\{err="validation"\} 2$', renamed, re.MULTILINE)
    assert not re.search(r"^tgi_request_success ", renamed, re.MULTILINE)
    assert build_view(parse(renamed)) == real_view


def test_seconds_suffixed_duration_histograms(real_text: str, real_view: TgiView) -> None:
    # A unit-suffixing exporter: tgi_request_duration_seconds_bucket{...} and so on.
    durations = re.findall(
        r"^# TYPE (tgi_request_(?:\w+_)?duration) histogram$", real_text, re.MULTILINE
    )
    assert len(durations) == 5
    view = build_view(parse(_rename(real_text, durations, "_seconds")))
    assert view.request == real_view.request
    assert {h.family for h in view.histograms} >= {f"{d}_seconds" for d in durations}
    assert "tgi_request_duration_seconds_bucket" in _rename(real_text, durations, "_seconds")


# -- empty, reordered, odd ------------------------------------------------------------------------

_EMPTY_VIEW = TgiView(RequestMetrics(), GenerationMetrics(), BatchMetrics(), ())


def test_empty_exposition() -> None:
    # A freshly started TGI serves an empty body until its first request.
    assert build_view(Exposition(())) == _EMPTY_VIEW
    assert build_view(parse("")) == _EMPTY_VIEW
    assert _EMPTY_VIEW.request.failures_by_err == {}
    assert _EMPTY_VIEW.request.mean_time_per_token_seconds is None


def _families_of(text: str) -> list[str]:
    # TGI ends every family with a blank line.
    return [block for block in text.split("\n\n") if block.strip()]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_family_order_does_not_matter(real_text: str, real_view: TgiView, seed: int) -> None:
    blocks = _families_of(real_text)
    assert len(blocks) == 24
    random.Random(seed).shuffle(blocks)
    shuffled = build_view(parse("\n\n".join(blocks) + "\n"))
    assert shuffled.request == real_view.request
    assert shuffled.generation == real_view.generation
    assert shuffled.batch == real_view.batch

    def key(h: HistogramSummary) -> tuple[str, tuple[tuple[str, str], ...]]:
        return h.family, h.labels

    assert sorted(shuffled.histograms, key=key) == sorted(real_view.histograms, key=key)
    # ... and the summaries follow the new family order.
    order = [m for b in blocks if (m := re.search(r"^# TYPE (\S+) histogram$", b, re.M))]
    assert list(dict.fromkeys(h.family for h in shuffled.histograms)) == [m[1] for m in order]


def test_prometheus_client_look_alike() -> None:
    # What a prometheus_client-based TGI look-alike serves: `_total` counters with extra
    # labels, `_created` gauges holding Unix timestamps, floats such as `3.0`.
    registry = CollectorRegistry()
    success = Counter("tgi_request_success", "ok", ["model"], registry=registry)
    success.labels("a").inc(3)
    success.labels("b").inc(2)
    failure = Counter("tgi_request_failure", "failed", ["err", "model"], registry=registry)
    failure.labels("validation", "a").inc(1)
    failure.labels("validation", "b").inc(4)
    failure.labels("overloaded", "a").inc(2)
    Gauge("tgi_queue_size", "queue", registry=registry).set(7)
    duration = Histogram(
        "tgi_request_duration", "latency", ["model"], buckets=(0.5, 1, 2), registry=registry
    )
    for model, seconds in [("a", 0.25), ("a", 1.5), ("b", 0.75)]:
        duration.labels(model).observe(seconds)
    text = generate_latest(registry).decode()
    assert "tgi_request_success_created" in text and "tgi_request_success_total" in text

    view = build_view(parse(text))
    # Labelled where one value is expected: added up; `_created` timestamps are not counts.
    assert view.request.success_total == 5.0
    assert view.request.failures_by_err == {"validation": 5.0, "overloaded": 2.0}
    assert view.request.failure_total == 7.0
    assert view.request.queue_size == 7.0
    # Mean over both label sets: (0.25 + 1.5 + 0.75) / 3.
    assert view.request.request_duration_seconds == pytest.approx(2.5 / 3)
    by_model = {dict(h.labels)["model"]: h for h in view.histograms}
    assert set(by_model) == {"a", "b"}
    assert (by_model["a"].count, by_model["a"].sum) == (2.0, 1.75)
    # Series a: 1 observation <= 0.5, 1 in (1, 2]. p50: rank 1 -> le=0.5: 0.5 * 1/1 = 0.5.
    assert by_model["a"].p50 == 0.5
    # Series b: 1 observation in (0.5, 1]. p50: rank 0.5 -> 0.5 + 0.5 * 0.5/1 = 0.75.
    assert by_model["b"].p50 == 0.75


def test_odd_look_alike_shapes() -> None:
    text = "\n".join(
        [
            "# TYPE tgi_request_count counter",
            'tgi_request_count{shard="0"} 1.0',
            'tgi_request_count{shard="1"} 2.0',
            "# TYPE tgi_request_failure counter",
            'tgi_request_failure{err="validation",shard="0"} 1.0',
            'tgi_request_failure{shard="1",err="validation"} 1.0',
            'tgi_request_failure{shard="1"} 4.0',
            # A summary where TGI has a histogram: the mean is still sum / count.
            "# TYPE tgi_request_input_length summary",
            'tgi_request_input_length{quantile="0.5"} 999.0',
            "tgi_request_input_length_sum 300.0",
            "tgi_request_input_length_count 3.0",
            "# TYPE tgi_batch_current_size gauge",
            "tgi_batch_current_size 0.0",
            "# TYPE tgi_batch_inference_count counter",
            "tgi_batch_inference_count 5.0",
            "",
        ]
    )
    view = build_view(parse(text))
    assert view.request.request_count == 3.0
    assert view.request.failures_by_err == {"validation": 2.0, "": 4.0}
    assert view.request.failure_total == 6.0
    assert view.generation.input_length == 100.0
    assert view.generation.input_tokens_total == 300.0
    assert view.generation.batch_current_size == 0.0
    assert view.batch.inference_count_by_method == {"": 5.0}
    assert view.histograms == ()


def test_histogram_wins_over_a_plain_value_of_the_same_meaning() -> None:
    histogram = MetricFamily(
        "tgi_request_queue_duration",
        MetricType.HISTOGRAM,
        None,
        (),
        histograms=(HistogramSeries((), (Bucket(1.0, 2.0), Bucket(math.inf, 4.0)), 4.0, 6.0),),
    )
    plain = MetricFamily(
        "tgi_request_queue_duration_seconds",
        MetricType.GAUGE,
        None,
        (Sample("tgi_request_queue_duration_seconds", (), 99.0),),
    )
    for families in [(histogram, plain), (plain, histogram)]:
        assert build_view(Exposition(families)).request.queue_duration_seconds == 1.5
    # The histogram decides even when it has seen nothing yet: the mean is unknown.
    empty = HistogramSeries((), (Bucket(1.0, 0.0), Bucket(math.inf, 0.0)), 0.0, 0.0)
    no_observations = MetricFamily(
        "tgi_request_queue_duration", MetricType.HISTOGRAM, None, (), histograms=(empty,)
    )
    view = build_view(Exposition((plain, no_observations)))
    assert view.request.queue_duration_seconds is None


def test_histogram_without_observations() -> None:
    # TGI right after start, or a window with no traffic: known to be empty, so no mean and
    # no quantiles, but count and sum are 0 rather than unknown.
    empty = HistogramSeries((), (Bucket(0.1, 0.0), Bucket(1.0, 0.0), Bucket(math.inf, 0.0)), 0, 0)
    family = MetricFamily("tgi_request_duration", MetricType.HISTOGRAM, None, (), (empty,))
    view = build_view(Exposition((family,)))
    assert view.request.request_duration_seconds is None
    assert view.histograms == (
        HistogramSummary("tgi_request_duration", (), 0, 0, None, None, None, None, None),
    )


def test_stray_sample_in_a_histogram_family_is_no_series() -> None:
    text = "\n".join(
        [
            "# TYPE tgi_request_duration histogram",
            'tgi_request_duration_bucket{le="1"} 1',
            'tgi_request_duration_bucket{le="+Inf"} 2',
            "tgi_request_duration_sum 3",
            "tgi_request_duration_count 2",
            'tgi_request_duration_seconds{model="m"} 7',
            "",
        ]
    )
    samples = tuple(
        Sample(name, tuple(re.findall(r'(\w+)="([^"]*)"', labels)), float(value))
        for name, labels, value in re.findall(r"^(\w+)(?:\{(.*)\})? (\S+)$", text, re.M)
    )
    # Grouped as the data model does it, the stray sample makes an empty series {model="m"}.
    grouped = group_histograms("tgi_request_duration", samples)
    assert len(grouped) == 2
    family = MetricFamily("tgi_request_duration", MetricType.HISTOGRAM, None, samples, grouped)
    view = build_view(Exposition((family,)))
    assert [(h.labels, h.count) for h in view.histograms] == [((), 2.0)]
    assert view.request.request_duration_seconds == 1.5


def test_skipped_tokens_prefers_the_unlabelled_series() -> None:
    text = "\n".join(
        [
            "# TYPE tgi_request_skipped_tokens summary",
            'tgi_request_skipped_tokens{shard="1",quantile="0.5"} 9',
            'tgi_request_skipped_tokens_count{shard="1"} 9',
            'tgi_request_skipped_tokens{quantile="0.5"} 1',
            "tgi_request_skipped_tokens_count 4",
            "",
        ]
    )
    skipped = build_view(parse(text)).generation.skipped_tokens
    assert skipped is not None
    assert (skipped.labels, skipped.count) == ((), 4.0)
    only_labelled = "\n".join(text.splitlines()[:3]) + "\n"
    skipped = build_view(parse(only_labelled)).generation.skipped_tokens
    assert skipped is not None
    assert (skipped.labels, skipped.count) == ((("shard", "1"),), 9.0)


def test_summarize_histogram_on_a_window_delta() -> None:
    # Watch passes per-bucket deltas between two scrapes; `_count` may be absent, then the
    # +Inf bucket gives it. 4 observations <= 1, 4 more <= 2: p50: rank 4 -> le=1: 1.0;
    # p90: rank 7.2 -> 1 + 1 * (7.2-4)/4 = 1.8.
    delta = HistogramSeries(
        (("method", "decode"),),
        (Bucket(1.0, 4.0), Bucket(2.0, 8.0), Bucket(math.inf, 8.0)),
        count=None,
        sum=10.0,
    )
    summary = summarize_histogram("tgi_batch_inference_duration", delta)
    assert (summary.count, summary.sum, summary.mean) == (8.0, 10.0, 1.25)
    assert summary.p50 == 1.0
    assert summary.p90 == pytest.approx(1.8)
    assert summary.labels == (("method", "decode"),)


def test_family_built_without_grouped_series_is_still_summarized() -> None:
    samples = (
        Sample("tgi_request_duration_bucket", (("le", "1"),), 1.0),
        Sample("tgi_request_duration_bucket", (("le", "+Inf"),), 2.0),
        Sample("tgi_request_duration_count", (), 2.0),
        Sample("tgi_request_duration_sum", (), 3.0),
    )
    family = MetricFamily("tgi_request_duration", MetricType.HISTOGRAM, None, samples)
    view = build_view(Exposition((family,)))
    assert view.request.request_duration_seconds == 1.5
    assert [(h.count, h.p50) for h in view.histograms] == [(2.0, 1.0)]


# -- other servers ---------------------------------------------------------------------------------


def test_vllm_scrape_has_no_tgi_values() -> None:
    text = VLLM.read_text()
    view = build_view(parse(text))
    assert view.request == RequestMetrics()
    assert view.generation == GenerationMetrics()
    assert view.batch == BatchMetrics()
    # Its histograms are still summarized, one per series, from vLLM's own families.
    families = set(re.findall(r"^# TYPE (\S+) histogram$", text, re.MULTILINE))
    assert families and {h.family for h in view.histograms} == families
    series_count = sum(
        len(re.findall(rf"^{re.escape(f)}_count[{{ ]", text, re.MULTILINE)) for f in families
    )
    assert len(view.histograms) == series_count


def test_sglang_scrape_has_no_tgi_values() -> None:
    view = build_view(parse(SGLANG.read_text()))
    assert (view.request, view.generation, view.batch) == (
        RequestMetrics(),
        GenerationMetrics(),
        BatchMetrics(),
    )


def test_openmetrics_corpus_never_breaks_the_view() -> None:
    viewed = 0
    for case in sorted(OPENMETRICS.iterdir()):
        try:
            exposition = parse((case / "metrics").read_text())
        except ExpositionError:  # a file the parser refuses never reaches the view
            continue
        build_view(exposition)
        viewed += 1
    assert viewed >= 20


# -- any exposition at all -------------------------------------------------------------------------

_NAMES = [
    "tgi_request_success",
    "tgi_request_failure",
    "tgi_request_count",
    "tgi_queue_size",
    "tgi_request_duration",
    "tgi_request_input_length",
    "tgi_request_generated_tokens",
    "tgi_request_skipped_tokens",
    "tgi_batch_inference_count",
    "tgi_batch_concat",
]
_SUFFIXES = ["", "_total", "_seconds", "_bucket", "_count", "_sum", "_created"]
_LABELS = st.lists(
    st.tuples(
        st.sampled_from(["err", "method", "reason", "le", "quantile", "model"]),
        st.sampled_from(["validation", "prefill", "+Inf", "0.5", "1", "NaN", "-Inf", "x", ""]),
    ),
    max_size=3,
).map(tuple)


@st.composite
def _families(draw: st.DrawFn) -> MetricFamily:
    name = draw(st.sampled_from(_NAMES)) + draw(st.sampled_from(["", "_total", "_seconds"]))
    kind = draw(st.sampled_from(list(MetricType)))
    samples = tuple(
        draw(
            st.lists(
                st.builds(
                    Sample,
                    st.sampled_from(_SUFFIXES).map(lambda suffix: name + suffix),
                    _LABELS,
                    st.floats(allow_nan=True, allow_infinity=True),
                ),
                max_size=6,
            )
        )
    )
    return MetricFamily(
        name,
        kind,
        None,
        samples,
        histograms=group_histograms(name, samples) if kind is MetricType.HISTOGRAM else (),
        summaries=group_summaries(name, samples) if kind is MetricType.SUMMARY else (),
    )


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=150, deadline=None)
@given(st.lists(_families(), max_size=6))
def test_any_exposition_gives_a_view(families: list[MetricFamily]) -> None:
    view = build_view(Exposition(tuple(families)))
    failures = view.request.failures_by_err
    assert _same(view.request.failure_total, sum(failures.values(), 0.0))
    histogram_names = {f.name for f in families if f.type is MetricType.HISTOGRAM}
    assert {h.family for h in view.histograms} <= histogram_names


# -- immutability ----------------------------------------------------------------------------------


def test_views_are_immutable_hashable_and_copyable(real_view: TgiView) -> None:
    with pytest.raises(TypeError):
        real_view.request.failures_by_err["validation"] = 0.0  # type: ignore[index]
    assert hash(real_view) == hash(copy.deepcopy(real_view))
    assert pickle.loads(pickle.dumps(real_view)) == real_view
    assert RequestMetrics().failures_by_err == {}
    assert dict(real_view.batch.concat_by_reason) == {"chunking": 3.0}


# -- GET /info ---------------------------------------------------------------------------------

# TGI 3.x /info (field names and example values from the router's `Info` schema).
_INFO_V3: dict[str, Any] = {
    "model_id": "bigscience/blomm-560m",
    "model_sha": "e985a63cdc139290c5f700ff1929f0b5942cced2",
    "model_pipeline_tag": "text-generation",
    "max_concurrent_requests": 128,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_tokens": 1024,
    "max_total_tokens": 2048,
    "validation_workers": 2,
    "max_client_batch_size": 32,
    "router": "text-generation-router",
    "version": "3.3.4",
    "sha": None,
    "docker_label": None,
}


def test_model_info_from_tgi_3() -> None:
    assert model_info_from_json(_INFO_V3) == ModelInfo(
        model_id="bigscience/blomm-560m",
        model_sha="e985a63cdc139290c5f700ff1929f0b5942cced2",
        model_dtype="",  # no longer reported since TGI 2.x
        version="3.3.4",
        max_input_tokens=1024,
        max_total_tokens=2048,
        max_concurrent_requests=128,
    )


def test_model_info_before_2_1_uses_max_input_length() -> None:
    document = {
        "model_id": "m",
        "model_sha": None,
        "model_dtype": "torch.float16",
        "model_device_type": "cuda",
        "max_input_length": 1000,
        "max_total_tokens": 1512,
        "max_concurrent_requests": 64,
        "version": "1.4.0",
    }
    info = model_info_from_json(document)
    assert (info.max_input_tokens, info.model_dtype, info.model_sha) == (1000, "torch.float16", "")
    # The new name wins when both are present.
    assert model_info_from_json({**document, "max_input_tokens": 900}).max_input_tokens == 900
    # ... unless it is unreadable.
    assert model_info_from_json({**document, "max_input_tokens": "x"}).max_input_tokens == 1000


@pytest.mark.parametrize("document", [None, [], [_INFO_V3], "info", 3, 2.5, True, b"{}", {}])
def test_model_info_from_non_objects(document: object) -> None:
    assert model_info_from_json(document) == ModelInfo()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2048, 2048),
        (2048.0, 2048),
        ("2048", 2048),
        (" 2048 ", 2048),
        (0, 0),
        (2**32 - 1, 2**32 - 1),
        (2**32, 0),  # beyond the wire's uint32
        (-1, 0),
        (2048.5, 0),
        (math.inf, 0),
        (math.nan, 0),
        (True, 0),  # a bool is an int in Python, but not a token count
        ("-5", 0),
        ("1e3", 0),
        ("", 0),
        (None, 0),
        ([2048], 0),
        ({"value": 2048}, 0),
    ],
)
def test_model_info_integer_fields(value: object, expected: int) -> None:
    info = model_info_from_json({"max_total_tokens": value, "max_concurrent_requests": value})
    assert (info.max_total_tokens, info.max_concurrent_requests) == (expected, expected)


@pytest.mark.parametrize("value", [5, 1.5, None, True, ["a"], {"id": "a"}])
def test_model_info_string_fields_of_other_types_are_empty(value: object) -> None:
    info = model_info_from_json(
        {"model_id": value, "model_sha": value, "version": value, "model_dtype": value}
    )
    assert info == ModelInfo()


def test_model_info_keeps_what_is_readable() -> None:
    info = model_info_from_json({"model_id": "m", "version": 3, "max_total_tokens": "many"})
    assert info == ModelInfo(model_id="m")


@pytest.mark.parametrize("path", [REAL, SEED, VLLM, SGLANG], ids=lambda path: path.name)
def test_view_does_not_depend_on_the_parser(path: Path) -> None:
    # prometheus_client's parser names counter families differently (and groups samples
    # its own way); the view looks samples up by wire name, so both give the same view.
    text = path.read_text()
    assert build_view(parse(text)) == build_view(_reference_parse(text))


def test_view_cache_equals_build_view_and_reuses_unchanged_work(real_text: str) -> None:
    parser = Parser()
    cache = ViewCache()
    first = parser.parse(real_text)
    first_view = cache.build(first)
    assert first_view == build_view(first)
    assert cache.build(parser.parse(real_text)) is first_view  # the parser gave the same object
    # Ten more requests of 4.5 s: request_duration moves, nothing else does.
    moved = "tgi_request_duration"
    lines = []
    for line in real_text.split("\n"):
        key, _, value = line.rpartition(" ")
        bound = re.search(r'le="([^"]+)"', key)
        if key.startswith(moved + "_") and (bound is None or float(bound.group(1)) >= 4.5):
            value = repr(float(value) + (45.0 if key.endswith("_sum") else 10.0))
        lines.append(f"{key} {value}" if key else line)
    second = parser.parse("\n".join(lines))
    second_view = cache.build(second)
    assert second_view == build_view(second)
    assert second_view != first_view
    for before, after in zip(first_view.histograms, second_view.histograms, strict=True):
        if before.family == moved:
            assert after.count == before.count + 10
        else:
            assert after is before, before.family
