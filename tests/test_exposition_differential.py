"""Differential tests: the parser against prometheus_client's text parser.

prometheus_client is the reference for what is accepted and what the samples are. The
normalisations documented in :mod:`tgi_collector.exposition` are applied to our side (or to
both) before comparing:

* counter samples: prometheus_client renames ``x`` to ``x_total`` and strips ``_total`` from
  counter family names; flat comparisons strip one ``_total`` from counter samples on both
  sides, family comparisons map ours into prometheus_client's shape;
* consecutive families with the same name, type and help are merged on both sides (one
  untyped family here is one family per sample there);
* ``untyped`` is ``unknown`` there, a missing HELP is ``""`` there.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tgi_collector.errors import ExpositionError, SampleLimitError
from tgi_collector.exposition import Parser, parse
from tgi_collector.metrics import Exposition, MetricType, group_histograms, group_summaries

DATA = Path(__file__).parent / "data"
REAL_FILES = sorted(DATA.glob("*/*.prom"))
OPENMETRICS_CASES = sorted(p.parent.name for p in DATA.glob("openmetrics/*/metrics"))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Flat = list[tuple[str, tuple[tuple[str, str], ...], object]]


def _canon(value: float) -> object:
    """A value comparable with ==, NaN included (prometheus_client may hand back huge ints)."""
    try:
        number = float(value)
    except OverflowError:
        number = math.copysign(math.inf, value)
    return "NaN" if math.isnan(number) else number


def _strip_total(name: str, is_counter: bool) -> str:
    return name[:-6] if is_counter and name.endswith("_total") else name


def _series_key(sample: tuple[str, tuple[tuple[str, str], ...], object]) -> tuple[Any, ...]:
    return sample[0], sample[1]


def _pc_flat(text: str) -> Flat:
    """prometheus_client's samples; raises whatever prometheus_client raises."""
    out: Flat = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = _strip_total(s.name, family.type == "counter")
            out.append((name, tuple(sorted(s.labels.items())), _canon(s.value)))
    return sorted(out, key=_series_key)  # stable: wire order is kept within a series


def _our_flat(exposition: Exposition) -> Flat:
    out: Flat = []
    for family in exposition:
        for s in family.samples:
            name = _strip_total(s.name, family.type is MetricType.COUNTER)
            out.append((name, tuple(sorted(s.labels)), _canon(s.value)))
    return sorted(out, key=_series_key)


def _merged(families: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for family in families:
        if out and out[-1][:3] == family[:3]:
            out[-1] = (*family[:3], out[-1][3] + family[3])
        else:
            out.append(family)
    return out


def _pc_families(text: str) -> list[tuple[Any, ...]]:
    return _merged(
        [
            (
                f.name,
                f.type,
                f.documentation,
                [
                    (s.name, tuple(sorted(s.labels.items())), _canon(s.value), s.timestamp)
                    for s in f.samples
                ],
            )
            for f in text_string_to_metric_families(text)
        ]
    )


def _as_pc_families(exposition: Exposition) -> list[tuple[Any, ...]]:
    """Our families in prometheus_client's shape (the normalisations, applied to ours)."""
    out = []
    for f in exposition:
        name, counter = f.name, f.type is MetricType.COUNTER
        rename = counter and not name.endswith("_total")
        samples = [
            (
                s.name + "_total" if rename else s.name,
                tuple(sorted(s.labels)),
                _canon(s.value),
                None if s.timestamp_ms is None else s.timestamp_ms / 1000,
            )
            for s in f.samples
        ]
        kind = "unknown" if f.type is MetricType.UNTYPED else f.type.value
        out.append((_strip_total(name, counter), kind, f.help or "", samples))
    return _merged(out)


def _assert_same_as_prometheus_client(text: str) -> None:
    """If prometheus_client accepts ``text``, we accept it with the same samples; if not, we
    either accept it or raise ExpositionError (the test fails on any other exception)."""
    try:
        expected = _pc_flat(text)
    except Exception:
        with contextlib.suppress(ExpositionError):
            parse(text)
        return
    if _pc_misreads_a_line(text):
        return
    assert _our_flat(parse(text)) == expected


def _pc_misreads_a_line(text: str) -> bool:
    """A line where prometheus_client departs from the format (documented in exposition.py).

    A sample line without any blank: prometheus_client reads ``nan`` as ``na`` = NaN. A
    comment whose first token is more than ``#`` (``#x TYPE a gauge``, ``#\xa0 TYPE ...``):
    prometheus_client reads it as a HELP/TYPE line, Prometheus and we as a plain comment.
    """
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped[0] != "#":
            if not any(c in stripped for c in " \t{"):
                return True
            continue
        tokens = re.split(r"[ \t\n\r\x0b\x0c]+", stripped, maxsplit=2)  # as prometheus_client
        if len(tokens) > 1 and tokens[0] != "#" and tokens[1] in ("HELP", "TYPE"):
            return True
    return False


# --- real files and the OpenMetrics suite ------------------------------------------------------


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_files_same_families_as_prometheus_client(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    ours = parse(text)
    assert ours.sample_count > 0
    assert _as_pc_families(ours) == _pc_families(text)
    assert Parser().parse(text) == ours


@pytest.mark.parametrize("case", OPENMETRICS_CASES)
def test_openmetrics_suite_against_prometheus_client(case: str) -> None:
    _assert_same_as_prometheus_client((DATA / "openmetrics" / case / "metrics").read_text("utf-8"))


def test_openmetrics_suite_is_mostly_accepted_with_the_same_samples() -> None:
    # Guards against the per-case test passing vacuously (everything rejected by both).
    accepted = 0
    for case in OPENMETRICS_CASES:
        text = (DATA / "openmetrics" / case / "metrics").read_text("utf-8")
        try:
            expected = _pc_flat(text)
        except Exception:
            continue
        assert _our_flat(parse(text)) == expected
        accepted += 1
    assert len(OPENMETRICS_CASES) == 128
    assert accepted == 104  # of 128; prometheus_client rejects the other 24


# --- generated valid expositions ---------------------------------------------------------------

_BLANKS = st.sampled_from([" ", "  ", "\t", " \t "])
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_LABEL_NAMES = st.builds(
    str.__add__,
    st.sampled_from(_LOWER + _LOWER.upper()),
    st.text(_LOWER + "XYZ0123456789_", max_size=5),
).filter(lambda n: n not in ("le", "quantile"))
_CHARS = st.characters(codec="utf-8")  # any text but lone surrogates
_LABEL_VALUES = st.text(_CHARS, max_size=8)
_HELP_TEXT = st.text(_CHARS, max_size=20).map(lambda t: t.strip())


@st.composite
def _numbers(draw: st.DrawFn) -> tuple[str, float]:
    """A value spelling and what it means."""
    spelling = draw(
        st.one_of(
            st.integers(-(10**20), 10**20).map(str),
            st.floats(allow_nan=False).map(repr),
            st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.6e}"),
            st.sampled_from(["NaN", "+Inf", "-Inf", "nan", "inf", "-0", "1e3", ".5", "5."]),
        )
    )
    return spelling, float(spelling)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def _label_block(draw: st.DrawFn, labels: list[tuple[str, str]]) -> str:
    if not labels:
        return draw(st.sampled_from(["", "{}"]))
    around = draw(st.sampled_from(["", " "]))
    pairs = [f'{around}{k}{around}={around}"{_escape(v)}"{around}' for k, v in labels]
    return "{" + ",".join(pairs) + draw(st.sampled_from(["", ","])) + "}"


@st.composite
def _sample_line(
    draw: st.DrawFn, name: str, labels: list[tuple[str, str]]
) -> tuple[str, tuple[Any, ...]]:
    spelling, value = draw(_numbers())
    timestamp = draw(st.none() | st.integers(-(2**50), 2**50))
    line = name + draw(_label_block(labels)) + draw(_BLANKS) + spelling
    if timestamp is not None:
        line += draw(_BLANKS) + str(timestamp)
    return line, (name, tuple(labels), _canon(value), timestamp)


def _shuffled(draw: st.DrawFn, labels: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(draw(st.permutations(labels)))


@st.composite
def _family(draw: st.DrawFn, index: int) -> tuple[list[str], tuple[Any, ...]]:
    """The lines of one family and what they mean: (name, type, help, samples)."""
    kind = draw(st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped", None]))
    name = f"f{index}_" + draw(st.text(_LOWER + "0123456789_:", max_size=6))
    if kind == "counter" and draw(st.booleans()):
        name += "_total"
    help_text = draw(st.none() | _HELP_TEXT)
    label_sets = draw(
        st.lists(
            st.dictionaries(_LABEL_NAMES, _LABEL_VALUES, max_size=3).map(lambda d: list(d.items())),
            min_size=1,
            max_size=2,
            unique_by=frozenset,
        )
    )
    samples: list[tuple[str, tuple[Any, ...]]] = []
    for labels in label_sets:
        if kind == "histogram":
            bounds = [*sorted(draw(st.sets(st.floats(-1e6, 1e6), max_size=3))), math.inf]
            for bound in bounds:
                le = ("le", "+Inf" if bound == math.inf else repr(bound))
                samples.append(draw(_sample_line(name + "_bucket", _shuffled(draw, [*labels, le]))))
        elif kind == "summary":
            for q in draw(st.lists(st.sampled_from(["0", "0.5", "0.99", "1"]), unique=True)):
                pairs = _shuffled(draw, [*labels, ("quantile", q)])
                samples.append(draw(_sample_line(name, pairs)))
        else:
            samples.append(draw(_sample_line(name, _shuffled(draw, labels))))
        if kind in ("histogram", "summary"):
            for suffix in draw(st.lists(st.sampled_from(["_count", "_sum"]), unique=True)):
                samples.append(draw(_sample_line(name + suffix, labels)))
    meta = []
    if help_text is not None:
        escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        meta.append(f"# HELP{draw(_BLANKS)}{name} {escaped}")
    if kind is not None:
        meta.insert(draw(st.integers(0, len(meta))), f"#{draw(_BLANKS)}TYPE {name} {kind}")
    lines = meta + [line for line, _ in samples]
    expected_type = MetricType(kind) if kind else MetricType.UNTYPED
    return lines, (name, expected_type, help_text, [meaning for _, meaning in samples])


@st.composite
def _expositions(draw: st.DrawFn) -> tuple[str, list[tuple[Any, ...]]]:
    families = [draw(_family(i)) for i in range(draw(st.integers(0, 4)))]
    families = list(draw(st.permutations(families)))
    lines = []
    for family_lines, _ in families:
        for line in family_lines:
            lines.append(line)
            extra = draw(st.sampled_from(["", "", "", "blank", "comment"]))
            if extra == "blank":
                lines.append(draw(st.sampled_from(["", " ", "\t"])))
            elif extra == "comment":
                lines.append("# note " + draw(_HELP_TEXT).replace("\n", " "))
    end = draw(st.sampled_from(["", "\n", "\n\n"]))
    return "\n".join(lines) + end, [meaning for _, meaning in families]


_WARM = Parser(cache_size=500)


@SETTINGS
@given(_expositions())
def test_generated_expositions(case: tuple[str, list[tuple[Any, ...]]]) -> None:
    text, expected = case
    ours = parse(text)
    got = [
        (
            f.name,
            f.type,
            f.help,
            [(s.name, s.labels, _canon(s.value), s.timestamp_ms) for s in f.samples],
        )
        for f in ours
    ]
    assert got == expected
    for family in ours:
        assert family.histograms == (
            group_histograms(family.name, family.samples)
            if family.type is MetricType.HISTOGRAM
            else ()
        )
        assert family.summaries == (
            group_summaries(family.name, family.samples)
            if family.type is MetricType.SUMMARY
            else ()
        )
    assert _as_pc_families(ours) == _pc_families(text)
    # repr, because NaN != NaN in dataclass equality
    assert repr(_WARM.parse(text)) == repr(ours) == repr(_WARM.parse(text))


# --- anything at all ---------------------------------------------------------------------------


def _check_total(text: str, max_samples: int | None, parser: Parser | None = None) -> None:
    """Only an Exposition, ExpositionError (naming a real line) or SampleLimitError."""
    try:
        result = (parser or Parser(cache_size=0)).parse(text, max_samples=max_samples)
    except ExpositionError as exc:
        assert 1 <= exc.line_number <= text.count("\n") + 1
        assert exc.line == text.split("\n")[exc.line_number - 1][:200]
    except SampleLimitError as exc:
        assert max_samples is not None
        assert exc.limit == max_samples
    else:
        assert isinstance(result, Exposition)
        assert max_samples is None or result.sample_count <= max_samples


@SETTINGS
@given(st.text(), st.none() | st.integers(0, 3))
def test_arbitrary_text(text: str, max_samples: int | None) -> None:
    _check_total(text, max_samples)
    _check_total(text, max_samples, _WARM)


_REAL_LINES = sorted(
    {line for path in REAL_FILES for line in path.read_text("utf-8").split("\n")}
    | {
        line
        for case in OPENMETRICS_CASES
        for line in (DATA / "openmetrics" / case / "metrics").read_text("utf-8").split("\n")
    }
)
_TRICKY = ['"', "\\", "{", "}", ",", "=", " ", "\t", "#", "_", "e", "\r", "\xa0", "NaN", "le"]


@st.composite
def _mutated_lines(draw: st.DrawFn) -> str:
    lines = []
    for line in draw(st.lists(st.sampled_from(_REAL_LINES), min_size=1, max_size=6)):
        chars = list(line)
        rng = random.Random(draw(st.integers(0, 2**32)))
        for _ in range(draw(st.integers(0, 3))):
            at = rng.randint(0, len(chars))
            if rng.random() < 0.6:
                chars[at:at] = rng.choice(_TRICKY)
            else:
                del chars[at : at + 1]
        lines.append("".join(chars))
    return "\n".join(lines)


@SETTINGS
@given(_mutated_lines(), st.none() | st.integers(0, 3))
def test_mutated_real_lines(text: str, max_samples: int | None) -> None:
    _check_total(text, max_samples)
    _check_total(text, max_samples, _WARM)
    _assert_same_as_prometheus_client(text)
