"""Benchmark: how many TGI targets one collector keeps at 1 s, against Prometheus (issue 3, item 2).

Why: the collector is meant to replace a Prometheus scrape for control planes; it must hold
hundreds of targets at 1 s in one process on a small machine, at no more CPU per scrape than
Prometheus spends on the same payload. For each N of ``--targets`` and each payload of
``--payload`` (each a separate run, with its own targets process):

1. One targets process (``bench/_benchlib.py``) listens on N loopback ports, each a distinct
   target (own connection) answering the real TGI scrape (98,977 bytes, 1,888 samples) from
   pre-built bytes, uncompressed. ``static``: the file itself, every time, which flatters a
   scraper that caches unchanged input. ``busy`` (``bench/_busy.py``): the k-th scrape of a
   target answers the file as a busy TGI would have moved it after k scrapes: every counter
   grows, every histogram gets new observations in about half of its buckets (plus ``_count``
   and ``_sum``), gauges alternate; about 1,130 of the 1,888 values change on every scrape.
2. Collector phase: ``python -m tgi_collector serve`` in a subprocess; this process opens one
   Watch of all N targets at ``--interval`` (raw metrics omitted), waits ``--warmup`` seconds,
   then measures ``--seconds``. Lateness of a snapshot = its receipt here - its scheduled tick
   (the snapshot ``timestamp``): everything that can make the data late (the loop waking late,
   the HTTP fetch, parse, window, encode, delivery). A tick missing from the stream (skipped
   by a loop that overran, or coalesced because delivery fell behind) counts as infinitely
   late. Goal: p99 under 10% of the interval.
3. Prometheus phase (same targets, after the collector stopped, so the two don't share the 2
   cores): ``prometheus`` from Debian, started here on 127.0.0.1 with storage in a temp dir,
   ``scrape_interval`` = ``scrape_timeout`` = the interval, no remote anything, stopped at the
   end. Same warm-up and window. From its own TSDB over the window: the successful scrapes
   (sum of ``up``; missed = expected - successful) and the p99 over targets of the longest
   ``scrape_duration_seconds``.

CPU per scrape = process utime+stime over the window (``/proc/PID/stat``, 10 ms ticks) / the
/metrics requests the targets answered in the window. Prometheus's figure includes appending
every sample to its TSDB (its job); the collector's includes the window and the gRPC delivery
(its job). RSS = ``VmRSS`` at the end of the window. The machine is shared: compare the two
columns of one run, not absolute figures across runs. One row per N and payload; the largest
N under the lateness goal is given per payload. No goal is asserted: exit status 0, or 2 when
``prometheus`` is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from subprocess import Popen

import grpc
from _benchlib import (
    PAYLOADS,
    HelpFormatter,
    cpu_seconds,
    free_port,
    http_json,
    memory_mib,
    percentile,
    spawn,
    start_collector,
    start_targets,
    stop,
)

from tgi_collector.client import watch_request
from tgi_collector.v1 import collector_pb2_grpc, snapshot_pb2

Record = tuple[str, int, float, bool]  # instance id, tick (ns), receipt, up


class Window:
    """CPU of one process and the targets' /metrics answers over the measured window."""

    def __init__(self, pid: int, targets_pid: int, stats_port: int) -> None:
        self.pid, self.targets_pid, self.stats_port = pid, targets_pid, stats_port

    def _sample(self) -> tuple[float, float, float, dict]:
        stats = http_json(self.stats_port, "/stats")  # blocking: called in a thread
        return time.time(), cpu_seconds(self.pid), cpu_seconds(self.targets_pid), stats

    async def __aenter__(self) -> Window:
        self.t0, self.cpu0, self.tcpu0, self.stats0 = await asyncio.to_thread(self._sample)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.t1, self.cpu1, self.tcpu1, self.stats1 = await asyncio.to_thread(self._sample)
        self.rss = memory_mib(self.pid)[0]

    def figures(self) -> dict[str, float]:
        scrapes = self.stats1["metrics"] - self.stats0["metrics"]
        seconds = self.t1 - self.t0
        return {
            "scrapes": scrapes,
            "cpu_us": (self.cpu1 - self.cpu0) * 1e6 / max(1, scrapes),
            "cpu_pct": (self.cpu1 - self.cpu0) * 100 / seconds,
            "rss": self.rss,
            "targets_cpu_pct": (self.tcpu1 - self.tcpu0) * 100 / seconds,
            # minus 1: the connection of the second /stats request itself
            "new_connections": self.stats1["connections"] - self.stats0["connections"] - 1,
        }


async def _read(
    call: grpc.aio.UnaryStreamCall, records: list[Record], coalesced: list[int]
) -> None:
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        async for response in call:
            now = time.time()
            coalesced[0] += response.coalesced
            if response.WhichOneof("event") == "snapshot":
                snap = response.snapshot
                tick = snap.timestamp.ToNanoseconds()
                up = snap.health == snapshot_pb2.HEALTH_UP
                records.append((snap.instance_id, tick, now, up))


async def collector_phase(
    args: argparse.Namespace, ports: list[int], targets: Popen, log: Path
) -> dict[str, float]:
    n, port = len(ports), free_port()
    proc = await start_collector(
        port,
        *("--min-watch-interval", f"{args.interval:g}"),
        *("--max-targets-per-watch", str(max(n, 1000))),
        log=log,
    )
    endpoints = [(f"t{i}", f"http://127.0.0.1:{p}/metrics") for i, p in enumerate(ports)]
    request = watch_request(endpoints, interval=args.interval, omit_raw_metrics=True)
    records: list[Record] = []
    coalesced = [0]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = collector_pb2_grpc.CollectorServiceStub(channel).Watch(request)
            reader = asyncio.create_task(_read(call, records, coalesced))
            try:
                await asyncio.sleep(args.warmup)
                start_coalesced = coalesced[0]
                async with Window(proc.pid, targets.pid, ports[0]) as window:
                    await asyncio.sleep(args.seconds)
                await asyncio.sleep(2 * args.interval + 0.5)  # the window's last ticks arrive
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader  # re-raises a bug in _read
    finally:
        stop(proc)
    lo, hi = int(window.t0 * 1e9), int(window.t1 * 1e9)
    kept = {(r[0], r[1]): r for r in records if lo <= r[1] < hi}  # (target, tick) -> record
    expected = n * round(args.seconds / args.interval)
    missing = max(0, expected - len(kept))
    lateness = [r[2] - r[1] / 1e9 for r in kept.values()] + [math.inf] * missing
    return window.figures() | {
        "p50_ms": percentile(lateness, 50) * 1e3,
        "p99_ms": percentile(lateness, 99) * 1e3,
        "max_ms": max(lateness, default=math.nan) * 1e3,
        "missing": missing,
        "expected": expected,
        "down": sum(1 for r in kept.values() if not r[3]),
        "coalesced": coalesced[0] - start_coalesced,
    }


def _query(port: int, expr: str, at: float) -> float:
    """The first value of an instant query at time ``at``, NaN if none."""
    query = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=10) as r:
        result = json.loads(r.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else math.nan


def _start_prometheus(ports: list[int], interval: float, tmp: Path) -> tuple[Popen, int, Path]:
    """Start Prometheus scraping ``ports``; return it, its web port, its storage, once ready."""
    port, data, config = free_port(), tmp / f"data-{len(ports)}", tmp / "prometheus.yml"
    every = f"{round(interval * 1000)}ms"
    job = {"job_name": "tgi", "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
    config.write_text(  # JSON is YAML
        json.dumps(
            {"global": {"scrape_interval": every, "scrape_timeout": every}, "scrape_configs": [job]}
        )
    )
    proc = spawn(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        tmp / "prometheus.log",
    )
    for _ in range(300):  # 30 s at most
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1).close()
            return proc, port, data
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited ({proc.returncode}); see {tmp}")
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"prometheus not ready in 30 s; see {tmp}")


async def prometheus_phase(
    args: argparse.Namespace, ports: list[int], targets: Popen, tmp: Path
) -> dict[str, float]:
    proc, port, data = await asyncio.to_thread(_start_prometheus, ports, args.interval, tmp)
    try:
        await asyncio.sleep(args.warmup)
        async with Window(proc.pid, targets.pid, ports[0]) as window:
            await asyncio.sleep(args.seconds)
        span, at = f"{args.seconds}s", window.t1
        ok, duration = await asyncio.gather(  # from its TSDB, over the window exactly
            asyncio.to_thread(_query, port, f"sum(sum_over_time(up[{span}]))", at),
            asyncio.to_thread(
                _query, port, f"quantile(0.99, max_over_time(scrape_duration_seconds[{span}]))", at
            ),
        )
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)
    expected = len(ports) * round(args.seconds / args.interval)
    return window.figures() | {"missing": expected - ok, "duration_p99_ms": duration * 1e3}


async def run(
    args: argparse.Namespace, n: int, payload: str, tmp: Path
) -> dict[str, dict[str, float]]:
    budget = 2 * (args.warmup + args.seconds) + 300
    targets, ports = start_targets(n, budget, payload)
    try:
        result = {"collector": await collector_phase(args, ports, targets, tmp / "collector.log")}
        if not args.no_prometheus:
            result["prometheus"] = await prometheus_phase(args, ports, targets, tmp)
    finally:
        stop(targets)
    return result


def _row(n: int, payload: str, result: dict[str, dict[str, float]], interval: float) -> str:
    c = result["collector"]
    p = result.get("prometheus", {})
    ratio = c["cpu_us"] / p["cpu_us"] if p.get("cpu_us") else math.nan
    pct = c["p99_ms"] / (interval * 10)
    return (
        f"{n:>5} | {payload:<7} | {c['cpu_us']:8,.0f} | {p.get('cpu_us', math.nan):8,.0f}"
        f" | {ratio:5.2f}"
        f" | {c['p50_ms']:7.1f} | {c['p99_ms']:8.1f} ({pct:5.1f}%) | {c['missing']:>5}"
        f" | {c['coalesced']:>4} | {c['cpu_pct']:5.0f}% | {p.get('cpu_pct', math.nan):5.0f}%"
        f" | {c['rss']:6.0f} | {p.get('rss', math.nan):6.0f}"
        f" | {p.get('duration_p99_ms', math.nan):8.1f} | {p.get('missing', math.nan):5.0f}"
        f" | {c['targets_cpu_pct']:4.0f}% | {c['new_connections']:>5}"
    )


HEADER = (
    "    N | payload | coll µs/ | prom µs/ | ratio | coll p50 | coll p99 lateness  | miss. | coal "
    "| coll  | prom  | coll   | prom   | prom     | prom  | targ  | new\n"
    "      |         |  scrape  |  scrape  | c/p   | late ms  | ms (% of interval) | ticks |      "
    "| CPU   | CPU   | RSS MiB| RSS MiB| scrape99 | miss. | CPU   | conns"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--targets", default="25,50,100,300", help="comma-separated values of N")
    parser.add_argument("--seconds", type=int, default=60, help="measured window per phase")
    parser.add_argument("--interval", type=float, default=1.0, help="scrape interval, seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before each window")
    parser.add_argument(
        "--payload", default="static", help=f"comma-separated payloads, of {', '.join(PAYLOADS)}"
    )
    parser.add_argument("--no-prometheus", action="store_true", help="collector phase only")
    args = parser.parse_args()
    counts = [int(value) for value in args.targets.split(",") if value.strip()]
    if not counts or min(counts) < 1 or args.seconds < 1 or args.interval <= 0:
        parser.error("--targets, --seconds and --interval must be positive")
    payloads = list(dict.fromkeys(v.strip() for v in args.payload.split(",") if v.strip()))
    if not payloads or not set(payloads) <= set(PAYLOADS):
        parser.error(f"--payload: a comma-separated list of {', '.join(PAYLOADS)}")
    if not args.no_prometheus and shutil.which("prometheus") is None:
        print("prometheus not found: apt-get install -y prometheus (or --no-prometheus)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"interval {args.interval:g} s, window {args.seconds} s after {args.warmup:g} s warm-up;")
    print(f"logs in {tmp}\n{HEADER}", flush=True)
    results = {}
    for n in counts:  # the payloads of one N one after the other: the closest conditions
        for payload in payloads:
            results[n, payload] = asyncio.run(run(args, n, payload, tmp))
            print(_row(n, payload, results[n, payload], args.interval), flush=True)
    limit = args.interval * 100  # 10% of the interval, in ms
    print()
    for payload in payloads:
        kept = [
            n for (n, p), r in results.items() if p == payload and r["collector"]["p99_ms"] < limit
        ]
        print(
            f"{payload}: largest N with collector p99 lateness < 10% of the interval:"
            f" {max(kept, default=0)}"
        )
    for (n, payload), r in results.items():
        c, p = r["collector"], r.get("prometheus")
        extra = f"; Prometheus {p['scrapes']:,}" if p else ""
        print(
            f"N={n} {payload}: expected {c['expected']:,} scrapes:"
            f" collector {c['scrapes']:,}{extra}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
