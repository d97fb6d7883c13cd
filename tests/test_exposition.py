"""Unit tests of the text-format parser, on the real TGI scrape and on small hand-made inputs.

Expected values come from the source files themselves, read by the deliberately simple
``_scan`` below (enough for the plain lines TGI writes), or from TGI's documented bucket
layout, never from the parser under test.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from tgi_collector.errors import ExpositionError, SampleLimitError
from tgi_collector.exposition import Parser, parse
from tgi_collector.metrics import (
    Bucket,
    Exposition,
    MetricType,
    Quantile,
    Sample,
    group_histograms,
    group_summaries,
)

DATA = Path(__file__).parent / "data"
TGI_TEXT = (DATA / "tgi" / "tgi-3.3-real.prom").read_text(encoding="utf-8")
SEED_TEXT = (DATA / "seed" / "seed-plan-sample.prom").read_text(encoding="utf-8")

_LINE = re.compile(r"([a-z_:]+)(?:\{(.*)\})? (\S+)")


def _scan(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of plain lines (no escapes, no timestamps), read independently of the parser."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = _LINE.fullmatch(line)
            assert match, line
            name, body, value = match.groups()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', body or ""))
            out.append((name, labels, float(value)))
    return out


TGI_SAMPLES = _scan(TGI_TEXT)


@pytest.fixture(scope="module")
def tgi() -> Exposition:
    return parse(TGI_TEXT)


def _samples(exposition: Exposition) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for f in exposition for s in f.samples]


# --- the real TGI scrape ----------------------------------------------------------------------


def test_tgi_every_sample_in_wire_order(tgi: Exposition) -> None:
    assert len(TGI_SAMPLES) == 1888  # tests/data/README.md
    assert tgi.sample_count == 1888
    # TGI writes each family in one block, so family order then sample order is wire order.
    assert _samples(tgi) == TGI_SAMPLES


def test_tgi_families_types_and_help(tgi: Exposition) -> None:
    type_lines = re.findall(r"^# TYPE (\S+) (\S+)$", TGI_TEXT, re.MULTILINE)
    assert [(f.name, f.type.value) for f in tgi] == type_lines
    success = tgi.get("tgi_request_success")
    assert success is not None
    assert success.type is MetricType.COUNTER
    assert success.help == "Number of successful requests"
    assert success.samples == (Sample("tgi_request_success", (), 109.0),)
    for never_has_help in ("tgi_request_failure", "tgi_batch_concat", "tgi_batch_concat_duration"):
        family = tgi.get(never_has_help)
        assert family is not None
        assert family.help is None  # absent, not ""
    assert tgi.get("tgi_request_success_total") is None  # no renaming


def test_tgi_duration_histogram_bounds_and_counts(tgi: Exposition) -> None:
    family = tgi.get("tgi_request_duration")
    assert family is not None
    assert family.type is MetricType.HISTOGRAM
    (series,) = family.histograms
    assert series.labels == ()
    bounds = [b.upper_bound for b in series.buckets]
    # TGI_METRICS.md: 35 geometric bounds 0.0001 * 1.5**n (0.00015 .. 145.61 s), then +Inf.
    assert len(bounds) == 36
    assert bounds[-1] == math.inf
    assert bounds[:-1] == pytest.approx([0.0001 * 1.5**n for n in range(1, 36)], rel=1e-9)
    expected = [v for n, labels, v in TGI_SAMPLES if n == "tgi_request_duration_bucket"]
    assert [b.cumulative_count for b in series.buckets] == expected
    assert series.count == 109.0
    assert series.sum == 541.2140316159999


def test_tgi_histograms_per_method(tgi: Exposition) -> None:
    family = tgi.get("tgi_batch_forward_duration")
    assert family is not None
    assert [s.labels for s in family.histograms] == [
        (("method", "prefill"),),
        (("method", "decode"),),
    ]
    for series in family.histograms:
        method = series.labels[0][1]
        expected = [
            (float(labels["le"]), v)
            for n, labels, v in TGI_SAMPLES
            if n == "tgi_batch_forward_duration_bucket" and labels["method"] == method
        ]
        assert [(b.upper_bound, b.cumulative_count) for b in series.buckets] == expected
        assert len(series.buckets) == 36
    assert [(s.count, s.sum) for s in family.histograms] == [
        (16.0, 1.246376687),
        (1509.0, 89.03133092599998),
    ]


def test_tgi_token_histograms_follow_max_tokens(tgi: Exposition) -> None:
    # k * max_input_tokens / 100 (511) and k * max_total_tokens / 100 (512), k = 1..100.
    for name, limit in (("tgi_request_input_length", 511), ("tgi_request_generated_tokens", 512)):
        family = tgi.get(name)
        assert family is not None
        (series,) = family.histograms
        bounds = [b.upper_bound for b in series.buckets]
        assert bounds[:-1] == pytest.approx([k * limit / 100 for k in range(1, 101)])
        assert bounds[-1] == math.inf


def test_tgi_grouping_matches_reference_grouping(tgi: Exposition) -> None:
    histograms = [f for f in tgi if f.type is MetricType.HISTOGRAM]
    assert len(histograms) == TGI_TEXT.count(" histogram\n") == 14
    for family in histograms:
        assert family.histograms == group_histograms(family.name, family.samples)
    summaries = [f for f in tgi if f.type is MetricType.SUMMARY]
    assert [f.name for f in summaries] == ["tgi_request_skipped_tokens"]
    for family in summaries:
        assert family.summaries == group_summaries(family.name, family.samples)


def test_tgi_skipped_tokens_summary(tgi: Exposition) -> None:
    family = tgi.get("tgi_request_skipped_tokens")
    assert family is not None
    assert family.help == "Speculated tokens per request"
    assert family.histograms == ()
    (series,) = family.summaries
    assert series.labels == ()
    assert series.quantiles == tuple(
        Quantile(q, 0.0) for q in (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
    )
    assert (series.count, series.sum) == (3423.0, 0.0)


def test_seed_sample_is_untyped_families_keyed_by_name() -> None:
    seed = parse(SEED_TEXT)
    expected = _scan(SEED_TEXT)
    assert [(f.name, f.type, f.help) for f in seed] == [
        (name, MetricType.UNTYPED, None) for name, _, _ in expected
    ]
    values = {f.name: f.samples[0].value for f in seed}
    # tests/data/README.md, from the plan's own tests.
    assert values["tgi_request_success_total"] == 250
    assert values["tgi_request_failure_total"] == 3
    assert values["tgi_request_count"] == 253
    assert values["tgi_queue_size"] == 5
    assert values["tgi_request_mean_time_per_token_duration_seconds"] == 0.015
    assert values["tgi_request_generated_tokens_total"] == 64000
    assert values["tgi_batch_current_size"] == 8


# --- format details ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "\n\n  \n\t\n", "# just a comment\n\n"])
def test_empty_bodies_have_no_families(text: str) -> None:
    assert len(parse(text)) == 0
    assert parse(text).sample_count == 0


def test_help_and_type_lines() -> None:
    text = (
        "# HELP a first\n"
        '# HELP a back\\\\slash \\n newline \\t \\" kept\n'
        "# TYPE a gauge\n"
        "a 1\n"
        "#  TYPE   b   counter\n"
        "b 2\n"
        "# TYPE c untyped\n"
        "# TYPE d info\n"
        "# HELP e\n"
    )
    got = parse(text)
    assert [(f.name, f.type, f.help) for f in got] == [
        ("a", MetricType.GAUGE, 'back\\slash \n newline \\t \\" kept'),
        ("b", MetricType.COUNTER, None),
        ("c", MetricType.UNTYPED, None),
        ("d", MetricType.UNTYPED, None),
        ("e", MetricType.UNTYPED, ""),
    ]


def test_unknown_type_is_an_error_unless_mended() -> None:
    # prometheus_client checks a family's type once the family is complete
    (family,) = parse("# TYPE a couter\n# TYPE a counter\na 1\n")
    assert family.type is MetricType.COUNTER
    for text, line_number in (
        ("# TYPE a couter\na 1\n", 1),
        ("# TYPE a gauge\n\n# TYPE a couter\n", 3),
        ("# TYPE a couter\n# TYPE b gauge\nb 1\n", 1),
    ):
        with pytest.raises(ExpositionError, match="couter") as info:
            parse(text)
        assert info.value.line_number == line_number


def test_comments_that_are_not_metadata() -> None:
    text = "#HELP a not help\n#x TYPE a counter\n# EOF\n# TYPEX a counter\na 1\n"
    (family,) = parse(text)
    assert (family.name, family.type, family.help) == ("a", MetricType.UNTYPED, None)


def test_label_escapes_and_odd_values() -> None:
    text = (
        'a{x="back\\\\slash",y="quote\\"",z="new\\nline",w="kept\\t\\z"} 1\n'
        'a{x="} { , = # \\" "} 2\n'
        'a{x="",} 3\n'
        "a{} 4\n"
        'a { x = "sp" , } 5\n'
        '{__name__="a",x="by name"} 6\n'
        '{"a",x="quoted name"} 7\n'
    )
    (family,) = parse(text)
    assert [s.labels for s in family.samples] == [
        (("x", "back\\slash"), ("y", 'quote"'), ("z", "new\nline"), ("w", "kept\\t\\z")),
        (("x", '} { , = # " '),),
        (("x", ""),),
        (),
        (("x", "sp"),),
        (("x", "by name"),),
        (("x", "quoted name"),),
    ]
    assert [s.value for s in family.samples] == [1, 2, 3, 4, 5, 6, 7]


def test_values_special_floats_and_timestamps() -> None:
    lines = [
        'a{v="1"} NaN',
        'a{v="2"} +Inf',
        'a{v="3"} -Inf',
        'a{v="4"} 1e3',
        'a{v="5"} -2.5E-3 1700000000000',
        'a{v="6"}\t7\t-5',
        'a{v="7"} 8 1.5e3',
        'a{v="8"} 9 Inf',
        'a{v="9"} 10 # {trace="x"} 1 2',
        'a{v="10"} 11 12 # {trace="x"} 1 2',
        'a{v="11"}12',
        'a{v="12"} 9223372036854775808',
        "a 13 -1000",
        "a 14 5 6",
        "a 15 1.9",
    ]
    (family,) = parse("\n".join(lines))
    got = [(s.value, s.timestamp_ms) for s in family.samples]
    assert math.isnan(got[0][0])
    assert got[1:] == [
        (math.inf, None),
        (-math.inf, None),
        (1000.0, None),
        (-0.0025, 1700000000000),
        (7.0, -5),
        (8.0, 1500),
        (9.0, None),  # a non-finite timestamp cannot be integer milliseconds
        (10.0, None),  # an OpenMetrics exemplar is ignored
        (11.0, 12),
        (12.0, None),
        (9223372036854775808.0, None),
        (13.0, -1000),
        (14.0, 6),  # the last token, as prometheus_client reads it
        (15.0, 1),  # truncated to whole milliseconds
    ]


def test_crlf_line_endings_parse_the_same(tgi: Exposition) -> None:
    assert parse(TGI_TEXT.replace("\n", "\r\n")) == tgi


def test_family_assignment_rules() -> None:
    text = (
        "# TYPE a counter\n"
        "a 1\n"
        "a_total 2\n"  # not a sample name of counter a in 0.0.4: its own family
        "a_created 3\n"
        "b 4\n"
        "b 5\n"
        "# TYPE h histogram\n"
        'h_bucket{le="1"} 1\n'
        "h 6\n"  # not a histogram sample name: closes h
        'h_bucket{le="+Inf"} 2\n'  # so this one is untyped h_bucket
        "a 7\n"  # a name seen before continues its family
    )
    got = parse(text)
    assert [(f.name, f.type, [s.value for s in f.samples]) for f in got] == [
        ("a", MetricType.COUNTER, [1, 7]),
        ("a_total", MetricType.UNTYPED, [2]),
        ("a_created", MetricType.UNTYPED, [3]),
        ("b", MetricType.UNTYPED, [4, 5]),
        ("h", MetricType.HISTOGRAM, [1, 6]),
        ("h_bucket", MetricType.UNTYPED, [2]),
    ]
    histogram = got.get("h")
    assert histogram is not None
    assert histogram.histograms[0].buckets == (Bucket(1.0, 1.0),)


def test_histogram_grouping_unsorted_and_odd_buckets() -> None:
    text = (
        "# TYPE h histogram\n"
        'h_bucket{le="+Inf",m="x"} 9\n'
        'h_bucket{m="x",le="1"} 4\n'
        'h_bucket{le="NaN",m="x"} 5\n'  # cannot be placed: dropped from buckets
        'h_bucket{m="x",le="0.5"} 2\n'
        'h_count{m="x"} 9\n'
        'h_sum{m="y"} 3\n'
        'h_bucket{m="y"} 1\n'  # no le: series exists, bucket dropped
    )
    family = parse(text).get("h")
    assert family is not None
    assert family.histograms == group_histograms("h", family.samples)
    x, y = family.histograms
    assert x.labels == (("m", "x"),)
    assert x.buckets == (Bucket(0.5, 2.0), Bucket(1.0, 4.0), Bucket(math.inf, 9.0))
    assert (x.count, x.sum) == (9.0, None)
    assert (y.labels, y.buckets, y.count, y.sum) == ((("m", "y"),), (), None, 3.0)


MALFORMED = [
    ("a\n", 1),
    ("a 1\nb\n", 2),
    ("a 1\n\n# HELP a x\na x\n", 4),
    ('a{x="1" 1\n', 1),
    ('a{x="1} 1\n', 1),
    ("a{x=1} 1\n", 1),
    ('a{x="1"y="2"} 1\n', 1),
    ('a{x="1",x="2"} 1\n', 1),
    ('a{x="1",,y="2"} 1\n', 1),
    ('a{__reserved="1"} 1\n', 1),
    ('a{0x="1"} 1\n', 1),
    ('a{__name__="b"} 1\n', 1),
    ("{} 1\n", 1),
    ("0a 1\n", 1),
    ("a-b 1\n", 1),
    ("a 0x1\n", 1),
    ("a 1_000\n", 1),
    ("a one\n", 1),
    ("a 1 two\n", 1),
    ("\n\n# TYPE a\n", 3),
    ("# TYPE\n", 1),
    ("# TYPE a gauges\n", 1),
    ("# TYPE a COUNTER\n", 1),
    ("# HELP 0a x\n", 1),
    ('# HELP "a x\n', 1),
    ("a 1\r\nb 2\r\nc\r\n", 3),
    ("nan\n", 1),  # prometheus_client reads this as sample "na" = NaN
]


@pytest.mark.parametrize(("text", "line_number"), MALFORMED)
def test_malformed_input_names_the_line(text: str, line_number: int) -> None:
    with pytest.raises(ExpositionError) as info:
        parse(text)
    assert info.value.line_number == line_number
    assert info.value.line == text.split("\n")[line_number - 1]
    # The warm path must report the same, also once the good lines are cached.
    parser = Parser()
    for _ in range(2):
        with pytest.raises(ExpositionError) as again:
            parser.parse(text)
        assert again.value.line_number == line_number


def test_sample_limit() -> None:
    assert parse(TGI_TEXT, max_samples=1888).sample_count == 1888
    with pytest.raises(SampleLimitError) as info:
        parse(TGI_TEXT, max_samples=1887)
    assert info.value.limit == 1887
    with pytest.raises(SampleLimitError):
        parse("a 1\nb 2\n", max_samples=0)
    assert len(parse("# TYPE a gauge\n", max_samples=0)) == 1
    # As in Prometheus, a malformed line wins over the limit.
    with pytest.raises(ExpositionError):
        parse("a 1\nb 2\nc\n", max_samples=1)


def _next_scrape(text: str) -> str:
    """The same target a bit later: TGI-like changed values and hash-map family order."""
    blocks = text.strip("\n").split("\n\n")
    blocks.reverse()
    changed = re.sub(
        r" (\d+)$", lambda m: f" {int(m.group(1)) * 2 + 1}", "\n\n".join(blocks), flags=re.M
    )
    return changed + '\n\ntgi_request_failure{err="overloaded"} 1\n'


def test_cache_reuse_gives_fresh_results_across_scrapes(tgi: Exposition) -> None:
    parser = Parser()
    second = _next_scrape(TGI_TEXT)
    assert second != TGI_TEXT
    for _ in range(2):
        assert parser.parse(TGI_TEXT) == tgi
        assert parser.parse(second) == parse(second)
    got = parser.parse(second)
    assert got != tgi
    assert sorted(map(_sortable, _samples(got))) == sorted(map(_sortable, _scan(second)))


def _sortable(
    sample: tuple[str, dict[str, str], float],
) -> tuple[str, list[tuple[str, str]], float]:
    return sample[0], sorted(sample[1].items()), sample[2]


def test_cache_keeps_unchanged_samples() -> None:
    parser = Parser()
    first = parser.parse("a 1\nb 2\n")
    second = parser.parse("a 1\nb 3\n")
    assert second.families[0].samples[0] is first.families[0].samples[0]
    assert second.families[1].samples[0] == Sample("b", (), 3.0)


def test_unchanged_text_and_families_come_back_as_the_same_objects(tgi: Exposition) -> None:
    parser = Parser()
    first = parser.parse(TGI_TEXT)
    assert parser.parse(TGI_TEXT) is first  # same text: the previous result
    # One histogram moves (a request of 0.3 s): only its family is built again.
    moved = "tgi_request_duration"
    lines = []
    for line in TGI_TEXT.split("\n"):
        if line.startswith(moved + "_") and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            bucket = re.search(r'le="([^"]+)"', key)
            if bucket is None or float(bucket.group(1)) >= 0.3:
                value = repr(float(value) + (0.3 if key.endswith("_sum") else 1.0))
            lines.append(f"{key} {value}")
        else:
            lines.append(line)
    changed_text = "\n".join(lines)
    changed = parser.parse(changed_text)
    assert changed == parse(changed_text)  # identical to a cold parse of the same text
    assert changed != first
    for before, after in zip(first.families, changed.families, strict=True):
        if before.name == moved:
            assert after is not before
            assert after.histograms[0].count == before.histograms[0].count + 1
        else:
            assert after is before, before.name
    # Going back to the first text rebuilds the moved family with the first values.
    assert parser.parse(TGI_TEXT) == tgi


def test_unchanged_text_still_obeys_the_sample_limit(tgi: Exposition) -> None:
    parser = Parser()
    parser.parse(TGI_TEXT)
    count = sum(len(family.samples) for family in tgi.families)
    with pytest.raises(SampleLimitError):
        parser.parse(TGI_TEXT, max_samples=count - 1)
    assert parser.parse(TGI_TEXT, max_samples=count) == tgi


def test_reuse_notices_changed_type_and_help() -> None:
    parser = Parser()
    first = parser.parse("# TYPE a counter\na 1\n")
    retyped = parser.parse("# TYPE a gauge\na 1\n")
    assert retyped.families[0].type is MetricType.GAUGE
    helped = parser.parse("# HELP a now with help\n# TYPE a gauge\na 1\n")
    assert helped.families[0].help == "now with help"
    assert first.families[0].type is MetricType.COUNTER


def test_cached_series_with_odd_new_values() -> None:
    parser = Parser()
    parser.parse('a{x="1"} 1\n')
    for bad in ("1_000", "0x1", "one", ""):
        with pytest.raises(ExpositionError) as info:
            parser.parse(f'b 0\na{{x="1"}} {bad}\n')
        assert info.value.line_number == 2
    for line, value, timestamp in (
        ('a{x="1"} 2\t3', 2.0, 3),
        ('a{x="1"} \t4', 4.0, None),
        ('a{x="1"} 5\r', 5.0, None),
    ):
        (family,) = parser.parse(line)
        assert family.samples == (Sample("a", (("x", "1"),), value, timestamp),)


def test_cache_is_bounded(tgi: Exposition) -> None:
    parser = Parser(cache_size=100)
    for _ in range(3):
        assert parser.parse(TGI_TEXT) == tgi
        assert 0 < len(parser._cache) <= 100
    off = Parser(cache_size=0)
    assert off.parse(TGI_TEXT) == tgi
    assert len(off._cache) == 0
    with pytest.raises(ValueError, match="cache_size"):
        Parser(cache_size=-1)


def test_objects_equal_normally_constructed_ones() -> None:
    # The parser builds these without __init__ (see _exposition_entries): they must be ordinary.
    parser = Parser()
    text = '# TYPE h histogram\nh_bucket{le="1"} 2\n# TYPE s summary\ns{quantile="0.5"} 4\n'
    parser.parse(text.replace(" 2\n", " 7\n").replace(" 4\n", " 8\n"))
    for got in (parse(text), parser.parse(text)):  # a new series, a cached one
        sample = got.families[0].samples[0]
        bucket = got.families[0].histograms[0].buckets[0]
        quantile = got.families[1].summaries[0].quantiles[0]
        assert (type(sample), type(bucket), type(quantile)) == (Sample, Bucket, Quantile)
        assert sample == Sample("h_bucket", (("le", "1"),), 2.0)
        assert hash(sample) == hash(Sample("h_bucket", (("le", "1"),), 2.0))
        assert dataclasses.replace(sample, value=3.0) == Sample("h_bucket", (("le", "1"),), 3.0)
        assert (bucket, quantile) == (Bucket(1.0, 2.0), Quantile(0.5, 4.0))
        with pytest.raises(dataclasses.FrozenInstanceError):
            sample.value = 5.0  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            bucket.cumulative_count = 5.0  # type: ignore[misc]
