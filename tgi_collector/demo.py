"""``tgi-collector demo``: a simulated TGI, a collector and a client, in one command.

It shows the whole path a user would build: the simulator serves ``/metrics``, the gRPC
server scrapes it on request, and a client calls ``Collect`` over a real socket and prints
what came back, every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio

from tgi_collector.client import CollectorClient
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.simulator import SimulatorConfig, TgiSimulator
from tgi_collector.v1 import snapshot_pb2

__all__ = ["run_demo"]


def _latency(snapshot: snapshot_pb2.Snapshot, family: str) -> str:
    for summary in snapshot.histograms:
        if summary.family == family and not summary.labels and summary.HasField("p50"):
            return f"p50 {summary.p50 * 1000:.0f} ms  p99 {summary.p99 * 1000:.0f} ms"
    return "p50 -  p99 -"


def describe(snapshot: snapshot_pb2.Snapshot) -> str:
    """One line per snapshot: health, counters, queue and end-to-end latency."""
    if snapshot.health != snapshot_pb2.HEALTH_UP:
        return f"{snapshot.instance_id}  DOWN  {snapshot.error.message}"
    requests = snapshot.request_metrics
    generation = snapshot.generation_metrics
    return (
        f"{snapshot.instance_id}  UP  success {requests.success_total:.0f}"
        f"  failure {requests.failure_total:.0f}  queue {requests.queue_size:.0f}"
        f"  batch {generation.batch_current_size:.0f}"
        f"  generated tokens {generation.generated_tokens_total:.0f}"
        f"  request latency {_latency(snapshot, 'tgi_request_duration')}"
    )


async def run_demo(*, listen: str, interval: float = 2.0, count: int | None = None) -> None:
    """Run the demo; ``count`` bounds the number of Collect calls (None: until interrupted)."""
    async with (
        TgiSimulator(SimulatorConfig()) as simulator,
        CollectorServer(ServerConfig(listen=listen, grace_seconds=1.0)) as server,
    ):
        host = listen.rpartition(":")[0] or "127.0.0.1"
        address = f"{host}:{server.port}"
        print(f"simulated TGI:  {simulator.url}/metrics")
        print(f"collector gRPC: {address}  (try: grpcurl -plaintext {address} list)")
        async with CollectorClient(address) as client:
            done = 0
            while count is None or done < count:
                await asyncio.sleep(interval)
                # The simulator's workload moves only when told to: keep it on wall time.
                simulator.advance(interval)
                snapshot = await client.collect(
                    f"{simulator.url}/metrics", instance_id="simulated-tgi"
                )
                print(describe(snapshot), flush=True)
                done += 1
