"""``tgi-collector demo``: a simulated TGI, a collector and a live Watch table, in one command.

It shows the whole path a control plane would use: the simulator serves ``/metrics`` with a
workload that follows the wall clock, the gRPC server runs a shared scrape loop over it, and a
client holds a ``Watch`` stream (resubscribing if it ends) and shows every snapshot in the
live table of ``tgi-collector watch``: rates, error rate and windowed p50/p99 latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import time
from typing import TextIO

from tgi_collector._table import Mode, WatchBoard, retry_reporter, run_live, terminal_mode
from tgi_collector.client import CollectorClient
from tgi_collector.server import SERVICE_NAME, CollectorServer, ServerConfig
from tgi_collector.simulator import SimulatorConfig, TgiSimulator

__all__ = ["DEMO_INSTANCE_ID", "MIN_DEMO_INTERVAL_SECONDS", "connect_hints", "run_demo"]

#: The instance id of the simulated target in the demo's stream.
DEMO_INSTANCE_ID = "simulated-tgi"
#: Shortest scrape interval the demo accepts (the server's minimum is lowered to it).
MIN_DEMO_INTERVAL_SECONDS = 0.1
# How often the simulated workload catches up with the wall clock.
_CLOCK_STEP_SECONDS = 0.1


def _client_host(listen: str) -> str:
    """Where a local client reaches a server listening on ``listen`` (host:port)."""
    host = listen.rpartition(":")[0]
    return "127.0.0.1" if host in ("", "0.0.0.0", "[::]", "::") else host


def connect_hints(address: str, endpoint: str, interval: float) -> list[str]:
    """How to reach the demo's collector from another terminal (grpcurl, the watch command)."""
    request = {
        "targets": [{"instance_id": DEMO_INSTANCE_ID, "endpoint": endpoint}],
        "interval": f"{interval:g}s",
    }
    grpcurl = shlex.join(
        [
            "grpcurl", "-plaintext", "-d", json.dumps(request, separators=(",", ":")),
            address, f"{SERVICE_NAME}/Watch",
        ]
    )  # fmt: skip
    watch = shlex.join(
        [
            "tgi-collector", "watch", "--server", address, "--interval", f"{interval:g}",
            f"{DEMO_INSTANCE_ID}={endpoint}",
        ]
    )  # fmt: skip
    return [f"  try:  {grpcurl}", f"  or:   {watch}"]


async def _follow_wall_clock(simulator: TgiSimulator) -> None:
    """Move the simulator's workload with real time (it only moves when told to)."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(_CLOCK_STEP_SECONDS)
        now = time.monotonic()
        simulator.advance(now - last)
        last = now


async def run_demo(
    *,
    listen: str,
    interval: float = 1.0,
    count: int | None = None,
    out: TextIO | None = None,
    mode: Mode | None = None,
) -> int:
    """Run the demo until cancelled, or until ``count`` snapshots were shown; returns 0.

    ``mode`` defaults to a refreshing table when ``out`` (stdout) is a terminal, table blocks
    otherwise.
    """
    out = sys.stdout if out is None else out
    mode = terminal_mode(out) if mode is None else mode
    config = ServerConfig(
        listen=listen,
        grace_seconds=1.0,
        default_watch_interval_seconds=interval,
        min_watch_interval_seconds=min(interval, ServerConfig().min_watch_interval_seconds),
    )
    simulator = TgiSimulator(SimulatorConfig())
    async with simulator, CollectorServer(config) as server:
        clock = asyncio.create_task(_follow_wall_clock(simulator), name="demo-wall-clock")
        try:
            address = f"{_client_host(listen)}:{server.port}"
            endpoint = f"{simulator.url}/metrics"
            header = [
                f"simulated TGI:  {endpoint}",
                f"collector gRPC: {address}  (Watch every {interval:g} s; Ctrl-C to stop)",
                *connect_hints(address, endpoint, interval),
            ]
            board = WatchBoard(title="tgi-collector demo", expected=1)
            if mode == "tty":
                board.header = tuple(header)  # the screen is redrawn: keep the hints on it
            else:
                print("\n".join(header), end="\n\n", file=out, flush=True)
            async with CollectorClient(address) as client:
                messages = client.watch(
                    [(DEMO_INSTANCE_ID, endpoint)],
                    interval=interval,
                    on_retry=retry_reporter(board, mode, sys.stderr),
                )
                await run_live(messages, board, out, mode=mode, count=count, flush_after=interval)
        finally:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
    return 0
