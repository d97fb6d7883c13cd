"""The gRPC server end to end: real grpc.aio server, real HTTP targets, real sockets."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from fixture_server import FixtureServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reference import SEED_SAMPLE, TGI_REAL, buckets_from_text, histogram_quantile

from tgi_collector import convert
from tgi_collector.client import CollectorClient
from tgi_collector.errors import ScrapeErrorKind
from tgi_collector.scraper import Scraper
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.snapshot import ScrapeFailure, ScrapeStats, Snapshot
from tgi_collector.targets import ScrapeOptions, Target
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc, snapshot_pb2


@pytest.fixture
async def server() -> AsyncIterator[CollectorServer]:
    async with CollectorServer(ServerConfig(listen="127.0.0.1:0", grace_seconds=0.5)) as running:
        yield running


@pytest.fixture
async def stub(
    server: CollectorServer,
) -> AsyncIterator[collector_pb2_grpc.CollectorServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield collector_pb2_grpc.CollectorServiceStub(channel)


def _request(endpoint: str, **options: object) -> collector_pb2.CollectRequest:
    return collector_pb2.CollectRequest(
        target=collector_pb2.Target(instance_id="tgi-a", endpoint=endpoint),
        options=collector_pb2.ScrapeOptions(**options),  # type: ignore[arg-type]
    )


async def test_collect_real_tgi_scrape(
    stub: collector_pb2_grpc.CollectorServiceStub, fixture_server: FixtureServer
) -> None:
    text = TGI_REAL.read_text()
    fixture_server.route("/metrics", body=TGI_REAL)
    response = await stub.Collect(_request(fixture_server.url("/metrics")), timeout=10)
    snapshot = response.snapshot
    assert snapshot.health == snapshot_pb2.HEALTH_UP, snapshot.error.message
    assert snapshot.instance_id == "tgi-a"
    assert snapshot.stats.body_bytes == len(TGI_REAL.read_bytes())
    assert snapshot.stats.samples == 1888
    assert snapshot.request_metrics.success_total == 109
    assert snapshot.request_metrics.failure_total == 2
    assert dict(snapshot.request_metrics.failures_by_err) == {"validation": 2}
    assert snapshot.request_metrics.request_count == 111

    summaries = {s.family: s for s in snapshot.histograms if not s.labels}
    duration = summaries["tgi_request_duration"]
    buckets = buckets_from_text(text, "tgi_request_duration")
    for q, got in ((0.5, duration.p50), (0.9, duration.p90), (0.99, duration.p99)):
        assert math.isclose(got, histogram_quantile(q, buckets), rel_tol=1e-12)
    # Every histogram series of the file is summarised, histograms kept whole in raw_metrics.
    raw = {family.name: family for family in snapshot.raw_metrics}
    assert raw["tgi_request_duration"].type == snapshot_pb2.METRIC_TYPE_HISTOGRAM
    (series,) = raw["tgi_request_duration"].histograms
    assert [(b.upper_bound, b.cumulative_count) for b in series.buckets] == buckets
    assert raw["tgi_request_failure"].help == ""  # TGI never writes HELP for this family
    # /info answered 404 by the fixture: the scrape is still up, model info empty.
    assert snapshot.model_info.model_id == ""


async def test_collect_omits_raw_metrics_on_request(
    stub: collector_pb2_grpc.CollectorServiceStub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    response = await stub.Collect(
        _request(fixture_server.url("/metrics"), omit_raw_metrics=True, skip_info=True)
    )
    assert response.snapshot.health == snapshot_pb2.HEALTH_UP
    assert len(response.snapshot.raw_metrics) == 0
    assert response.snapshot.request_metrics.success_total == 250
    assert fixture_server.hits("/info") == 0


async def test_dead_target_is_data_not_an_error(
    stub: collector_pb2_grpc.CollectorServiceStub, unused_port: int
) -> None:
    response = await stub.Collect(_request(f"http://127.0.0.1:{unused_port}/metrics"))
    assert response.snapshot.health == snapshot_pb2.HEALTH_DOWN
    assert response.snapshot.error.kind == snapshot_pb2.ERROR_KIND_CONNECT
    assert response.snapshot.error.message


async def test_http_status_error_reports_status(
    stub: collector_pb2_grpc.CollectorServiceStub, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", status=500, body=b"boom")
    response = await stub.Collect(_request(fixture_server.url("/metrics")))
    assert response.snapshot.error.kind == snapshot_pb2.ERROR_KIND_HTTP_STATUS
    assert response.snapshot.error.http_status == 500


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (collector_pb2.CollectRequest(), "target"),
        (_request(""), "target.endpoint"),
        (_request("127.0.0.1:8080/metrics"), "target.endpoint"),
        (_request("ftp://127.0.0.1/metrics"), "target.endpoint"),
        (_request("file:///etc/passwd"), "target.endpoint"),
        (_request("http://"), "target.endpoint"),
        (_request("http://user:pw@127.0.0.1/metrics"), "target.endpoint"),
        (
            collector_pb2.CollectRequest(
                target=collector_pb2.Target(instance_id="x" * 257, endpoint="http://127.0.0.1/")
            ),
            "target.instance_id",
        ),
        (
            collector_pb2.CollectRequest(
                target=collector_pb2.Target(instance_id="bad id", endpoint="http://127.0.0.1/")
            ),
            "target.instance_id",
        ),
        (_request("http://127.0.0.1/", timeout={"seconds": 61}), "options.timeout"),
        (_request("http://127.0.0.1/", timeout={"seconds": -1}), "options.timeout"),
        (_request("http://127.0.0.1/", timeout={"nanos": 1000}), "options.timeout"),
        (_request("http://127.0.0.1/", max_body_bytes=2**40), "options.max_body_bytes"),
        (_request("http://127.0.0.1/", max_samples=10**8), "options.max_samples"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    stub: collector_pb2_grpc.CollectorServiceStub,
    request_: collector_pb2.CollectRequest,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Collect(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}:")


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/metrics",
        "http://0.0.0.0:8080/metrics",
        "http://[::]:8080/metrics",
    ],
)
async def test_denied_targets_are_permission_denied(
    stub: collector_pb2_grpc.CollectorServiceStub, endpoint: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Collect(_request(endpoint))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "169.254" not in raised.value.details()


async def test_watch_without_targets_is_invalid_argument(
    stub: collector_pb2_grpc.CollectorServiceStub,
) -> None:
    call = stub.Watch(collector_pb2.WatchRequest())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("targets:")


class _BrokenScraper(Scraper):
    """A seam for a fault no real target can produce: a bug inside the handler."""

    async def scrape(self, target: Target, options: ScrapeOptions) -> Snapshot:
        raise ZeroDivisionError("secret internal detail")


async def test_handler_bug_is_internal_with_generic_message() -> None:
    config = ServerConfig(listen="127.0.0.1:0", grace_seconds=0.1)
    async with (
        _BrokenScraper() as scraper,
        CollectorServer(config, scraper=scraper) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_request("http://127.0.0.1:9/metrics"))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error"


async def test_oversize_request_is_refused() -> None:
    config = ServerConfig(listen="127.0.0.1:0", max_receive_bytes=1024)
    async with (
        CollectorServer(config) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_request("http://127.0.0.1/" + "a" * 4096))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_health_serving_then_not_serving_on_stop() -> None:
    server = CollectorServer(ServerConfig(listen="127.0.0.1:0", grace_seconds=0.1))
    await server.start()
    async with CollectorClient(f"127.0.0.1:{server.port}") as client:
        assert await client.health() == "SERVING"
        assert await client.health("tgi_collector.v1.CollectorService") == "SERVING"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            updates = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            first = await updates.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            await server.stop()
            second = await updates.read()
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_client_collect_through_server(
    server: CollectorServer, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    async with CollectorClient(f"127.0.0.1:{server.port}") as client:
        snapshot = await client.collect(fixture_server.base_url, instance_id="seed")
    # A bare base URL means /metrics.
    assert snapshot.endpoint == fixture_server.url("/metrics")
    assert snapshot.request_metrics.request_count == 253
    assert len(snapshot.raw_metrics) == 0


async def test_listen_on_a_taken_port_fails_clearly(server: CollectorServer) -> None:
    other = CollectorServer(ServerConfig(listen=f"127.0.0.1:{server.port}"))
    with pytest.raises(OSError, match="cannot listen"):
        await other.start()
    await other.stop(0)


@pytest.mark.parametrize("kind", list(ScrapeErrorKind))
def test_every_error_kind_has_its_own_wire_value(kind: ScrapeErrorKind) -> None:
    down = Snapshot(
        instance_id="tgi-a",
        endpoint="http://127.0.0.1:9/metrics",
        timestamp=datetime.now(UTC),
        up=False,
        stats=ScrapeStats(0.0, 0, 0),
        error=ScrapeFailure(kind, "why"),
    )
    wire = convert.snapshot_to_proto(down).error.kind
    assert snapshot_pb2.ErrorKind.Name(wire) == "ERROR_KIND_" + kind.value.upper()


def test_the_proto_has_no_error_kind_the_collector_never_sends() -> None:
    sent = {"ERROR_KIND_" + kind.value.upper() for kind in ScrapeErrorKind}
    assert set(snapshot_pb2.ErrorKind.keys()) - sent == {"ERROR_KIND_UNSPECIFIED"}
