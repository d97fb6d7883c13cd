"""Longer fuzzing: the properties of ``tests/test_fuzz.py``, for minutes instead of seconds.

Every property of ``test_fuzz.PROPERTIES`` (the parser reused against cold parses over
sequences of mutated real scrapes, arbitrary and heavily mutated text, Collect and Watch request
validation, the same requests against a real ``tgi-collector serve`` process on loopback, the
HTTP/1.1 response framing) gets an equal share of the time, run in batches of hypothesis
examples until its share is used up. Two more run only here:

- ``parser: linear time``: a short random pattern of syntax characters repeated to 20,000 and to
  200,000 characters must not take more than 25x longer for the 10x longer text (a backtracking
  regex or a rescan per character would show as 100x); texts under 50 ms are not judged.
- ``server: malformed request bytes``: random bytes as the request of Collect and Watch must
  never be answered UNKNOWN (they were, until the server deserialized requests itself).

Hypothesis keeps its example database in a temporary directory (nothing is written to the
repository). A failure prints the falsifying example and the traceback, and the property
stops there (turn it into a regression test). Exit status 1 if any property failed.

    python bench/fuzz.py                 # 5 minutes over all properties
    python bench/fuzz.py --minutes 30
    python bench/fuzz.py --minutes 2 --only parser
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_fuzz  # noqa: E402  (tests/ is not a package)

from tgi_collector.errors import ExpositionError, SampleLimitError  # noqa: E402
from tgi_collector.exposition import parse  # noqa: E402

BATCH = 100  # examples per hypothesis run; the time share is checked between runs


@dataclass
class Result:
    name: str
    examples: int = 0
    batches: int = 0
    seconds: float = 0.0
    failure: str | None = None


def _time_parse(text: str) -> float:
    started = time.perf_counter()
    with contextlib.suppress(ExpositionError, SampleLimitError):
        parse(text)
    return time.perf_counter() - started


def check_linear_time(pattern: str, prefix: str, suffix: str) -> None:
    """10x the text may cost 25x the time at most (noise allowed for), never 100x."""
    texts = [prefix + pattern * (size // len(pattern)) + suffix for size in (20_000, 200_000)]
    with test_fuzz.watchdog(60.0, "parsing 200,000 characters"):
        small = min(_time_parse(texts[0]) for _ in range(3))
        large = min(_time_parse(texts[1]) for _ in range(2))
    if large > 0.05:
        assert large <= 25 * small + 0.01, f"{small * 1e3:.1f} ms -> {large * 1e3:.1f} ms"


LINEAR = st.tuples(
    st.text(test_fuzz.SYNTAX_CHARS, min_size=1, max_size=6)
    | st.lists(
        st.sampled_from(['{a="', '\\"', " # ", "le", "=", ",", '"', "\\", "{", "}"]),
        min_size=1,
        max_size=4,
    ).map("".join),
    st.sampled_from(["", "a", "a{", "# HELP a ", "# TYPE a ", 'a{b="', '{"', "a "]),
    st.sampled_from(["", " 1", '" 1', "} 1", '"} 1']),
)


def check_malformed_bytes(server: test_fuzz.ServerProcess, method: str, payload: bytes) -> None:
    code = server.raw(method, payload)
    assert code != grpc.StatusCode.UNKNOWN, f"{method} answered UNKNOWN to {payload!r}"


MALFORMED = st.tuples(st.sampled_from(["Collect", "Watch"]), st.binary(min_size=1, max_size=64))


def _run(
    *,
    name: str,
    strategy: st.SearchStrategy[tuple[Any, ...]],
    check: Callable[..., None],
    seconds: float,
    database: DirectoryBasedExampleDatabase,
    result: Result,
) -> None:
    """Batches of ``check`` under hypothesis until ``seconds`` are used or it fails."""
    started = time.monotonic()

    def counted(args: tuple[Any, ...]) -> None:
        result.examples += 1
        check(*args)

    while time.monotonic() - started < seconds:
        test = settings(
            max_examples=BATCH,
            deadline=None,
            database=database,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )(given(strategy)(counted))
        result.batches += 1
        try:
            test()
        except Exception as exc:
            result.failure = "".join(traceback.format_exception(exc))
            print(f"\n!! {name} FAILED after {result.examples} examples:\n{result.failure}")
            break
    result.seconds = time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="total time (default 5)")
    parser.add_argument("--only", default="", help="run the properties whose name contains this")
    args = parser.parse_args(argv)

    properties = dict(test_fuzz.PROPERTIES)
    properties["parser: linear time"] = (LINEAR, check_linear_time, False)
    properties["server: malformed request bytes"] = (MALFORMED, check_malformed_bytes, True)
    chosen = {name: spec for name, spec in properties.items() if args.only in name}
    if not chosen:
        parser.error(f"no property matches {args.only!r}")
    share = args.minutes * 60 / len(chosen)
    print(f"{len(chosen)} properties, {share:.0f} s each, batches of {BATCH} examples")

    results = []
    with tempfile.TemporaryDirectory(prefix="tgi-fuzz-") as tmp:
        database = DirectoryBasedExampleDatabase(str(Path(tmp) / "hypothesis"))
        server = None
        if any(spec[2] for spec in chosen.values()):
            server = test_fuzz.ServerProcess.start(Path(tmp))
        try:
            for name, (strategy, check, needs_server) in chosen.items():
                result = Result(name)
                results.append(result)
                run_check = check
                if needs_server:
                    run_check = _bound(check, server)
                print(f"-- {name}", flush=True)
                _run(
                    name=name,
                    strategy=strategy,
                    check=run_check,
                    seconds=share,
                    database=database,
                    result=result,
                )
                status = "ok" if result.failure is None else "FAILED"
                print(f"   {result.examples} examples in {result.seconds:.0f} s: {status}")
        finally:
            if server is not None:
                server.stop()

    print("\n| property | examples | seconds | result |\n|---|---|---|---|")
    for r in results:
        status = "ok" if r.failure is None else "**FAILED**"
        print(f"| {r.name} | {r.examples:,} | {r.seconds:.0f} | {status} |")
    return 1 if any(r.failure for r in results) else 0


def _bound(check: Callable[..., None], server: Any) -> Callable[..., None]:
    def with_server(*args: Any) -> None:
        check(server, *args)

    return with_server


if __name__ == "__main__":
    sys.exit(main())
