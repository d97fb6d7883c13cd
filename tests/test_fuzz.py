"""Fuzzing (issue 4, part 8): hostile input to the parser, the request validation and the
HTTP/1.1 response framing, under hypothesis, time-boxed (the whole file takes ~15-20 s).

What each property says (``bench/fuzz.py`` runs the same ones for minutes):

- **Parser, reused vs cold.** Sequences of texts cut from the real TGI scrape and mutated
  (values, byte flips, deleted, duplicated and shuffled lines, truncation, inserted unicode, NUL,
  CR, metadata, renamed families) go through *one* :class:`Parser`, whose caches (series, values,
  metadata, the last text, unchanged families) carry over from text to text, and each result
  (or error: type, line, message) must equal a cold :func:`parse` of the same text. The parser
  raises nothing but ExpositionError/SampleLimitError, and its results keep their invariants.
  ``tests/test_exposition_differential.py`` compares single texts with prometheus_client; this
  file compares the parser with itself across time, which no reference can.
- **Request validation.** Random ``CollectRequest``/``WatchRequest`` messages (URLs built from
  hostile parts, unicode and control characters, extreme numbers, negative durations, up to
  1,500 targets), with no registry, registered targets, or registered targets only, give a
  valid domain object that meets every precondition downstream code relies on, or
  InvalidRequestError naming a real field (or, as documented, CapacityError for too many targets
  and TargetDeniedError for an unregistered target in registered-only mode); then the same
  requests against a real ``serve`` process must get the status the local validation predicts,
  never UNKNOWN or INTERNAL, and malformed request bytes get INVALID_ARGUMENT.
- **HTTP/1.1 framing.** Random bytes and generated, then damaged, responses fed whole and in
  random pieces: the same outcome either way, ProtocolViolation only, buffers bounded by the
  head and chunk-line limits, and a watchdog instead of trusting that no loop spins forever.

Regressions found by fuzzing are at the end, named after what they pin.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tgi_collector._http11 import MAX_HEAD_BYTES, ProtocolViolation, ResponseParser
from tgi_collector._textformat import MAX_LABEL_TERMS
from tgi_collector.convert import (
    WatchLimits,
    collect_request_from_proto,
    watch_request_from_proto,
)
from tgi_collector.errors import (
    CapacityError,
    ExpositionError,
    InvalidRequestError,
    SampleLimitError,
    TargetDeniedError,
)
from tgi_collector.exposition import Parser, parse
from tgi_collector.metrics import Exposition, MetricType
from tgi_collector.registry import TargetRegistry
from tgi_collector.targets import (
    MAX_BODY_BYTES,
    MAX_INSTANCE_ID_LENGTH,
    MAX_SAMPLES,
    MAX_TIMEOUT_SECONDS,
    MAX_URL_LENGTH,
    MIN_TIMEOUT_SECONDS,
    ScrapeOptions,
    Target,
    WatchSpec,
)
from tgi_collector.v1 import collector_pb2, snapshot_pb2

REAL_SCRAPE = Path(__file__).parent / "data" / "tgi" / "tgi-3.3-real.prom"
REAL_LINES = REAL_SCRAPE.read_text("utf-8").split("\n")
FAMILY_NAMES = sorted({line.split()[2] for line in REAL_LINES if line.startswith("# TYPE ")})
MAX_CHUNK_LINE = 4096  # _http11._MAX_CHUNK_LINE (the documented 4 KiB)
SERVICE = "/tgi_collector.v1.CollectorService"

# Examples per property in this file; bench/fuzz.py runs the same properties for minutes.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- a watchdog: a hung example fails instead of hanging the suite -------------------------------


class Hung(Exception):
    """An example ran far longer than any input of its size should take."""


@contextlib.contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`Hung` inside the block after ``seconds`` (SIGALRM, main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"{what} ran for more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# == (a) the exposition parser =====================================================================

NUMBERS = [
    "0", "1", "-1", "1.5", "-0", "0.000001", "1e308", "1e309", "-1e309", "1e-400", "NaN", "nan",
    "+Inf", "-Inf", "inf", "Infinity", "+1", "1.", ".5", "123456789012345678901234567890",
    "1_0", "0x10", "1e", ".", "", "\u0661\u0662", "1\t2", "1 2", "1 2 3", "1 1.5e3", "1 NaN",
    '1 # {a="b"} 2 3', "1 -5", "1\r", "1\x00",
]  # fmt: skip
INSERTS = [
    "\x00", "\r", "\r\n", "\t", "\ufeff", "\u2028", "\x85", "\xa0", "\u3000", "\u00e9",
    "\U0001f600", "\\", '"', "{", "}", ",", "=", " ", "#", "\n", "\n\n", "# TYPE x histogram\n",
    "# HELP x a\\nb\\\\\n", "# TYPE tgi_request_duration summary\n", 'le="+Inf"', 'le="NaN"',
    "_bucket", "_sum", "_count", "_total", 'quantile="0.5"', '__name__="a"', ' # {a="b"} 1',
    "\\n", '\\"',
]  # fmt: skip
TYPES = [
    "counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset",
    "gaugehistogram", "bogus", "", "HISTOGRAM",
]  # fmt: skip
MUTATIONS = [
    "value", "delete", "duplicate", "swap", "shuffle", "truncate", "insert", "flip", "rename",
    "type", "le", "block", "help", "retype", "rehelp",
]  # fmt: skip


def _mutate_once(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """One mutation of a document given as lines (returns new lines, ``lines`` untouched)."""
    lines = list(lines) or [""]
    op = draw(st.sampled_from(MUTATIONS))
    at = draw(st.integers(0, len(lines) - 1))
    line = lines[at]
    if op == "value":
        lines[at] = line.rpartition(" ")[0] + " " + draw(st.sampled_from(NUMBERS))
    elif op == "delete":
        del lines[at]
    elif op == "duplicate":
        lines.insert(draw(st.integers(0, len(lines))), line)
    elif op == "swap":
        other = draw(st.integers(0, len(lines) - 1))
        lines[at], lines[other] = lines[other], lines[at]
    elif op == "shuffle":
        end = draw(st.integers(at, len(lines)))
        lines[at:end] = draw(st.permutations(lines[at:end]))
    elif op in ("truncate", "insert", "flip"):
        text = "\n".join(lines)
        cut = draw(st.integers(0, len(text)))
        if op == "truncate":
            text = text[:cut]
        elif op == "insert":
            text = text[:cut] + draw(st.sampled_from(INSERTS) | st.text(max_size=3)) + text[cut:]
        else:  # a byte flip on the wire; the scraper refuses invalid UTF-8, so re-decode
            data = bytearray(text.encode("utf-8"))
            if data:
                where = draw(st.integers(0, len(data) - 1))
                data[where] ^= draw(st.integers(1, 255))
            text = data.decode("utf-8", errors="replace")
        lines = text.split("\n")
    elif op == "rename":  # a sample or metadata line moves to another (maybe related) family
        name = draw(st.sampled_from(FAMILY_NAMES))
        name += draw(st.sampled_from(["", "", "_bucket", "_sum", "_count", "_total", "_created"]))
        if line.startswith("# "):
            parts = line.split(" ", 3)
            if len(parts) >= 3:
                parts[2] = name
            lines[at] = " ".join(parts)
        else:
            lines[at] = name + line[len(re.match(r"[^{ ]*", line)[0]) :]  # type: ignore[index]
    elif op == "type":
        name = draw(st.sampled_from(FAMILY_NAMES))
        lines.insert(at, f"# TYPE {name} {draw(st.sampled_from(TYPES))}")
    elif op == "help":
        name = draw(st.sampled_from(FAMILY_NAMES))
        lines.insert(at, f"# HELP {name} {draw(st.text(max_size=8))}".replace("\n", " "))
    elif op in ("retype", "rehelp"):  # a family keeps its lines but changes type or help
        keyword = "# TYPE " if op == "retype" else "# HELP "
        found = [i for i, text in enumerate(lines) if text.startswith(keyword)]
        if found:
            at = draw(st.sampled_from(found))
            name = lines[at].split(" ")[2]
            new = draw(st.sampled_from(TYPES) if op == "retype" else st.text(max_size=5))
            lines[at] = (keyword + name + " " + new).replace("\n", " ")
    elif op == "le":
        bound = draw(st.sampled_from(NUMBERS))
        lines[at] = re.sub(r'le="[^"]*"', f'le="{bound}"', line)
    else:  # "block": a run of lines copied elsewhere (a family twice, interleaved families)
        end = draw(st.integers(at, min(len(lines), at + 40)))
        lines[draw(st.integers(0, len(lines))) : 0] = lines[at:end]
    return lines


@st.composite
def real_slices(draw: st.DrawFn, max_lines: int = 150) -> list[str]:
    """A run of lines of the real TGI scrape (families cut anywhere)."""
    start = draw(st.integers(0, len(REAL_LINES) - 1))
    return REAL_LINES[start : start + draw(st.integers(1, max_lines))]


@st.composite
def mutated(draw: st.DrawFn, lines: list[str], max_ops: int = 3) -> list[str]:
    for _ in range(draw(st.integers(1, max_ops))):
        lines = _mutate_once(draw, lines)
    return lines


LIMITS_OR_NONE = st.sampled_from([None, None, None, 0, 1, 10, 100, 400]) | st.integers(0, 400)


@st.composite
def scrape_sequences(draw: st.DrawFn) -> list[tuple[str, int | None]]:
    """(text, max_samples) pairs a target could serve one after another: each text a mutation
    of an earlier one, often repeated (unchanged texts and families are the parser's fast
    paths), sometimes under another sample limit."""
    docs = [draw(real_slices())]
    for _ in range(draw(st.integers(1, 6))):
        docs.append(draw(mutated(draw(st.sampled_from(docs)))))
    texts = ["\n".join(doc) + draw(st.sampled_from(["", "\n"])) for doc in docs]
    order = draw(st.lists(st.integers(0, len(texts) - 1), min_size=1, max_size=2 * len(texts)))
    return [(texts[i], draw(LIMITS_OR_NONE)) for i in [0, *order]]


Outcome = tuple[Any, ...]


def parse_outcome(text: str, max_samples: int | None, parser: Parser | None = None) -> Outcome:
    """What parsing ``text`` gives, comparable with ``==`` (NaN included: by repr).

    Anything but ExpositionError and SampleLimitError propagates and fails the property.
    """
    try:
        with watchdog(20.0, f"parsing {len(text)} characters"):
            if parser is None:
                result = parse(text, max_samples=max_samples)
            else:
                result = parser.parse(text, max_samples=max_samples)
    except ExpositionError as exc:
        lines = text.split("\n")
        assert 1 <= exc.line_number <= len(lines), exc
        assert exc.line == lines[exc.line_number - 1][:200]
        return ("ExpositionError", exc.line_number, exc.reason)
    except SampleLimitError as exc:
        assert max_samples is not None
        assert exc.limit == max_samples
        return ("SampleLimitError", exc.limit)
    check_exposition(result, max_samples)
    return ("ok", repr(result))


def check_exposition(result: Exposition, max_samples: int | None) -> None:
    """Invariants of every parse result (see the exposition module's docstring)."""
    assert isinstance(result, Exposition)
    assert max_samples is None or result.sample_count <= max_samples
    names = [family.name for family in result]
    assert len(set(names)) == len(names), "one family per name"
    for family in result:
        own = {family.name, family.name + "_bucket", family.name + "_count", family.name + "_sum"}
        for sample in family.samples:
            assert sample.name in own, (family.name, sample.name)
            assert isinstance(sample.value, float)
        for series in family.histograms:
            bounds = [bucket.upper_bound for bucket in series.buckets]
            assert not any(math.isnan(b) for b in bounds)
            assert bounds == sorted(bounds)
        for summary in family.summaries:
            quantiles = [q.quantile for q in summary.quantiles]
            assert not any(math.isnan(q) for q in quantiles)
            assert quantiles == sorted(quantiles)
        if family.type is not MetricType.HISTOGRAM:
            assert not family.histograms
        if family.type is not MetricType.SUMMARY:
            assert not family.summaries


# One parser for the whole session: its caches carry over from example to example.
SHARED_PARSER = Parser()


def check_reused_parser(steps: list[tuple[str, int | None]], cache_size: int) -> None:
    """Each text through a reused Parser gives what a cold parse gives."""
    parser = Parser(cache_size=cache_size)
    for text, max_samples in steps:
        cold = parse_outcome(text, max_samples)
        warm = parse_outcome(text, max_samples, parser)
        assert warm == cold, f"reused Parser(cache_size={cache_size}) differs on {text!r}"
        assert parse_outcome(text, max_samples, SHARED_PARSER) == cold
        if cold[0] == "ok" and cache_size:
            # The same text again gives the previous result, the very same object.
            first = parser.parse(text, max_samples=max_samples)
            assert parser.parse(text, max_samples=max_samples) is first


@settings(FUZZ, max_examples=150)
@given(scrape_sequences(), st.sampled_from([0, 1, 3, 50, 50_000]))
def test_a_reused_parser_gives_what_a_cold_parse_gives(
    steps: list[tuple[str, int | None]], cache_size: int
) -> None:
    check_reused_parser(steps, cache_size)


def check_any_text(text: str, max_samples: int | None) -> None:
    assert parse_outcome(text, max_samples, SHARED_PARSER) == parse_outcome(text, max_samples)


SYNTAX_CHARS = 'a_:1.e+-# \t\r\n{}=,"\\\x00\u00e9\u2028'
SYNTAX = st.text(SYNTAX_CHARS, max_size=300) | st.lists(
    st.sampled_from([*SYNTAX_CHARS, "le", "quantile", "NaN", "+Inf", "_bucket", "_sum", "_count"])
    | st.sampled_from(["# HELP ", "# TYPE ", " histogram", " summary", "tgi_queue_size"]),
    max_size=100,
).map("".join)


@FUZZ
@given(
    SYNTAX | st.text(max_size=100),
    st.none() | st.integers(0, 5),
)
def test_arbitrary_text_through_a_shared_parser(text: str, max_samples: int | None) -> None:
    check_any_text(text, max_samples)


@FUZZ
@given(real_slices(max_lines=400).flatmap(lambda lines: mutated(lines, max_ops=12)))
def test_heavily_mutated_real_scrape(lines: list[str]) -> None:
    text = "\n".join(lines)
    check_any_text(text, None)


# == (b) request validation ========================================================================

LIMITS = WatchLimits(max_targets=4)  # the fuzzed server runs with --max-targets-per-watch 4
FIELD = re.compile(
    r"(target|targets\[\d+\])\.(endpoint|instance_id)|target|targets|interval"
    r"|heartbeat_interval|options\.(timeout|max_body_bytes|max_samples)"
)
HOSTS = [
    "127.0.0.1", "127.0.0.1", "127.0.0.1", "tgi-0.internal", "tgi-0.internal.", "TGI-0",
    "localhost", "[::1]", "[::1", "::1", "[fe80::1%25eth0]", "0", "0x7f.1",
    "2130706433", "b\u00fccher.example", "\u2100.example", "a..b", "-a", "a_b", "", " ",
    "%31%32%37.0.0.1", "169.254.169.254", "user:pw@127.0.0.1", "@127.0.0.1", "127.0.0.1:80@x",
    "x" * 300, "\uff41.example", "\u0000", "a\tb",
]  # fmt: skip
PORTS = [
    "", ":8080", ":8080", "", ":", ":0", ":1", ":80", ":65535", ":65536", ":-1", ":+1", ": 1",
    ":\u0663", ":1e3",
]  # fmt: skip


CLEAN_ENDPOINTS = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https"]),
    st.sampled_from(["127.0.0.1", "[::1]", "tgi-0.internal", "b\u00fccher.de", "TGI-1."]),
    st.sampled_from(["", ":8080", ":1", ":65535"]),
    st.sampled_from(["", "/", "/metrics", "/m?x=1", "/a%20b"]),
)
# Registered targets (config file), and the spellings of their URLs a request may use.
REGISTERED = (("tgi-a", "http://127.0.0.1:8080/metrics"), ("tgi-b", "https://tgi-0.internal"))
REGISTRIES = [
    None,
    TargetRegistry(REGISTERED),
    TargetRegistry(REGISTERED, registered_only=True),
]
REGISTERED_SPELLINGS = [
    "http://127.0.0.1:8080/metrics", "HTTP://127.0.0.1:8080", "http://127.0.0.1:8080/",
    "https://tgi-0.internal/metrics", "https://TGI-0.internal.:443", "https://tgi-0.internal",
    "http://127.0.0.1:8080/metrics?x", "http://127.0.0.1:80/metrics", "http://tgi-0.internal",
]  # fmt: skip


@st.composite
def endpoints(draw: st.DrawFn) -> str:
    """A URL: mostly well-formed with hostile parts, sometimes any string at all.

    (Choices put the common case at 0: hypothesis draws small values most often.)
    """
    mode = draw(st.integers(0, 9))
    if mode < 3:  # clean, so that enough requests get through to be checked whole
        return draw(CLEAN_ENDPOINTS | st.sampled_from(REGISTERED_SPELLINGS))
    if mode == 9:
        return draw(st.text(max_size=60) | st.sampled_from(["", "http://", "http:///metrics"]))
    if mode < 6:
        scheme, sep = draw(st.sampled_from(["http", "https"])), "://"
    else:
        scheme = draw(st.sampled_from(["HTTP", "ftp", "file", "", "http:", "h\u0430", "http"]))
        sep = draw(st.sampled_from(["://", ":/", "//", ":", ":///"]))
    odd = draw(st.integers(0, 3)) == 3  # any characters in the host and path
    host = draw(st.text(max_size=12) if odd else st.sampled_from(HOSTS))
    port = draw(st.sampled_from(PORTS))
    path = draw(st.text(max_size=8).map(lambda t: "/" + t) if odd else st.sampled_from(PATHS))
    url = scheme + sep + host + port + path
    if draw(st.integers(0, 9)) == 9:  # around the length limit
        url += "/" + "a" * draw(st.integers(MAX_URL_LENGTH - len(url) - 10, MAX_URL_LENGTH))
    return url


PATHS = ["", "/", "/metrics", "/metrics", "/a b", "/?q=1", "#f", "/%00", "/\u00e9", "/m?x#y"]
CLEAN_IDS = st.sampled_from(["", "", "tgi-a", "tgi-b"]) | st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,20}", fullmatch=True
)
INSTANCE_IDS = (
    CLEAN_IDS
    | st.text(max_size=20)
    | st.integers(MAX_INSTANCE_ID_LENGTH - 1, MAX_INSTANCE_ID_LENGTH + 1).map(lambda n: "a" * n)
)
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def durations(draw: st.DrawFn) -> duration_pb2.Duration:
    """Zero, sensible, fractional, negative, out-of-range nanos, or extreme."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return duration_pb2.Duration()
    if kind in (1, 4):
        return duration_pb2.Duration(
            seconds=draw(st.integers(0, 70 if kind == 1 else 4000)),
            nanos=draw(st.sampled_from([0, 10_000_000, 500_000_000]) | st.integers(0, 10**9 - 1)),
        )
    if kind == 2:
        return duration_pb2.Duration(
            seconds=draw(st.integers(-2, 2)), nanos=draw(st.sampled_from([-1, 0, 1, 10**9]))
        )
    return duration_pb2.Duration(seconds=draw(INT64), nanos=draw(INT32))


@st.composite
def scrape_options(draw: st.DrawFn) -> collector_pb2.ScrapeOptions:
    return collector_pb2.ScrapeOptions(
        timeout=draw(durations()),
        max_body_bytes=draw(
            st.sampled_from([0, 0, 1, 10**6, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 2**64 - 1])
            | st.integers(0, 2**64 - 1)
        ),
        max_samples=draw(
            st.sampled_from([0, 0, 1, 2000, MAX_SAMPLES, MAX_SAMPLES + 1, 2**32 - 1])
            | st.integers(0, 2**32 - 1)
        ),
        omit_raw_metrics=draw(st.booleans()),
        skip_info=draw(st.booleans()),
    )


@st.composite
def targets(draw: st.DrawFn, clean: bool = False) -> collector_pb2.Target:
    return collector_pb2.Target(
        instance_id=draw(CLEAN_IDS if clean else INSTANCE_IDS),
        endpoint=draw(CLEAN_ENDPOINTS if clean else endpoints()),
    )


@st.composite
def collect_requests(draw: st.DrawFn) -> collector_pb2.CollectRequest:
    request = collector_pb2.CollectRequest(options=draw(scrape_options()))
    if draw(st.integers(0, 19)) != 19:
        request.target.CopyFrom(draw(targets()))
    return request


@st.composite
def watch_requests(draw: st.DrawFn) -> collector_pb2.WatchRequest:
    clean = draw(st.integers(0, 2)) == 0  # plain numbers, so that enough requests get through
    plain = st.sampled_from([0, 1, 2, 5]).map(lambda s: duration_pb2.Duration(seconds=s))
    options = draw(scrape_options())
    if clean:
        options.ClearField("timeout")
    request = collector_pb2.WatchRequest(
        targets=[draw(targets(clean)) for _ in range(draw(st.sampled_from([1, 2, 3, 4, 1, 0, 5])))],
        interval=draw(plain if clean else durations()),
        options=options,
        updates_only=draw(st.booleans()),
        suppress_unchanged=draw(st.booleans()),
        heartbeat_interval=draw(plain if clean else durations()),
    )
    if draw(st.integers(0, 19)) == 19:  # many targets: the cap, the dedup, the cost
        request.targets.extend([draw(targets())] * draw(st.integers(1, 1500)))
    return request


def _check_invalid(exc: InvalidRequestError) -> None:
    assert FIELD.fullmatch(exc.field), exc.field
    assert str(exc).startswith(f"{exc.field}: ")


def _check_target(target: Target) -> None:
    url = target.url
    assert url[: url.index("://")].lower() in ("http", "https")  # the scheme's case is kept
    assert len(url) <= MAX_URL_LENGTH + len("/metrics")
    assert not any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url)
    parts = urlsplit(url)
    assert parts.hostname
    assert parts.username is None and parts.password is None
    assert parts.port is None or 1 <= parts.port <= 65535
    assert len(target.instance_id) <= MAX_INSTANCE_ID_LENGTH
    assert not any(ord(ch) < 0x21 for ch in target.instance_id)


def _check_options(options: ScrapeOptions) -> None:
    assert MIN_TIMEOUT_SECONDS <= options.timeout_seconds <= MAX_TIMEOUT_SECONDS
    assert 1 <= options.max_body_bytes <= MAX_BODY_BYTES
    assert 1 <= options.max_samples <= MAX_SAMPLES


def _check_registered(
    target: Target, given: collector_pb2.Target, registry: TargetRegistry | None
) -> None:
    """A registered target comes back as registered; registered-only mode gives nothing else."""
    if registry is None:
        return
    by_id = registry.get(given.instance_id)
    if not given.endpoint:
        assert target == by_id
    if registry.registered_only:
        assert target in registry.targets


def local_collect(
    request: collector_pb2.CollectRequest, registry: TargetRegistry | None = None
) -> str:
    """Validate locally: ``"ok"``, ``"invalid"`` or ``"denied"`` (registered-only mode);
    anything else raised fails."""
    try:
        target, options = collect_request_from_proto(request, registry=registry)
    except InvalidRequestError as exc:
        _check_invalid(exc)
        return "invalid"
    except TargetDeniedError:
        assert registry is not None and registry.registered_only
        return "denied"
    _check_target(target)
    _check_registered(target, request.target, registry)
    _check_options(options)
    return "ok"


def local_watch(
    request: collector_pb2.WatchRequest,
    limits: WatchLimits = LIMITS,
    registry: TargetRegistry | None = None,
) -> str:
    """Validate locally: ``"ok"``, ``"invalid"``, ``"capacity"`` or ``"denied"``; anything
    else raised fails."""
    try:
        spec = watch_request_from_proto(request, limits, registry=registry)
    except InvalidRequestError as exc:
        _check_invalid(exc)
        return "invalid"
    except CapacityError:
        assert len(request.targets) > limits.max_targets
        return "capacity"
    except TargetDeniedError:
        assert registry is not None and registry.registered_only
        return "denied"
    assert isinstance(spec, WatchSpec)
    # What Hub.subscribe requires (it raises ValueError, i.e. INTERNAL, otherwise).
    assert 1 <= len(spec.targets) <= limits.max_targets
    assert len(set(spec.targets)) == len(spec.targets)
    assert limits.min_interval_seconds <= spec.interval_seconds <= limits.max_interval_seconds
    assert 0 < spec.interval_seconds < math.inf
    assert spec.heartbeat_seconds is None or (
        limits.min_interval_seconds <= spec.heartbeat_seconds <= limits.max_interval_seconds
    )
    assert spec.options.timeout_seconds <= spec.interval_seconds
    for target in spec.targets:
        _check_target(target)
        if registry is not None and registry.registered_only:
            assert target in registry.targets
    _check_options(spec.options)
    return "ok"


@FUZZ
@given(collect_requests(), st.sampled_from(REGISTRIES))
def test_collect_request_validation(
    request: collector_pb2.CollectRequest, registry: TargetRegistry | None
) -> None:
    local_collect(request, registry)


@FUZZ
@given(watch_requests(), st.sampled_from([LIMITS, WatchLimits()]), st.sampled_from(REGISTRIES))
def test_watch_request_validation(
    request: collector_pb2.WatchRequest, limits: WatchLimits, registry: TargetRegistry | None
) -> None:
    local_watch(request, limits, registry)


# -- the same requests against a real server --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``tgi-collector serve`` subprocess on loopback for request fuzzing (sync gRPC)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    channel: grpc.Channel
    dead_port: int  # nothing listens there: valid targets are rewritten to it

    @classmethod
    def start(cls, log_dir: Path) -> ServerProcess:
        port, log = _free_port(), log_dir / "serve.log"
        command = [sys.executable, "-m", "tgi_collector", "--log-level", "WARNING", "serve"]
        command += ["--listen", f"127.0.0.1:{port}", "--max-targets-per-watch", "4"]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        server = cls(process, port, log, channel, _free_port())
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return server
            if process.poll() is not None:
                break
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"the collector did not start: {log.read_text()}")

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def loopback(self, target: collector_pb2.Target) -> None:
        """Point a valid target at the dead loopback port (keep path and query): nothing
        fuzzed here may resolve a name or leave the machine."""
        parts = urlsplit(target.endpoint)._replace(netloc=f"127.0.0.1:{self.dead_port}")
        target.endpoint = parts.geturl()

    def collect(self, request: collector_pb2.CollectRequest) -> tuple[grpc.StatusCode, Any]:
        call = self.channel.unary_unary(
            f"{SERVICE}/Collect",
            request_serializer=collector_pb2.CollectRequest.SerializeToString,
            response_deserializer=collector_pb2.CollectResponse.FromString,
        )
        try:
            return grpc.StatusCode.OK, call(request, timeout=20)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()

    def watch_first(self, request: collector_pb2.WatchRequest) -> tuple[grpc.StatusCode, Any]:
        """The first message of a Watch (then cancelled), or the status that ended it."""
        call = self.channel.unary_stream(
            f"{SERVICE}/Watch",
            request_serializer=collector_pb2.WatchRequest.SerializeToString,
            response_deserializer=collector_pb2.WatchResponse.FromString,
        )
        stream = call(request, timeout=20)
        try:
            return grpc.StatusCode.OK, next(stream)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        except StopIteration:
            return grpc.StatusCode.OK, None
        finally:
            stream.cancel()

    def raw(self, method: str, payload: bytes) -> grpc.StatusCode:
        """Send ``payload`` as the request bytes of ``method``; the status code."""
        if method == "Collect":
            unary = self.channel.unary_unary(f"{SERVICE}/Collect")
            try:
                unary(payload, timeout=20)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
        stream = self.channel.unary_stream(f"{SERVICE}/Watch")(payload, timeout=20)
        try:
            next(stream)
        except grpc.RpcError as exc:
            return exc.code()
        except StopIteration:
            pass
        finally:
            stream.cancel()
        return grpc.StatusCode.OK

    def log_since(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode("utf-8", "replace")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory() as tmp:
        process = ServerProcess.start(Path(tmp))
        try:
            yield process
        finally:
            process.stop()


EXPECTED_CODE = {
    "ok": grpc.StatusCode.OK,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "capacity": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def check_server_collect(server: ServerProcess, request: collector_pb2.CollectRequest) -> None:
    if local_collect(request) == "ok":
        server.loopback(request.target)
    expected = local_collect(request)
    offset = server.log.stat().st_size
    code, answer = server.collect(request)
    assert code == EXPECTED_CODE[expected], (code, answer, request)
    if code == grpc.StatusCode.OK:  # a dead target is data, not an error
        assert answer.snapshot.health == snapshot_pb2.HEALTH_DOWN
        assert answer.snapshot.error.kind == snapshot_pb2.ERROR_KIND_CONNECT
    assert "Traceback" not in server.log_since(offset)


def check_server_watch(server: ServerProcess, request: collector_pb2.WatchRequest) -> None:
    if local_watch(request) == "ok":
        for target in request.targets:
            server.loopback(target)
        request.updates_only = False  # the first snapshot comes at once
    expected = local_watch(request)
    offset = server.log.stat().st_size
    code, answer = server.watch_first(request)
    assert code == EXPECTED_CODE[expected], (code, answer, request)
    if code == grpc.StatusCode.OK:
        assert answer is not None
        assert answer.snapshot.health == snapshot_pb2.HEALTH_DOWN
    assert "Traceback" not in server.log_since(offset)


@settings(FUZZ, max_examples=40)
@given(collect_requests())
def test_collect_against_a_server(server: ServerProcess, message: Any) -> None:
    check_server_collect(server, message)


@settings(FUZZ, max_examples=40)
@given(watch_requests().filter(lambda r: len(r.targets) <= 6))
def test_watch_against_a_server(server: ServerProcess, message: Any) -> None:
    check_server_watch(server, message)


# == (c) the HTTP/1.1 response framing =============================================================

HttpOutcome = tuple[Any, ...]


def http_outcome(pieces: list[bytes], eof: bool) -> HttpOutcome:
    """Feed ``pieces`` (taking the body after each, as the connection does), then maybe EOF;
    after every feed the parser's buffer must stay within the head or chunk-line limit."""
    parser = ResponseParser()
    body = bytearray()
    try:
        with watchdog(20.0, f"framing {sum(map(len, pieces))} bytes"):
            for piece in pieces:
                parser.feed(piece)
                body += b"".join(parser.take_body())
                buffered = len(parser._buffer)  # the one internal peeked at: the memory bound
                limit = MAX_HEAD_BYTES + 2 if parser.head is None else MAX_CHUNK_LINE + 1
                assert buffered <= limit, (buffered, limit)
            if eof:
                parser.feed_eof()
                body += b"".join(parser.take_body())
    except ProtocolViolation as exc:
        return ("violation", str(exc))
    return ("ok", parser.head, bytes(body), parser.done, parser.reusable)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Mod",
    b"HTTP/1.1 404", b"HTTP/1.1 500 Oops", b"HTTP/1.1 200 \xe9t\xe9", b"HTTP/1.1 200 a\tb",
    b"HTTP/1.1 999 X", b"HTTP/1.1 200 ",
]  # fmt: skip
ODD_STATUS_LINES = [
    b"HTTP/2 200", b"HTTP/1.1 20 OK", b"http/1.1 200 OK", b"HTTP/1.1 200 O\x00K", b"",
    b"HTTP/1.1 101 Switching", b"HTTP/1.1  200 OK", b" HTTP/1.1 200 OK", b"HTTP/1.1 200 \x7f",
]  # fmt: skip
HEADERS = [
    b"Content-Type: text/plain", b"Connection: close", b"Connection: keep-alive",
    b"Connection: Keep-Alive, Upgrade", b"Transfer-Encoding: chunked", b"X-A:\ta\t",
    b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: 5, 5", b"X-\xff: a",
    b"Content-Encoding: gzip", b"X-A: \xe9", b"Date: x", b"x:", b"Content-length: 5",
]  # fmt: skip
ODD_HEADERS = [
    b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: CHUNKED", b"Transfer-Encoding:",
    b"Content-Length: 5, 6", b"Content-Length: -1", b"Content-Length: +5", b"Content-Length: 0x5",
    b"Content-Length: 99999999999999999999", b"Content-Length: \xd9\xa3", b"X-A: \x00",
    b"X A: b", b": b", b"X-A", b" X-A: b", b"X-A: b\rc", b"Content-Length:",
]  # fmt: skip


def _chunked(draw: st.DrawFn, body: bytes, eol: bytes) -> bytes:
    out, at = bytearray(), 0
    while at < len(body):
        size = draw(st.integers(1, max(1, len(body) - at)))
        ext = draw(st.sampled_from([b"", b"", b"", b";a=b", b" ;x", b"\t;", b";" + b"e" * 5000]))
        out += b"%x" % size + ext + eol + body[at : at + size] + eol
        at += size
    out += b"0" + eol
    trailers = [b"X-T: 1", b"X-T: 1", b"X-T: 1", b"bad", b"X: " + b"t" * 5000]
    for trailer in draw(st.lists(st.sampled_from(trailers), max_size=2)):
        out += trailer + eol
    return bytes(out + eol)


@st.composite
def http_responses(draw: st.DrawFn) -> bytes:
    """A plausible response (interim heads, any framing, odd headers), then maybe damaged."""
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    data = bytearray()
    for _ in range(draw(st.integers(0, 2))):
        data += b"HTTP/1.1 1%02d Continue" % draw(st.sampled_from([0, 2, 3, 99])) + eol + eol
    odd = draw(st.integers(0, 3)) == 3
    data += draw(st.sampled_from(ODD_STATUS_LINES if odd else STATUS_LINES)) + eol
    for _ in range(draw(st.integers(0, 5))):
        odd = draw(st.integers(0, 5)) == 5
        data += draw(st.sampled_from(ODD_HEADERS if odd else HEADERS)) + eol
    shape = draw(st.sampled_from(["plain"] * 6 + ["head limit", "lines", "endless", "endless"]))
    if shape == "head limit":
        data += b"X-Big: " + b"b" * draw(st.integers(MAX_HEAD_BYTES - 200, MAX_HEAD_BYTES)) + eol
    elif shape == "lines":  # around the header line limit
        data += b"X: y\n" * draw(st.integers(190, 210))
    elif shape == "endless":  # a head that never ends: what is buffered must stay bounded
        near = MAX_HEAD_BYTES - len(data) - 5 + draw(st.integers(-10, 10))
        size = st.integers(near - 5, near + 5) | st.integers(near, 2**17) | st.integers(0, near)
        return bytes(data + b"X-E: " + b"e" * draw(size))
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["chunked", "length", "close", "endless chunk line"]))
    if framing == "endless chunk line":  # a chunk size, extension or trailer line, never ended
        data += b"Transfer-Encoding: chunked" + eol + eol
        data += draw(st.sampled_from([b"", b"5;", b"5" + eol + b"hello" + eol + b"0" + eol]))
        return bytes(data + b"x" * draw(st.integers(MAX_CHUNK_LINE - 100, MAX_CHUNK_LINE + 100)))
    if framing == "length":
        length = len(body) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        data += b"Content-Length: %d" % max(0, length) + eol + eol + body
    elif framing == "chunked":
        data += b"Transfer-Encoding: chunked" + eol + eol + _chunked(draw, body, eol)
    else:
        data += eol + body
    damage = draw(st.integers(0, 5))  # 0-2: none
    if damage == 3 and data:
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
    elif damage == 4:
        del data[draw(st.integers(0, len(data))) :]
    elif damage == 5:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n\r\n", b"0\r\n", b":"]))
    data += draw(st.sampled_from([b"", b"x", b"HTTP/1.1 200 OK\r\n"]))  # stray bytes
    return bytes(data)


def check_framing(data: bytes, cuts: list[int], eof: bool) -> None:
    """Whole, in random pieces and (when small) byte by byte: the same outcome."""
    whole = http_outcome([data], eof)
    assert http_outcome(split_at(data, [cut % (len(data) + 1) for cut in cuts]), eof) == whole
    if len(data) <= 4000:
        assert http_outcome([data[i : i + 1] for i in range(len(data))], eof) == whole


@settings(FUZZ, max_examples=120)
@given(
    st.binary(max_size=300) | http_responses(),
    st.lists(st.integers(0, 2**17), max_size=24),
    st.booleans(),
)
def test_response_framing_is_total_and_split_invariant(
    data: bytes, cuts: list[int], eof: bool
) -> None:
    check_framing(data, cuts, eof)


# == regressions found by fuzzing ==================================================================

MALFORMED_REQUESTS = [
    pytest.param("Collect", b"\xff", id="collect-corrupt-wire-format"),
    pytest.param("Collect", b"\x0a\x03\x12\x01\xff", id="collect-endpoint-not-utf8"),
    pytest.param("Watch", b"\xff", id="watch-corrupt-wire-format"),
    pytest.param("Watch", b"\x0a\x03\x12\x01\xff", id="watch-endpoint-not-utf8"),
]


@pytest.mark.parametrize(("method", "payload"), MALFORMED_REQUESTS)
def test_malformed_request_bytes_are_invalid_argument(
    server: ServerProcess, method: str, payload: bytes
) -> None:
    """Found by fuzzing the server with raw bytes: these were answered UNKNOWN (grpc.aio's own
    deserializer failed outside the handler), with the DecodeError text as details."""
    assert server.raw(method, payload) == grpc.StatusCode.INVALID_ARGUMENT


def _best_parse_seconds(text: str, runs: int) -> float:
    """The best of ``runs`` parses of ``text`` (refusing it is fine: this is about time)."""
    best = math.inf
    for _ in range(runs):
        started = time.perf_counter()
        with contextlib.suppress(ExpositionError):
            parse(text)
        best = min(best, time.perf_counter() - started)
    return best


def test_a_label_set_of_a_million_empty_terms_is_refused_at_once() -> None:
    """Found by bench/fuzz.py's linear-time property: ``a{,=,=,=...} 1`` took quadratic time
    (640 kB: 15 s on the event loop); the parser now refuses more than MAX_LABEL_TERMS terms."""
    with watchdog(10.0, "parsing 2 MB of empty label terms"), pytest.raises(ExpositionError):
        parse("a{" + ",=" * max(1_000_000, 10 * MAX_LABEL_TERMS) + "} 1")


def test_label_set_parse_time_grows_with_its_length_not_terms_times_length() -> None:
    value = "v" * 2**20
    one_term = f'a{{x="{value}"}} 1'  # 1 MiB
    many_terms = "a{" + ",=" * (MAX_LABEL_TERMS - 2) + f',x="{value}"}} 1'  # 1 MiB + 2 kB
    small = _best_parse_seconds(one_term, runs=3)
    with watchdog(120.0, "parsing a 1 MiB label set of 999 terms"):
        large = _best_parse_seconds(many_terms, runs=1)
    assert large < 10 * small + 0.05, f"{small * 1e3:.1f} ms -> {large * 1e3:.0f} ms"


# Exported for bench/fuzz.py: name -> (strategy of argument tuples, check, needs the server).
PROPERTIES: dict[str, tuple[st.SearchStrategy[tuple[Any, ...]], Callable[..., None], bool]] = {
    "parser: reused vs cold on scrape sequences": (
        st.tuples(scrape_sequences(), st.sampled_from([0, 1, 3, 50, 50_000])),
        check_reused_parser,
        False,
    ),
    "parser: arbitrary text": (
        st.tuples(SYNTAX | st.text(max_size=200), st.none() | st.integers(0, 5)),
        check_any_text,
        False,
    ),
    "parser: heavily mutated real scrape": (
        st.tuples(
            real_slices(max_lines=2000)
            .flatmap(lambda lines: mutated(lines, max_ops=20))
            .map("\n".join),
            st.none() | st.integers(0, 2000),
        ),
        check_any_text,
        False,
    ),
    "validation: CollectRequest": (
        st.tuples(collect_requests(), st.sampled_from(REGISTRIES)),
        local_collect,
        False,
    ),
    "validation: WatchRequest": (
        st.tuples(
            watch_requests(), st.sampled_from([LIMITS, WatchLimits()]), st.sampled_from(REGISTRIES)
        ),
        local_watch,
        False,
    ),
    "server: Collect": (st.tuples(collect_requests()), check_server_collect, True),
    "server: Watch": (
        st.tuples(watch_requests().filter(lambda r: len(r.targets) <= 6)),
        check_server_watch,
        True,
    ),
    "http11: split invariance": (
        st.tuples(
            st.binary(max_size=2000) | http_responses(),
            st.lists(st.integers(0, 2**17), max_size=40),
            st.booleans(),
        ),
        check_framing,
        False,
    ),
}
