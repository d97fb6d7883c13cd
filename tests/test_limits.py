"""Server limits over real sockets: concurrent Collects, Watch streams per peer, streams per
connection, ping floods, request size; and the validation of the limits themselves."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from fixture_server import FixtureServer
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polling import wait_until
from reference import SEED_SAMPLE

from tgi_collector._limits import (
    COLLECT_LIMIT_MESSAGE,
    MAX_PING_STRIKES,
    ConcurrencyLimit,
    PerKeyLimit,
    RateLimitedLog,
    peer_host,
    server_options,
)
from tgi_collector.errors import CapacityError
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _config(**overrides: Any) -> ServerConfig:
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "grace_seconds": 0.1,
        "min_watch_interval_seconds": 0.1,
    }
    settings.update(overrides)
    return ServerConfig(**settings)


def _collect(endpoint: str) -> collector_pb2.CollectRequest:
    return collector_pb2.CollectRequest(
        target=collector_pb2.Target(endpoint=endpoint),
        options=collector_pb2.ScrapeOptions(omit_raw_metrics=True, skip_info=True),
    )


def _watch(endpoint: str) -> collector_pb2.WatchRequest:
    interval = duration_pb2.Duration()
    interval.FromMilliseconds(200)
    return collector_pb2.WatchRequest(
        targets=[collector_pb2.Target(endpoint=endpoint)],
        interval=interval,
        options=collector_pb2.ScrapeOptions(omit_raw_metrics=True, skip_info=True),
    )


async def _eventually(attempt: Callable[[], Awaitable[object]], timeout: float = 5.0) -> None:
    """Retry ``attempt`` while it fails RESOURCE_EXHAUSTED (a slot is released asynchronously)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await attempt()
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != RESOURCE_EXHAUSTED:
                    raise
            await asyncio.sleep(0.05)


@pytest.fixture
async def target(fixture_server: FixtureServer) -> FixtureServer:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    fixture_server.route("/hang", behaviour="hang", duration=20)
    return fixture_server


# -- max_concurrent_collects ---------------------------------------------------------------------


async def test_collects_past_the_limit_are_refused_at_once(
    target: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        CollectorServer(_config(max_concurrent_collects=2)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        hanging = [stub.Collect(_collect(target.url("/hang")), timeout=20) for _ in range(2)]
        tasks = [asyncio.ensure_future(call) for call in hanging]
        await wait_until(lambda: target.hits("/hang") == 2, timeout=5)

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_collect(target.url("/metrics")), timeout=10)
        assert raised.value.code() == RESOURCE_EXHAUSTED
        assert raised.value.details() == COLLECT_LIMIT_MESSAGE
        assert time.monotonic() - started < 1.0  # refused, not queued
        assert f"refused: {COLLECT_LIMIT_MESSAGE} (max_concurrent_collects = 2)" in caplog.text

        # Watch and health are not Collect calls: they still work.
        watch = stub.Watch(_watch(target.url("/metrics")))
        assert (await asyncio.wait_for(watch.read(), 5)).HasField("snapshot")
        watch.cancel()
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1

        # A finished (here: cancelled) call frees its slot.
        hanging[0].cancel()
        await _eventually(lambda: stub.Collect(_collect(target.url("/metrics")), timeout=10))
        hanging[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- max_subscribers_per_peer --------------------------------------------------------------------


async def test_watch_streams_per_client_address(
    target: FixtureServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with CollectorServer(_config(max_subscribers_per_peer=2)) as server:
        address = f"127.0.0.1:{server.port}"
        # Separate connections (a local subchannel pool each: channels with equal arguments
        # would share one): the limit is per client address, not per connection.
        channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(4)
        ]
        try:
            stubs = [collector_pb2_grpc.CollectorServiceStub(c) for c in channels]
            request = _watch(target.url("/metrics"))
            open_calls = [stubs[0].Watch(request), stubs[1].Watch(request)]
            for call in open_calls:
                assert (await asyncio.wait_for(call.read(), 5)).HasField("snapshot")

            refused = stubs[2].Watch(request)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(refused.read(), 5)
            assert raised.value.code() == RESOURCE_EXHAUSTED
            assert raised.value.details() == "at most 2 Watch streams per client address"
            assert (
                "refused: client 127.0.0.1 already has 2 Watch streams"
                " (max_subscribers_per_peer = 2)"
            ) in caplog.text

            # A bad request is still a bad request, whatever the count.
            invalid = stubs[2].Watch(collector_pb2.WatchRequest())
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(invalid.read(), 5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            open_calls[0].cancel()
            replacement: list[Any] = []

            async def subscribe() -> None:
                call = stubs[3].Watch(request)
                replacement.append(call)
                await asyncio.wait_for(call.read(), 5)

            await _eventually(subscribe)
            assert server.hub.subscriber_count == 2
            for call in (open_calls[1], *replacement):
                call.cancel()
        finally:
            for channel in channels:
                await channel.close()


def test_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), every=10.0, clock=lambda: now[0])
    for second in (0.0, 1.0, 2.0, 9.9, 10.0, 25.0):
        now[0] = 100.0 + second
        log.warning("refused %s", second)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0.0",
        "refused 10.0 (and 3 more since the last such line)",
        "refused 25.0",
    ]


def test_peer_host() -> None:
    assert peer_host("ipv4:127.0.0.1:54321") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:54321") == "::1"
    assert peer_host("ipv6:%5B::1%5D:54321") == "::1"
    assert peer_host("ipv6:%5Bfe80::1%25eth0%5D:1") == "fe80::1%eth0"
    assert peer_host("unix:/tmp/sock") == "unix:/tmp/sock"
    assert peer_host("") == ""


def test_per_key_limit_forgets_released_keys() -> None:
    limit = PerKeyLimit(1, "streams", setting="s")
    with limit.hold("a"), limit.hold("b"):
        assert len(limit) == 2
        with (
            pytest.raises(CapacityError, match="at most 1 streams per client address"),
            limit.hold("a"),
        ):
            pass
        assert limit.count("a") == 1
    assert len(limit) == 0
    concurrency = ConcurrencyLimit(1, "busy", setting="c")
    with concurrency.hold():
        with pytest.raises(CapacityError, match="busy"), concurrency.hold():
            pass
        assert concurrency.active == 1
    assert concurrency.active == 0


# -- max_concurrent_streams_per_connection ---------------------------------------------------------


async def test_streams_per_connection_wait_for_a_free_stream(target: FixtureServer) -> None:
    async with (
        CollectorServer(_config(max_concurrent_streams_per_connection=2)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        # Its own subchannel pool: channels with equal arguments would share one connection.
        grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as other,
    ):
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        request = _watch(target.url("/metrics"))
        first, second = stub.Watch(request), stub.Watch(request)
        for call in (first, second):
            assert (await asyncio.wait_for(call.read(), 5)).HasField("snapshot")
        # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: the third stream on this connection waits.
        third = stub.Watch(request)
        third_read = asyncio.ensure_future(third.read())
        done, _ = await asyncio.wait([third_read], timeout=1.0)
        assert not done
        # Another connection is not affected.
        elsewhere = collector_pb2_grpc.CollectorServiceStub(other).Watch(request)
        assert (await asyncio.wait_for(elsewhere.read(), 5)).HasField("snapshot")
        # A stream ends: the waiting one starts.
        first.cancel()
        assert (await asyncio.wait_for(third_read, 5)).HasField("snapshot")
        for call in (second, third, elsewhere):
            call.cancel()


# -- keepalive enforcement -----------------------------------------------------------------------

_PING_FLOOD = [
    ("grpc.keepalive_time_ms", 100),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


async def _held_stream_outcome(address: str, seconds: float) -> grpc.aio.AioRpcError | None:
    """Hold a quiet health Watch on a ping-flooding channel; its error, or None if it lived."""
    async with grpc.aio.insecure_channel(address, options=_PING_FLOOD) as flooder:
        stream = health_pb2_grpc.HealthStub(flooder).Watch(health_pb2.HealthCheckRequest())
        assert (await stream.read()).status == health_pb2.HealthCheckResponse.SERVING
        try:
            # Health sends nothing more: every ping of the flooder is a ping without data.
            await asyncio.wait_for(stream.read(), seconds)
        except grpc.aio.AioRpcError as exc:
            return exc
        except TimeoutError:
            stream.cancel()
            return None
        raise AssertionError("the health stream sent a second message")


async def test_ping_flood_is_cut_off_while_others_keep_working() -> None:
    async with (
        CollectorServer(_config(keepalive_min_ping_interval_seconds=10.0)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as polite,
    ):
        address = f"127.0.0.1:{server.port}"
        started = time.monotonic()
        error = await _held_stream_outcome(address, 9.0)
        assert error is not None, "the ping flood was not cut off within 9 s"
        # The server sent GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings"): the call is UNAVAILABLE.
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "ping" in (error.details() or "").lower()
        assert time.monotonic() - started < 9.0
        # A well-behaved client on another connection was never affected.
        status = await health_pb2_grpc.HealthStub(polite).Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_ping_interval_setting_is_what_the_server_enforces() -> None:
    # The same client against a server allowing pings every 50 ms: nothing is cut off.
    async with CollectorServer(_config(keepalive_min_ping_interval_seconds=0.05)) as server:
        assert await _held_stream_outcome(f"127.0.0.1:{server.port}", 4.0) is None


def test_server_options_carry_the_limits() -> None:
    options = dict(
        server_options(
            _config(
                max_receive_bytes=2048,
                max_send_bytes=4096,
                max_concurrent_streams_per_connection=7,
                keepalive_min_ping_interval_seconds=2.5,
            )
        )
    )
    assert options["grpc.max_receive_message_length"] == 2048
    assert options["grpc.max_send_message_length"] == 4096
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2500
    assert options["grpc.http2.max_ping_strikes"] == MAX_PING_STRIKES == 2
    assert options["grpc.keepalive_permit_without_calls"] == 0
    defaults = dict(server_options(ServerConfig()))
    assert defaults["grpc.max_concurrent_streams"] == 1_000
    assert defaults["grpc.http2.min_ping_interval_without_data_ms"] == 10_000


# -- max_receive_bytes ---------------------------------------------------------------------------


async def test_oversize_watch_request_is_resource_exhausted() -> None:
    async with (
        CollectorServer(_config(max_receive_bytes=1024)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        call = stub.Watch(_watch("http://127.0.0.1/" + "a" * 4096))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(call.read(), 5)
        assert raised.value.code() == RESOURCE_EXHAUSTED
        assert server.hub.subscriber_count == 0


# -- validation of the limits --------------------------------------------------------------------

_INT_LIMITS = (
    "max_receive_bytes",
    "max_send_bytes",
    "max_concurrent_collects",
    "max_subscribers_per_peer",
    "max_concurrent_streams_per_connection",
    "max_subscribers",
    "max_targets_per_watch",
)
_SECONDS = (
    "keepalive_min_ping_interval_seconds",
    "stall_timeout_seconds",
    "min_watch_interval_seconds",
    "default_watch_interval_seconds",
    "max_watch_interval_seconds",
)


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field in _INT_LIMITS for value in (0, -1)]
    + [(field, value) for field in _INT_LIMITS[:2] for value in (2**31, True, 1.5)]
    + [("max_concurrent_streams_per_connection", 2**31)]
    + [(field, value) for field in _SECONDS for value in (0, -1.0, math.nan, math.inf)]
    + [("grace_seconds", -0.1), ("grace_seconds", math.nan)]
    + [("keepalive_min_ping_interval_seconds", 3e6)],
)
def test_out_of_range_limits_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field} must"):
        CollectorServer(ServerConfig(**{field: value}))  # type: ignore[arg-type]


def test_watch_intervals_must_be_ordered() -> None:
    with pytest.raises(ValueError, match=r"^min_watch_interval_seconds must not exceed"):
        CollectorServer(ServerConfig(min_watch_interval_seconds=10, max_watch_interval_seconds=5))
    with pytest.raises(ValueError, match=r"^default_watch_interval_seconds must be between"):
        CollectorServer(ServerConfig(default_watch_interval_seconds=0.5))


def test_zero_grace_and_defaults_are_valid() -> None:
    ServerConfig(grace_seconds=0).check()
    ServerConfig().check()
