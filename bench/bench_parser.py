"""Benchmark: tgi_collector.exposition against prometheus_client's text parser.

Parses the real TGI scrape (tests/data/tgi/tgi-3.3-real.prom, 1,888 samples) in one process,
the contenders interleaved run by run so that machine noise hits them alike, and prints the
median time per parse, per sample, and the speed-ups over prometheus_client:

* prometheus_client: ``list(text_string_to_metric_families(text))``
* cold: a new ``Parser`` per parse (as ``exposition.parse``), nothing cached
* warm, same text: one ``Parser`` reused on the same text, as the collector reuses one per
  target: the previous result comes back after one string comparison
* warm, same values: one ``Parser`` alternating between the text and the text with a comment
  line added, so every line is looked up in the cache, no value has changed, and every family
  comes back as the same object
* warm, new values: one ``Parser`` alternating between two scrapes whose every value differs,
  so every line costs a cache lookup, a ``float()`` and new objects

Run: ``python bench/bench_parser.py [--runs N]``. Wall-clock and CPU (thread) time are both
reported; on a shared, noisy machine the CPU-time ratios are the steadier ones.
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tgi_collector.exposition import Parser, parse

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "tgi" / "tgi-3.3-real.prom"


def _new_values(text: str) -> str:
    """The same series, every value different (integers + 1, floats * 1.5)."""

    def bump(match: re.Match[str]) -> str:
        value = match.group(2)
        new = str(int(value) + 1) if value.isdigit() else repr(float(value) * 1.5)
        return match.group(1) + new

    return re.sub(r"^([^#\n].* )(\S+)$", bump, text, flags=re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=150, help="parses per contender (~10 s)")
    args = parser.parse_args()

    text = DATA.read_text(encoding="utf-8")
    other = _new_values(text)
    samples = parse(text).sample_count
    assert parse(other).sample_count == samples
    assert all(
        a.value != b.value
        for fa, fb in zip(parse(text), parse(other), strict=True)
        for a, b in zip(fa.samples, fb.samples, strict=True)
    )

    warm = Parser()
    warm.parse(text)
    commented = Parser()
    variants = [text, text + "# a comment: the text differs, no value does\n"]
    commented.parse(variants[1])
    alternating = Parser()
    texts = [text, other]
    alternating.parse(other)

    def warm_new_values(run: int) -> None:
        alternating.parse(texts[run % 2])

    contenders: dict[str, Callable[[int], object]] = {
        "prometheus_client": lambda _: list(text_string_to_metric_families(text)),
        "cold": lambda _: Parser().parse(text),
        "warm, same text": lambda _: warm.parse(text),
        "warm, same values": lambda run: commented.parse(variants[run % 2]),
        "warm, new values": warm_new_values,
    }
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    gc.collect()
    for run in range(args.runs):
        for name, contender in contenders.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            contender(run)
            c1, w1 = time.thread_time(), time.perf_counter()
            wall[name].append(w1 - w0)
            cpu[name].append(c1 - c0)

    print(f"{DATA.name}: {len(text):,} bytes, {samples:,} samples, {args.runs} runs each")
    print(f"{'':18} {'wall ms':>8} {'µs/sample':>9} {'speed-up':>8} {'cpu ms':>8} {'speed-up':>8}")
    base_wall = statistics.median(wall["prometheus_client"])
    base_cpu = statistics.median(cpu["prometheus_client"])
    for name in contenders:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"{name:18} {w * 1e3:8.2f} {w * 1e6 / samples:9.2f} {base_wall / w:7.1f}x"
            f" {c * 1e3:8.2f} {base_cpu / c:7.1f}x"
        )


if __name__ == "__main__":
    main()
