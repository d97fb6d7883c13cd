"""Tests of the TGI simulator: wire fidelity against a real TGI 3.3 scrape, workload consistency.

Fidelity is judged by an independent parser (prometheus_client) and the raw real scrape, never
by the simulator's own code; servers run on 127.0.0.1 port 0 and are reached over sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tgi_collector.simulator import SimulatorConfig, TgiSimulator, _rust_float, run_simulator

REAL = Path(__file__).parent / "data" / "tgi" / "tgi-3.3-real.prom"
CLOSE = b"GET /info HTTP/1.1\r\nConnection: close\r\n\r\n"
BUSY = SimulatorConfig(seed=7, failure_ratio=0.2)  # failures often enough to hit every `err`
# Label values TGI can emit (TGI_METRICS.md); anything else would be an invention.
ALLOWED_LABELS = {
    "err": {"validation", "overloaded", "template", "incomplete", "dropped", "generation"},
    "method": {"prefill", "decode"},
    "reason": {"backpressure", "wait_exceeded", "chunking"},
}
Series = tuple[str, frozenset[tuple[str, str]]]


def kinds(text: str) -> dict[str, tuple[str, str]]:
    """Type and HELP text (empty if none) of each family, parsed by prometheus_client."""
    return {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text)}


def samples(text: str) -> dict[Series, float]:
    """Every sample of ``text`` keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str | dict[Series, float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent: TGI's "absent means zero")."""
    parsed = samples(text) if isinstance(text, str) else text
    return parsed.get((name, frozenset(labels.items())), 0.0)


def help_lines(text: str) -> dict[str, str]:
    """HELP text per family, straight from the raw lines."""
    return dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE))


@functools.cache
def busy_metrics(seconds: float = 120.0, config: SimulatorConfig = BUSY) -> str:
    """The exposition after ``seconds`` of workload (cached: the simulation is deterministic)."""
    simulator = TgiSimulator(config)
    simulator.advance(seconds)
    return simulator.render_metrics()


@pytest.fixture
async def simulator() -> AsyncIterator[TgiSimulator]:
    async with TgiSimulator(SimulatorConfig(seed=3)) as sim:
        yield sim


async def exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send ``requests`` one after the other on one connection; the answers, framed by
    Content-Length (no body read for HEAD), then whatever comes until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for request in requests:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        length = 0 if request.startswith(b"HEAD") else int(re.findall(rb"length: (\d+)", head)[0])
        answers.append(head + await reader.readexactly(length))
    answers.append(await asyncio.wait_for(reader.read(), 2) if requests[-1] == CLOSE else b"")
    writer.close()
    return answers


# -- fidelity against the real scrape -------------------------------------------------------


def test_structure_matches_real_scrape() -> None:
    real_text, sim_text = REAL.read_text(), busy_metrics()
    real, sim = kinds(real_text), kinds(sim_text)
    # Same families, types and HELP; the one extra is a family the real server had not hit.
    assert {name: sim[name] for name in real} == real
    assert set(sim) - set(real) <= {"tgi_batch_inference_failure"}
    # HELP lines exactly where the real scrape has them (none for the undescribed three).
    real_help, sim_help = help_lines(real_text), help_lines(sim_text)
    assert sim_help == real_help and len(real_help) == len(real) - 3
    # Every real series exists in the simulator; label values stay within TGI's vocabulary.
    real_series = {k for k in samples(real_text) if k[0].endswith(("_total", "_sum", "_count"))}
    sim_samples = samples(sim_text)
    assert real_series <= set(sim_samples)
    for _, labels in sim_samples:
        for key, val in labels:
            if key not in ("le", "quantile"):
                assert val in ALLOWED_LABELS[key], (key, val)


def test_bucket_bounds_and_quantiles_are_the_real_strings() -> None:
    def bounds(text: str) -> dict[Series, list[str]]:
        found: dict[Series, list[str]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if "le" in s.labels:
                    other = frozenset((k, v) for k, v in s.labels.items() if k != "le")
                    found.setdefault((s.name, other), []).append(s.labels["le"])
                if "quantile" in s.labels:
                    found.setdefault((s.name, frozenset()), []).append(s.labels["quantile"])
        return found

    real, sim = bounds(REAL.read_text()), bounds(busy_metrics())
    assert real  # 24 histogram series + the summary
    for series, les in real.items():
        assert sim[series] == les, series
    assert sim[("tgi_request_skipped_tokens", frozenset())] == [
        "0", "0.5", "0.9", "0.95", "0.99", "0.999", "1"
    ]  # fmt: skip


def test_token_bounds_follow_the_configured_limits() -> None:
    text = busy_metrics(30, SimulatorConfig(max_input_tokens=1000, max_total_tokens=3000, seed=1))
    for family, limit in [
        ("tgi_request_input_length", 1000),
        ("tgi_request_max_new_tokens", 3000),
        ("tgi_request_generated_tokens", 3000),
    ]:
        les = re.findall(rf'^{family}_bucket{{le="([^"]+)"}}', text, re.MULTILINE)
        assert les[-1] == "+Inf" and len(les) == 101
        for k, le in enumerate(les[:-1], start=1):
            assert float(le) == limit / 100 * k and "e" not in le


def test_numbers_print_like_rust() -> None:
    text = busy_metrics()
    kinds = {f.name: f.type for f in text_string_to_metric_families(text)}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, number = line.rsplit(" ", 1)
        assert "e" not in number.lower() and not number.endswith(".0"), line
        base = name.split("{")[0]
        family = re.sub(r"_(bucket|sum|count)$", "", base)
        if kinds.get(family) == "counter" or base.endswith(("_bucket", "_count")):
            assert number.isdigit(), line


def test_rust_float_format() -> None:
    # The private formatter, checked against what Rust's `{}` prints for these f64 values.
    assert _rust_float(0.0001 * 1.5) == "0.00015000000000000001"
    assert _rust_float(1e-7) == "0.0000001"
    assert _rust_float(0.1 + 0.2) == "0.30000000000000004"
    assert _rust_float(128.0) == "128"
    assert _rust_float(1e16) == "10000000000000000"
    assert _rust_float(-2.5) == "-2.5"


# -- workload consistency -------------------------------------------------------------------


def test_counters_add_up() -> None:
    got = samples(busy_metrics())
    success = value(got, "tgi_request_success_total")
    failures = {e: value(got, "tgi_request_failure_total", err=e) for e in ALLOWED_LABELS["err"]}
    assert success > 300 and all(failures.values()), failures
    # Requests that passed validation: done, failed after validation, or still in flight.
    validated = value(got, "tgi_request_input_length_count")
    late = failures["generation"] + failures["dropped"] + failures["incomplete"]
    in_flight = validated - success - late
    assert 0 <= in_flight <= 128
    assert value(got, "tgi_request_count_total") == success + sum(failures.values()) + in_flight
    for family in ("duration", "validation_duration", "queue_duration", "inference_duration"):
        assert value(got, f"tgi_request_{family}_count") == success
    assert value(got, "tgi_request_mean_time_per_token_duration_count") == success
    assert value(got, "tgi_request_generated_tokens_count") == success
    assert value(got, "tgi_request_max_new_tokens_count") == validated
    # Every token sent is one skipped-tokens observation, finished requests' tokens included.
    generated = value(got, "tgi_request_generated_tokens_sum")
    assert value(got, "tgi_request_skipped_tokens_count") >= generated > success
    # Request duration is validation + queue + inference.
    parts = sum(
        value(got, f"tgi_request_{p}_duration_sum") for p in ("validation", "queue", "inference")
    )
    assert math.isclose(value(got, "tgi_request_duration_sum"), parts, rel_tol=1e-9)
    assert value(got, "tgi_request_mean_time_per_token_duration_sum") < parts
    # Each batch popped from the queue is one prefill; its size counts the requests it took.
    prefills = value(got, "tgi_batch_inference_count_total", method="prefill")
    assert value(got, "tgi_batch_next_size_count") == prefills
    queued = value(got, "tgi_queue_size")
    assert value(got, "tgi_batch_next_size_sum") == validated - queued
    for method in ALLOWED_LABELS["method"]:
        calls = value(got, "tgi_batch_inference_count_total", method=method)
        ok = value(got, "tgi_batch_inference_success_total", method=method)
        failed = value(got, "tgi_batch_inference_failure_total", method=method)
        assert calls - ok - failed in (0, 1)  # at most one call is running
        for timing in ("forward", "decode", "filter", "inference"):
            assert value(got, f"tgi_batch_{timing}_duration_count", method=method) == ok
    decodes = value(got, "tgi_batch_inference_count_total", method="decode")
    assert prefills < decodes < generated
    concat = value(got, "tgi_batch_concat_total", reason="chunking")
    assert 0 < value(got, "tgi_batch_concat_duration_count", method="decode") <= concat


def test_histograms_are_cumulative() -> None:
    text = busy_metrics()
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        series: dict[frozenset[tuple[str, str]], list[float]] = {}
        counts = {}
        for s in family.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if k != "le")
            if s.name.endswith("_bucket"):
                series.setdefault(labels, []).append(s.value)
            elif s.name.endswith("_count"):
                counts[labels] = s.value
        for labels, buckets in series.items():
            assert buckets == sorted(buckets), family.name
            assert buckets[-1] == counts[labels], family.name


def test_counters_never_decrease() -> None:
    simulator = TgiSimulator(BUSY)
    previous: dict[Series, float] = {}
    for _ in range(6):
        simulator.advance(15)
        current = {
            k: v
            for k, v in samples(simulator.render_metrics()).items()
            if k[0].endswith(("_total", "_bucket", "_count", "_sum"))
        }
        assert set(previous) <= set(current)  # a series never disappears
        for key, old in previous.items():
            assert current[key] >= old, key
        previous = current
    assert value(simulator.render_metrics(), "tgi_request_count_total") > 300


def test_gauges_rise_and_fall() -> None:
    def track(config: SimulatorConfig, gauge: str) -> list[float]:
        simulator = TgiSimulator(config)
        seen = []
        for _ in range(100):
            simulator.advance(0.25)
            found = re.search(rf"^{gauge} (\S+)$", simulator.render_metrics(), re.MULTILINE)
            seen.append(float(found[1]) if found else 0.0)
        return seen

    batch = track(SimulatorConfig(requests_per_second=2, seed=5), "tgi_batch_current_size")
    assert max(batch) >= 2 and batch.count(0) > 5  # idle between bursts at 2 requests/s
    # Overloaded (more requests than the token budget admits): the queue builds up and moves.
    queue = track(SimulatorConfig(requests_per_second=60, seed=5), "tgi_queue_size")
    assert max(queue) > 20
    assert any(b < a for a, b in itertools.pairwise(queue))


def test_deterministic_and_independent_of_step_size() -> None:
    whole, pieces = TgiSimulator(BUSY), TgiSimulator(BUSY)
    whole.advance(30)
    for _ in range(30):
        pieces.advance(1)
    assert samples(whole.render_metrics()) == samples(pieces.render_metrics())


def test_config_and_advance_are_validated() -> None:
    for bad in (
        lambda: SimulatorConfig(max_input_tokens=512, max_total_tokens=512),
        lambda: SimulatorConfig(failure_ratio=1.5),
        lambda: SimulatorConfig(requests_per_second=-1),
        lambda: TgiSimulator().advance(-1),
    ):
        with pytest.raises(ValueError):
            bad()


# -- the HTTP server ------------------------------------------------------------------------


async def test_empty_body_before_first_request(simulator: TgiSimulator) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(simulator.url + "/metrics")
        assert response.status_code == 200 and response.content == b""
        simulator.advance(0.001)  # the first request has not arrived yet
        assert (await client.get(simulator.url + "/metrics")).content == b""
        simulator.advance(5)
        assert (await client.get(simulator.url + "/metrics")).text.startswith("#")


async def test_scrape_headers_and_order(simulator: TgiSimulator) -> None:
    simulator.advance(60)
    async with httpx.AsyncClient() as client:
        first = await client.get(simulator.url + "/metrics")
        second = await client.get(simulator.url + "/metrics")
    assert first.headers["content-type"] == "text/plain; charset=utf-8"
    assert int(first.headers["content-length"]) == len(first.content)
    assert first.text.endswith("\n\n") and "\n\n\n" not in first.text
    assert list(kinds(first.text)) != list(kinds(second.text))  # dicts keep the wire order
    assert sorted(kinds(first.text)) == sorted(kinds(second.text))
    assert samples(first.text) == samples(second.text)  # no time passed in between


async def test_info_document(simulator: TgiSimulator) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(simulator.url + "/info")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    info = response.json()
    assert info == simulator.info()
    assert info["model_id"] == "HuggingFaceH4/zephyr-7b-beta" and info["version"] == "3.3.4"
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (511, 512)
    assert info["router"] == "text-generation-router" and info["docker_label"].startswith("sha-")
    assert all(re.fullmatch(r"[0-9a-f]{40}", info[k]) for k in ("model_sha", "sha"))
    assert info["model_pipeline_tag"] == "text-generation"
    limits = ["max_concurrent_requests", "max_best_of", "max_stop_sequences"]
    limits += ["validation_workers", "max_client_batch_size"]
    assert all(isinstance(info[k], int) and info[k] > 0 for k in limits)


async def test_unknown_path_and_method(simulator: TgiSimulator) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(simulator.url + "/nope")).status_code == 404
        assert (await client.get(simulator.url + "/metrics/x")).status_code == 404
        assert (await client.post(simulator.url + "/metrics", content=b"x")).status_code == 405
        assert (await client.get(simulator.url + "/health")).status_code == 200
        assert (await client.get(simulator.url + "/metrics?x=1")).status_code == 200


async def test_keep_alive_head_and_scrape_count(simulator: TgiSimulator) -> None:
    simulator.advance(10)
    get, head = b"GET /metrics HTTP/1.1\r\n\r\n", b"HEAD /metrics HTTP/1.1\r\n\r\n"
    # Four requests on one connection; only the last one asks to close it.
    first, second, headed, info, after_close = await exchange(simulator.port, get, get, head, CLOSE)
    for answer in (first, second, headed):
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" not in answer
    assert b"\r\n\r\n# " in first and b"\r\n\r\n# " in second
    assert headed.endswith(b"\r\n\r\n") and b"content-length: 0" not in headed
    assert b"connection: close" in info and after_close == b""  # then EOF
    assert simulator.scrape_count == 2  # GETs of /metrics only


async def test_http10_and_bad_requests(simulator: TgiSimulator) -> None:
    for request, status in [
        (b"GET /info HTTP/1.0\r\n\r\n", b"200"),  # HTTP/1.0 closes unless asked not to
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", b"400"),
    ]:
        reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 2)  # read() returns at EOF: closed
        assert answer.startswith(b"HTTP/1.1 " + status) and b"connection: close" in answer
        writer.close()


async def test_stop_closes_idle_connections() -> None:
    simulator = TgiSimulator()
    await simulator.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    writer.write(b"GET /info HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    await asyncio.wait_for(simulator.stop(), 2)  # the idle keep-alive connection must not block
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", simulator.port)
    writer.close()


async def test_run_simulator_follows_the_wall_clock(unused_port: int) -> None:
    config = SimulatorConfig(requests_per_second=200, seed=11)
    task = asyncio.create_task(run_simulator(config, "127.0.0.1", unused_port))
    url = f"http://127.0.0.1:{unused_port}/metrics"
    try:
        async with httpx.AsyncClient() as client:
            text = ""
            for _ in range(60):
                await asyncio.sleep(0.05)
                with contextlib.suppress(httpx.ConnectError):
                    text = (await client.get(url)).text
                if value(text, "tgi_request_success_total") > 0:
                    break
            assert value(text, "tgi_request_count_total") > 0
            later = (await client.get(url)).text
            assert value(later, "tgi_request_count_total") >= value(text, "tgi_request_count_total")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", unused_port)
