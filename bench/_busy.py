"""A busy TGI for the benchmarks: the real scrape, with values that move on every scrape.

Why: static targets answer the very same bytes every time, which flatters any scraper that
caches unchanged input (the collector's parser does next to nothing for a line whose value
text has not changed since the last scrape). A real TGI under load changes most of its values
between two scrapes, so ``bench/_benchlib.py targets N --payload busy`` serves
``body(k)`` for the k-th /metrics answer of each port (k = 0, 1, 2, ...), derived from the real
scrape as if the server had served some traffic between scrapes:

- counter: value + k * step, step in 1..5 per series (CRC-32 of the series text);
- histogram series: k * m observations (m in 1..3 per series) of one value v per series, the
  midpoint of two adjacent finite bounds in the lower middle of its bucket list: every bucket
  with ``le >= v`` (about half of them, ``+Inf`` included), ``_count`` grow by k * m and
  ``_sum`` by k * m * v, so the histogram stays cumulative with ``+Inf`` == ``_count``;
- summary ``_count`` and ``_sum``: as counters (cumulative in TGI, never going down);
- gauges, summary quantiles and anything else: the original value for an even k, + 1 for an
  odd one.

Integers stay integers; other values are written as ``repr(float)`` without a trailing ``.0``
(as TGI writes them: ``109``, ``0.0025``). ``body(0)`` is the original text. The template
precomputes the text around every moving value, so a body costs one formatting per moving
value and a join (0.2-0.3 ms for the 98,977-byte file, whose 1,888 samples include 1,134 that
move); bodies are cached for the last few k, since targets scraped together share their k.

``python bench/_busy.py`` checks a few bodies with prometheus_client and
``tgi_collector.exposition`` and prints the build time per body.
"""

from __future__ import annotations

import math
import re
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_INT = re.compile(r"[+-]?[0-9]+")
_LINEAR, _PARITY = 0, 1  # value = base + k * delta, or base + (k % 2) * delta

Slot = tuple[bool, int, float, float]  # integer?, mode, base, delta


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def _fmt(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


class _Histogram:
    def __init__(self) -> None:
        self.buckets: list[tuple[float, int]] = []  # (le, sample index)
        self.count: int | None = None
        self.sum: int | None = None


class Template:
    """The parsed scrape: static text chunks around the values that move with k."""

    def __init__(self, text: str) -> None:
        samples: list[tuple[str, str]] = []  # (text before the value token, value token)
        moves: dict[int, tuple[int, float]] = {}  # sample index -> (mode, delta)
        histograms: dict[tuple, _Histogram] = {}
        chunks: list[str] = []
        pending: list[str] = []  # static text since the last sample's value
        family, kind = "", "untyped"
        for line in text.split("\n"):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                parts = stripped.split()
                if len(parts) >= 4 and parts[0] == "#" and parts[1] == "TYPE":
                    family, kind = parts[2], parts[3]
                pending.append(line + "\n")
                continue
            key, _, value = line.rpartition(" ")
            index = len(samples)
            samples.append((key, value))
            pending.append(key + " ")
            chunks.append("".join(pending))
            pending = ["\n"]
            name = key.partition("{")[0].strip()
            labels = tuple(sorted(_LABEL.findall(key.partition("{")[2])))
            suffix = name[len(family) :] if name.startswith(family) else None
            step = _crc(key) % 5 + 1
            if kind == "counter" and suffix == "":
                moves[index] = (_LINEAR, step)
            elif kind == "histogram" and suffix in ("_bucket", "_count", "_sum"):
                series = histograms.setdefault(
                    (family, tuple(kv for kv in labels if kv[0] != "le")), _Histogram()
                )
                if suffix == "_bucket":
                    le = dict(labels).get("le")
                    if le is not None:
                        series.buckets.append((float(le), index))
                elif suffix == "_count":
                    series.count = index
                else:
                    series.sum = index
            elif kind == "summary" and suffix in ("_count", "_sum"):
                moves[index] = (_LINEAR, step)
            else:
                moves[index] = (_PARITY, 1)
        tail = "".join(pending)
        tail = tail[:-1] if tail.endswith("\n") else tail  # split() gave one line too many
        for (family, labels), series in histograms.items():
            finite = sorted(le for le, _ in series.buckets if math.isfinite(le) and le > 0)
            if len(finite) < 2 or series.count is None or series.sum is None:
                continue  # not a complete histogram: its values stay as they are
            crc = _crc(f"{family}{labels}")
            n = len(finite)
            i = max(1, n // 2 - crc % max(1, n // 8))  # lower middle of the list
            v = (finite[i - 1] + finite[i]) / 2
            m = crc % 3 + 1
            for le, index in series.buckets:
                if le >= v:
                    moves[index] = (_LINEAR, m)
            moves[series.count] = (_LINEAR, m)
            moves[series.sum] = (_LINEAR, m * v)
        # Fold the samples that never move into the static text.
        self.chunks: list[str] = []  # len(slots) + 1 texts around the moving values
        self.slots: list[Slot] = []
        static: list[str] = []
        for index, (_, value) in enumerate(samples):
            static.append(chunks[index])
            move = moves.get(index)
            try:
                base = float(value)
            except ValueError:
                move = None
            if move is None or not math.isfinite(base):
                static.append(value)
                continue
            mode, delta = move
            integer = bool(_INT.fullmatch(value)) and float(delta).is_integer()
            self.chunks.append("".join(static))
            static = []
            if integer:
                self.slots.append((True, mode, int(value), int(delta)))
            else:
                self.slots.append((False, mode, base, float(delta)))
        static.append(tail)
        self.chunks.append("".join(static))
        self.samples = len(samples)

    def body(self, k: int) -> bytes:
        """The scrape text after k scrapes, UTF-8."""
        ks = (k, k & 1)
        values = [
            str(base + ks[mode] * delta) if integer else _fmt(base + ks[mode] * delta)
            for integer, mode, base, delta in self.slots
        ]
        out = [""] * (2 * len(values) + 1)
        out[::2] = self.chunks
        out[1::2] = values
        return "".join(out).encode()


class Bodies:
    """``response(k)``: ``wrap(template.body(k))``, built once per k, the last ``keep`` kept."""

    def __init__(self, template: Template, wrap: Callable[[bytes], bytes], keep: int = 8) -> None:
        self._template, self._wrap, self._keep = template, wrap, keep
        self._cache: dict[int, bytes] = {}

    def response(self, k: int) -> bytes:
        answer = self._cache.get(k)
        if answer is None:
            answer = self._cache[k] = self._wrap(self._template.body(k))
            while len(self._cache) > self._keep:
                del self._cache[next(iter(self._cache))]  # the oldest built
        return answer


# -- self-test: python bench/_busy.py ---------------------------------------------------------


def _check(text: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    from tgi_collector.exposition import parse  # noqa: PLC0415

    template = Template(text)
    assert template.body(0).decode() == text, "body(0) is not the original text"
    previous: dict[tuple, float] = {}
    changed = 0
    for k in (0, 1, 2, 3, 10, 11, 1000, 1001):
        body = template.body(k).decode()
        values: dict[tuple, float] = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                values[key] = s.value
                cumulative = family.type in ("counter", "histogram") or (
                    family.type == "summary" and s.name.endswith(("_count", "_sum"))
                )
                if cumulative and key in previous:
                    assert s.value >= previous[key], f"{key} went down at k={k}"
        if previous:
            changed = sum(1 for key, value in values.items() if previous[key] != value)
        previous = values
        exposition = parse(body)
        n = 0
        for family in exposition:
            for sample in family.samples:
                n += 1
                key = (sample.name, tuple(sorted(sample.labels)))
                if key not in values:  # prometheus_client names counter samples x_total
                    key = (f"{sample.name}_total", key[1])
                assert values[key] == sample.value, f"{key}: parsers disagree at k={k}"
            for series in family.histograms:
                counts = [b.cumulative_count for b in series.buckets]
                assert counts == sorted(counts), f"{family.name}: not cumulative at k={k}"
                assert math.isinf(series.buckets[-1].upper_bound)
                assert counts[-1] == series.count, f"{family.name}: +Inf != count at k={k}"
        assert n == template.samples == len(values), (n, template.samples, len(values))
    print(f"{template.samples} samples, {len(template.slots)} move; {changed} changed k 1000->1001")
    times = []
    for k in range(2000, 2200):
        t0 = time.perf_counter()
        template.body(k)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"body build: median {times[100] * 1e3:.2f} ms, max {times[-1] * 1e3:.2f} ms")


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    _check((root / "tests" / "data" / "tgi" / "tgi-3.3-real.prom").read_text())
    sys.exit(0)
