"""A small asyncio client of ``CollectorService`` over ``grpc.aio``.

For Python callers who would rather not touch the generated stubs directly. It returns the
protobuf messages as the server sent them.
"""

from __future__ import annotations

from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tgi_collector.v1 import collector_pb2, collector_pb2_grpc, snapshot_pb2

__all__ = ["CollectorClient"]


class CollectorClient:
    """A connection to a collector at ``address`` (``host:port``), plaintext."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(address)
        # The generated _pb2_grpc module has no type annotations (protoc writes none for it).
        self._stub = collector_pb2_grpc.CollectorServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def collect(
        self,
        endpoint: str,
        *,
        instance_id: str = "",
        omit_raw_metrics: bool = True,
        timeout: float | None = 30.0,
    ) -> snapshot_pb2.Snapshot:
        """Scrape ``endpoint`` through the collector now; raises ``grpc.aio.AioRpcError``."""
        request = collector_pb2.CollectRequest(
            target=collector_pb2.Target(instance_id=instance_id, endpoint=endpoint),
            options=collector_pb2.ScrapeOptions(omit_raw_metrics=omit_raw_metrics),
        )
        response = await self._stub.Collect(request, timeout=timeout)
        snapshot: snapshot_pb2.Snapshot = response.snapshot
        return snapshot

    async def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """The serving status name from the standard health service, e.g. ``"SERVING"``."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return status

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> CollectorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
