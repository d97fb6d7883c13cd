"""Benchmark: Watch fan-out, many subscribers of one target at 1 s (issue 3, bench item 1).

Why: a control plane may open a stream per router replica; one scrape loop per target must feed
all of them, every tick, without lagging. Setup, all on 127.0.0.1:

* one static target (``bench/_benchlib.py``, its own process) serving the real TGI scrape;
* ``python -m tgi_collector serve`` in a subprocess (its own CPU-bound loop, not the bench's);
* ``--subscribers`` Watch streams of that target at ``--interval``, opened from this process over
  ``--channels`` gRPC channels (each its own TCP connection), raw metrics omitted unless
  ``--raw``.

After every stream has its first message and a ``--warmup``, the window is ``--seconds`` long;
ticks whose scheduled time falls in it count. For each received snapshot:

* lag = receipt (wall clock, this process) - scrape completion, with completion approximated by
  ``timestamp + stats.duration`` (the scheduled tick plus the scrape's fetch-and-parse time; the
  scrape actually starts when the loop wakes, a little after the tick, so this overstates lag);
* lag from target = receipt - the wall time at which the target wrote that tick's response (no
  assumption on when the scrape started: transfer, parse, window, encode and delivery).

Reported: ticks, snapshots per subscriber (min/max, missing), p50/p99/max lags, the spread of one
tick's delivery over all subscribers, coalesced counts, target scrapes per tick (must be 1),
collector CPU (``/proc`` utime+stime) and RSS. A reference run with 1 subscriber, same setup, comes
first in the same invocation, for the lag ratio: on a shared machine only same-run ratios mean
much. Exit status 1 if a subscriber missed a snapshot or the target was scraped more than once
per tick.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import grpc
from _benchlib import (
    HelpFormatter,
    cpu_seconds,
    free_port,
    http_json,
    memory_mib,
    percentile,
    start_collector,
    start_targets,
    stop,
)

from tgi_collector.client import watch_request
from tgi_collector.v1 import collector_pb2_grpc

Record = tuple[int, float, float, int]  # tick (ns), receipt, scrape duration, coalesced


async def _read(
    call: grpc.aio.UnaryStreamCall, records: list[Record], first: asyncio.Event
) -> None:
    """Record every snapshot of one stream until it is cancelled."""
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        async for response in call:
            now = time.time()
            first.set()
            if response.WhichOneof("event") == "snapshot":
                snap = response.snapshot
                duration = snap.stats.duration.ToNanoseconds() / 1e9
                records.append((snap.timestamp.ToNanoseconds(), now, duration, response.coalesced))


async def run(args: argparse.Namespace, subscribers: int, log: Path) -> dict[str, float]:
    """One run: target, collector, ``subscribers`` streams; returns the figures."""
    budget = args.warmup + args.seconds + 120
    targets, ports = start_targets(1, budget)
    collector = None
    channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        port = free_port()
        collector = await start_collector(
            port,
            *("--min-watch-interval", f"{args.interval:g}"),
            *("--max-subscribers", str(max(subscribers, 1))),
            log=log,
        )
        url = f"http://127.0.0.1:{ports[0]}/metrics"
        request = watch_request([url], interval=args.interval, omit_raw_metrics=not args.raw)
        options = [("grpc.use_local_subchannel_pool", 1)]  # a TCP connection per channel
        count = min(args.channels, subscribers)
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options) for _ in range(count)]
        stubs = [collector_pb2_grpc.CollectorServiceStub(channel) for channel in channels]
        records: list[list[Record]] = [[] for _ in range(subscribers)]
        firsts = [asyncio.Event() for _ in range(subscribers)]
        calls = [stubs[i % count].Watch(request) for i in range(subscribers)]
        tasks = [
            asyncio.create_task(_read(c, r, f))
            for c, r, f in zip(calls, records, firsts, strict=True)
        ]
        async with asyncio.timeout(60):
            for event in firsts:
                await event.wait()
        await asyncio.sleep(args.warmup)
        t0, cpu0, client0 = time.time(), cpu_seconds(collector.pid), time.process_time()
        await asyncio.sleep(args.seconds)
        t1, cpu1, client1 = time.time(), cpu_seconds(collector.pid), time.process_time()
        rss, hwm = memory_mib(collector.pid)
        await asyncio.sleep(2 * args.interval + 0.5)  # the last ticks of the window arrive
        stats = await asyncio.to_thread(http_json, ports[0], "/stats?times")
    finally:
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                raise outcome  # a bug in _read
        for channel in channels:
            await channel.close()
        if collector is not None:
            stop(collector)
        stop(targets)

    lo, hi = int(t0 * 1e9), int(t1 * 1e9)
    ticks = sorted({r[0] for rs in records for r in rs if lo <= r[0] < hi})
    tick_set = set(ticks)
    got = [len({r[0] for r in rs if r[0] in tick_set}) for rs in records]
    kept = [r for rs in records for r in rs if r[0] in tick_set]
    served = sorted(stats["times"])

    def served_at(tick_ns: int) -> float:
        """When the target answered the scrape of this tick (first answer after the tick)."""
        index = bisect.bisect_left(served, tick_ns / 1e9)
        return served[index] if index < len(served) else float("nan")

    answered = {tick: served_at(tick) for tick in ticks}
    lags = [now - (tick / 1e9 + dur) for tick, now, dur, _ in kept]
    target_lags = [now - answered[tick] for tick, now, _, _ in kept]
    spreads = [
        max(r[1] for r in kept if r[0] == t) - min(r[1] for r in kept if r[0] == t) for t in ticks
    ]
    start, end = (ticks[0] / 1e9, ticks[-1] / 1e9 + args.interval) if ticks else (0.0, 0.0)
    scrapes = sum(1 for moment in served if start <= moment < end)
    return {
        "subscribers": subscribers,
        "ticks": len(ticks),
        "min per subscriber": min(got),
        "max per subscriber": max(got),
        "missing": sum(len(ticks) - n for n in got),
        "lag p50 ms": percentile(lags, 50) * 1e3,
        "lag p99 ms": percentile(lags, 99) * 1e3,
        "lag max ms": max(lags, default=float("nan")) * 1e3,
        "lag from target p50 ms": percentile(target_lags, 50) * 1e3,
        "lag from target p99 ms": percentile(target_lags, 99) * 1e3,
        "tick spread p50 ms": percentile(spreads, 50) * 1e3,
        "tick spread max ms": max(spreads, default=float("nan")) * 1e3,
        "coalesced total": sum(r[3] for r in kept),
        "target scrapes / tick": scrapes / len(ticks) if ticks else float("nan"),
        "collector CPU %": (cpu1 - cpu0) / (t1 - t0) * 100,
        "collector CPU ms / tick": (cpu1 - cpu0) * 1e3 / max(1, len(ticks)),
        "collector RSS MiB": rss,
        "collector peak RSS MiB": hwm,
        "bench client CPU %": (client1 - client0) / (t1 - t0) * 100,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000, help="Watch streams")
    parser.add_argument("--channels", type=int, default=10, help="gRPC channels they share")
    parser.add_argument("--seconds", type=int, default=30, help="measured window per run")
    parser.add_argument("--interval", type=float, default=1.0, help="Watch interval, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--raw", action="store_true", help="ask for raw metrics too")
    parser.add_argument("--no-reference", action="store_true", help="skip the 1-subscriber run")
    args = parser.parse_args()
    if args.subscribers < 1 or args.channels < 1 or args.seconds < 1 or args.interval <= 0:
        parser.error("--subscribers, --channels, --seconds and --interval must be positive")

    log = Path(tempfile.mkdtemp(prefix="bench-fanout-")) / "collector.log"
    counts = ([] if args.no_reference else [1]) + [args.subscribers]
    results = [asyncio.run(run(args, n, log)) for n in counts]
    raw = "with" if args.raw else "without"
    print(f"one target (real TGI scrape), interval {args.interval:g} s, {args.seconds} s window,")
    print(f"{args.channels} channels, raw metrics {raw}; collector log: {log}")
    columns = "".join(f"{int(r['subscribers']):>12,}" for r in results)
    print(f"{'subscribers':26}{columns}" + ("       ratio" if len(results) > 1 else ""))
    for key in results[-1]:
        if key == "subscribers":
            continue
        cells = "".join(f"{r[key]:12,.1f}" for r in results)
        ratio = results[-1][key] / results[0][key] if len(results) > 1 and results[0][key] else 0
        wanted = ratio and ("lag" in key or "CPU" in key or "RSS" in key)
        shown = f"{ratio:10.1f}x" if wanted else ""
        print(f"{key:26}{cells}{shown}")
    final = results[-1]
    every = final["missing"] == 0 and final["ticks"] > 0
    once = final["target scrapes / tick"] == 1
    print(f"every subscriber got every snapshot: {'yes' if every else 'NO'}")
    print(f"target scraped once per tick: {'yes' if once else 'NO'}")
    return 0 if every and once else 1


if __name__ == "__main__":
    sys.exit(main())
