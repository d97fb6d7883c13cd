"""``examples/typescript``: the Node client, built as its README says, against a real server.

The module's set-up runs the README's commands (``npm ci``, ``npm run generate``,
``npm run build``) in the example's folder, then each test starts a real
:class:`~tgi_collector.server.CollectorServer` and a real target on 127.0.0.1 and runs
``node dist/client.js`` against them. Expected values come from the fixture text (via
``tests/reference.py``) or from the simulator's own exposition, never from the collector.
Needs Node 20+ and npm with access to the npm registry; without them the tests fail (CI has
both: a skipped client test would hide a broken example).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixture_server import FixtureServer
from reference import TGI_REAL, buckets_from_text, histogram_quantile, scalar_from_text

from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.simulator import SimulatorConfig, TgiSimulator

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "typescript"
SETUP_SECONDS = 600.0  # npm ci from an empty cache, generate and build, all together
CLIENT_SECONDS = 30.0  # one run of the client


def _lockfile_installed() -> bool:
    """True when node_modules holds exactly the lockfile's versions (npm ci can be skipped)."""
    hidden = EXAMPLE / "node_modules" / ".package-lock.json"  # npm's record of what it installed
    if not hidden.exists():
        return False
    locked = json.loads((EXAMPLE / "package-lock.json").read_text())["packages"]
    installed = json.loads(hidden.read_text())["packages"]
    # Optional packages are for other platforms (buf's binaries): only this one's is installed.
    missing = [k for k, v in locked.items() if k and not v.get("optional") and k not in installed]
    stale = [k for k, v in installed.items() if locked.get(k, {}).get("version") != v["version"]]
    return not missing and not stale


@pytest.fixture(scope="module")
def client_js() -> Iterator[Path]:
    """``dist/client.js``, built with the README's commands."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("node and npm (Node 20+) are needed to build and run examples/typescript")
    deadline = time.monotonic() + SETUP_SECONDS
    steps = [["npm", "run", "generate"], ["npm", "run", "build"]]
    if not _lockfile_installed():
        steps.insert(0, ["npm", "ci", "--no-audit", "--no-fund"])
    for step in steps:
        try:
            done = subprocess.run(
                step,
                cwd=EXAMPLE,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(step)} did not finish within {SETUP_SECONDS:g} s of set-up")
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    yield EXAMPLE / "dist" / "client.js"


@pytest.fixture
async def address() -> AsyncIterator[str]:
    # Watch intervals down to 0.2 s keep the streaming tests short.
    config = ServerConfig(listen="127.0.0.1:0", grace_seconds=0.2, min_watch_interval_seconds=0.2)
    async with CollectorServer(config) as server:
        yield f"127.0.0.1:{server.port}"


async def start_client(client_js: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "node",
        str(client_js),
        *args,
        cwd=EXAMPLE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    """Exit code, rest of stdout and stderr; fails the test if the client does not exit."""
    try:
        async with asyncio.timeout(CLIENT_SECONDS):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"the client did not exit within {CLIENT_SECONDS:g} s")
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def run_client(client_js: Path, *args: str) -> tuple[int, str, str]:
    return await finish(await start_client(client_js, *args))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def check_watch_lines(lines: list[dict[str, Any]], count: int, instance_id: str) -> list[dict]:
    """Exactly ``count`` numbered messages, a sync among them; returns the snapshot lines."""
    assert [line["seq"] for line in lines] == list(range(1, count + 1))
    assert all(line["rpc"] == "Watch" for line in lines)
    assert {"rpc": "Watch", "seq": 2, "event": "sync"} in lines  # after the one target's first
    snapshots = [line for line in lines if line["event"] == "snapshot"]
    assert len(snapshots) == count - 1
    assert {s["instance_id"] for s in snapshots} == {instance_id}
    assert {s["health"] for s in snapshots} == {"HEALTH_UP"}
    stamps = [datetime.fromisoformat(s["timestamp"]) for s in snapshots]
    assert stamps == sorted(stamps) and stamps[0] < stamps[-1]  # JS dates: millisecond steps
    assert snapshots[0]["request_rate"] is None  # the first snapshot of a stream has no window
    return snapshots


async def test_collect_and_watch_a_real_scrape(
    client_js: Path, address: str, fixture_server: FixtureServer
) -> None:
    fixture_server.route("/metrics", body=TGI_REAL)
    text = TGI_REAL.read_text()
    code, out, err = await run_client(
        client_js, "--server", address, "--target", fixture_server.url("/metrics"),
        "--instance-id", "tgi-a", "--watch-messages", "4", "--interval", "0.2s",
    )  # fmt: skip
    assert code == 0, err
    collect, *watch = json_lines(out)

    assert collect["rpc"] == "Collect"
    assert (collect["instance_id"], collect["health"]) == ("tgi-a", "HEALTH_UP")
    assert collect["error"] is None
    lines = text.splitlines()
    assert collect["samples"] == sum(bool(line) and line[0] != "#" for line in lines) == 1888
    assert collect["families"] == sum(line.startswith("# TYPE ") for line in lines) == 24
    assert collect["success_total"] == scalar_from_text(text, "tgi_request_success")
    assert collect["request_count"] == scalar_from_text(text, "tgi_request_count")
    assert collect["queue_size"] == scalar_from_text(text, "tgi_queue_size")
    assert collect["failure_total"] == 2  # tgi_request_failure{err="validation"}, the only one
    assert math.isclose(
        collect["request_duration_p50"],
        histogram_quantile(0.5, buckets_from_text(text, "tgi_request_duration")),
        rel_tol=1e-12,
    )

    snapshots = check_watch_lines(watch, 4, "tgi-a")
    # The exposition never changes: every window has zero rates and no observations.
    assert [s["request_rate"] for s in snapshots[1:]] == [0, 0]
    assert [s["request_duration_p50"] for s in snapshots[1:]] == [None, None]


async def test_watch_rates_of_the_simulator(client_js: Path, address: str) -> None:
    simulator = TgiSimulator(SimulatorConfig(requests_per_second=40.0, seed=11))
    async with simulator:
        simulator.advance(30.0)  # frozen from here until the Collect answered
        text = simulator.render_metrics()
        process = await start_client(
            client_js, "--server", address, "--target", simulator.url,
            "--watch-messages", "5", "--interval", "0.3s",
        )  # fmt: skip
        assert process.stdout is not None
        try:
            async with asyncio.timeout(CLIENT_SECONDS):
                first = await process.stdout.readline()
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail("no Collect line from the client")
        clock = asyncio.create_task(_follow_wall_clock(simulator))
        try:
            code, out, err = await finish(process)
        finally:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
    assert code == 0, err

    collect = json.loads(first)
    endpoint = f"{simulator.url}/metrics"
    # No --instance-id: the collector names the target by its /metrics URL.
    assert (collect["instance_id"], collect["health"]) == (endpoint, "HEALTH_UP")
    assert collect["success_total"] == scalar_from_text(text, "tgi_request_success")
    assert collect["request_count"] == scalar_from_text(text, "tgi_request_count")
    assert collect["success_total"] > 0

    snapshots = check_watch_lines(json_lines(out), 5, endpoint)
    rates = [s["request_rate"] for s in snapshots[1:]]
    # 40 requests per simulated second, simulated time following the wall clock.
    assert all(rate >= 0 for rate in rates)
    assert 4 < sum(rates) / len(rates) < 400, rates


async def _follow_wall_clock(simulator: TgiSimulator) -> None:
    last = time.monotonic()
    for _ in range(int(CLIENT_SECONDS / 0.05)):  # bounded: the test ends long before
        await asyncio.sleep(0.05)
        now = time.monotonic()
        simulator.advance(now - last)
        last = now


async def test_invalid_target_is_invalid_argument(client_js: Path, address: str) -> None:
    code, out, err = await run_client(
        client_js, "--server", address, "--target", "ftp://127.0.0.1/metrics"
    )
    assert code == 1
    assert out == ""
    assert err.startswith("INVALID_ARGUMENT: target.endpoint"), err


async def test_unreachable_server_is_unavailable(client_js: Path, unused_port: int) -> None:
    code, out, err = await run_client(
        client_js, "--server", f"127.0.0.1:{unused_port}", "--target", "http://127.0.0.1:1/"
    )
    assert code == 1
    assert out == ""
    assert err.startswith("UNAVAILABLE: "), err
