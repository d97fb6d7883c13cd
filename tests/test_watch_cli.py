"""``tgi-collector watch``: the live table's rendering (pure) and the command on real servers."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from google.protobuf import json_format

from tgi_collector import _table
from tgi_collector._table import (
    WatchBoard,
    ansi_frame,
    format_age,
    format_latency,
    render_table,
    run_live,
    snapshot_row,
)
from tgi_collector.cli import _watch_target, main
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.simulator import SimulatorConfig, TgiSimulator
from tgi_collector.v1 import collector_pb2, snapshot_pb2

NOW = 1_700_000_000.0


def _summary(family: str, p50: float, p99: float, **labels: str) -> snapshot_pb2.HistogramSummary:
    return snapshot_pb2.HistogramSummary(
        family=family, labels=labels, count=10, sum=1, p50=p50, p90=p99, p95=p99, p99=p99
    )


def _up(
    instance_id: str = "tgi-a", *, age: float = 2.5, window: bool = True
) -> snapshot_pb2.Snapshot:
    snapshot = snapshot_pb2.Snapshot(
        instance_id=instance_id,
        endpoint=f"http://{instance_id}:80/metrics",
        health=snapshot_pb2.HEALTH_UP,
        request_metrics=snapshot_pb2.RequestMetrics(success_total=100, queue_size=3),
        generation_metrics=snapshot_pb2.GenerationMetrics(batch_current_size=8),
        histograms=[
            _summary("tgi_request_duration", 2.0, 9.0),  # lifetime
            _summary("tgi_request_queue_duration", 0.001, 0.002),
        ],
    )
    snapshot.timestamp.FromNanoseconds(round((NOW - age) * 1e9))
    if window:
        snapshot.window.CopyFrom(
            snapshot_pb2.Window(
                success_rate=12.0,
                failure_rate=0.5,
                request_rate=12.5,
                generated_tokens_rate=1234.56,
                histograms=[
                    _summary("tgi_request_queue_duration", 0.5, 0.9),
                    _summary("tgi_request_duration", 0.0421, 1.5),
                ],
            )
        )
        snapshot.window.duration.FromMilliseconds(1000)
    return snapshot


def _down(instance_id: str = "tgi-b") -> snapshot_pb2.Snapshot:
    snapshot = snapshot_pb2.Snapshot(
        instance_id=instance_id,
        endpoint=f"http://{instance_id}:80/metrics",
        health=snapshot_pb2.HEALTH_DOWN,
        error=snapshot_pb2.ScrapeError(
            kind=snapshot_pb2.ERROR_KIND_CONNECT, message="connection refused"
        ),
    )
    snapshot.timestamp.FromNanoseconds(round((NOW - 0.25) * 1e9))
    return snapshot


# -- pure rendering ---------------------------------------------------------------------------


def test_row_of_a_windowed_snapshot_has_exact_numbers() -> None:
    row = snapshot_row(_up(), now=NOW)
    assert row.cells() == (
        "tgi-a", "UP", "3", "8", "12.50", "1234.6", "4.0%", "42 ms", "1.50 s", "2.5s", "",
    )  # fmt: skip


def test_table_layout_with_a_down_target() -> None:
    text = render_table([_up(), _down()], now=NOW)
    assert text.splitlines() == [
        "target  state  queue  batch  req/s   tok/s  err%    p50     p99   age  note",
        "tgi-a   UP         3      8  12.50  1234.6  4.0%  42 ms  1.50 s  2.5s",
        "tgi-b   DOWN       -      -      -       -     -      -       -  0.2s"
        "  connect: connection refused",
    ]


def test_down_row_names_the_http_status() -> None:
    snapshot = _down()
    snapshot.error.CopyFrom(
        snapshot_pb2.ScrapeError(
            kind=snapshot_pb2.ERROR_KIND_HTTP_STATUS,
            message="Service\nUnavailable",
            http_status=503,
        )
    )
    row = snapshot_row(snapshot, now=NOW)
    assert row.state == "DOWN"
    assert row.note == "http_status 503: Service Unavailable"
    snapshot.error.message = "x" * 200
    assert len(snapshot_row(snapshot, now=NOW).note) == 60


def test_missing_window_falls_back_to_lifetime_latency() -> None:
    row = snapshot_row(_up(window=False), now=NOW)
    assert (row.request_rate, row.token_rate, row.error_rate) == ("-", "-", "-")
    assert (row.p50, row.p99) == ("2.00 s", "9.00 s")  # the lifetime summary
    assert row.note == "lifetime"


def test_window_without_requests_has_no_error_rate_or_latency() -> None:
    snapshot = _up()
    snapshot.window.CopyFrom(
        snapshot_pb2.Window(
            histograms=[snapshot_pb2.HistogramSummary(family="tgi_request_duration")],
            counter_reset=True,
        )
    )
    row = snapshot_row(snapshot, now=NOW)
    assert (row.request_rate, row.token_rate, row.error_rate) == ("0.00", "0.0", "-")
    assert (row.p50, row.p99) == ("-", "-")  # nothing finished in the window
    assert row.note == "counter reset"


def test_labelled_series_are_not_taken_for_the_unlabelled_one() -> None:
    snapshot = _up()
    del snapshot.window.histograms[:]
    snapshot.window.histograms.extend(
        [
            _summary("tgi_request_duration", 0.7, 0.8, route="openai"),
            _summary("tgi_request_duration", 0.1, 0.2),
        ]
    )
    assert snapshot_row(snapshot, now=NOW).p50 == "100 ms"
    del snapshot.window.histograms[1]  # only a labelled series left: it is the one
    assert snapshot_row(snapshot, now=NOW).p50 == "700 ms"


def test_number_formats() -> None:
    assert format_latency(None) == "-"
    assert format_latency(0.0008) == "0.8 ms"
    assert format_latency(0.25) == "250 ms"
    assert format_latency(12.345) == "12.35 s"
    assert [format_age(s) for s in (-1, 0.42, 42, 300, 9000)] == ["0.0s", "0.4s", "42s", "5m", "2h"]
    gauge = snapshot_row(_up(), now=NOW)
    assert gauge.queue == "3"
    snapshot = _up()
    snapshot.request_metrics.queue_size = 2.5
    assert snapshot_row(snapshot, now=NOW).queue == "2.5"


def test_ansi_frame_redraws_in_place() -> None:
    frame = ansi_frame("a\nb", clear=True)
    assert frame == "\x1b[2J\x1b[H" + "a\x1b[K\n" + "b\x1b[K\n" + "\x1b[J"
    assert not ansi_frame("a").startswith("\x1b[2J")


def test_board_tracks_the_stream() -> None:
    board = WatchBoard(title="watch", expected=2, header=["hint"])
    text = board.render(now=NOW)
    assert "(no snapshot yet)" in text and "hint" in text
    assert board.apply(collector_pb2.WatchResponse(snapshot=_down()), now=NOW)
    assert "waiting for targets (1 of 2)" in board.render(now=NOW)
    assert not board.tick_complete
    assert board.apply(collector_pb2.WatchResponse(snapshot=_up(), coalesced=4), now=NOW)
    assert board.tick_complete
    assert not board.apply(collector_pb2.WatchResponse(sync=collector_pb2.SyncMarker()), now=NOW)
    board.apply(collector_pb2.WatchResponse(heartbeat=collector_pb2.Heartbeat()), now=NOW)
    text = board.render(now=NOW)
    lines = text.splitlines()
    assert lines[2:] == [
        "",
        "target  state  queue  batch  req/s   tok/s  err%    p50     p99   age  note",
        "tgi-b   DOWN       -      -      -       -     -      -       -  0.2s"
        "  connect: connection refused",
        "tgi-a   UP         3      8  12.50  1234.6  4.0%  42 ms  1.50 s  2.5s",
        "",
        lines[-1],
    ]
    assert lines[-1].startswith("synced  2 snapshots  4 coalesced (slow reader)  last heartbeat")
    board.note_retry("UNAVAILABLE", "server is shutting down", 0.25)
    assert board.render(now=NOW).splitlines()[-1] == (
        "stream down (UNAVAILABLE: server is shutting down); resubscribing in 0.2 s"
    )
    assert "waiting for targets (2 of 2)" in board.render(now=NOW)  # a new stream syncs again


def test_board_fits_a_short_terminal() -> None:
    board = WatchBoard(title="t", expected=5)
    for name in "abcde":
        board.apply(collector_pb2.WatchResponse(snapshot=_up(name)), now=NOW)
    assert len(board.render(now=NOW).splitlines()) == 10  # title, blank, 6 table lines, 2
    lines = board.render(now=NOW, max_lines=8).splitlines()
    assert len(lines) == 8
    assert [line.split()[0] for line in lines[3:5]] == ["a", "b"]
    assert lines[5] == "... 3 more target(s): enlarge the terminal"


def _stream(
    responses: list[collector_pb2.WatchResponse], closed: list[bool]
) -> AsyncGenerator[collector_pb2.WatchResponse, None]:
    async def generate() -> AsyncGenerator[collector_pb2.WatchResponse, None]:
        try:
            for response in responses:
                yield response
                await asyncio.sleep(0)
            await asyncio.sleep(3600)  # a live stream does not end by itself
        finally:
            closed.append(True)

    return generate()


def _responses() -> list[collector_pb2.WatchResponse]:
    return [
        collector_pb2.WatchResponse(snapshot=_up("a", window=False)),
        collector_pb2.WatchResponse(snapshot=_up("b", window=False)),
        collector_pb2.WatchResponse(sync=collector_pb2.SyncMarker()),
        collector_pb2.WatchResponse(snapshot=_up("a")),
        collector_pb2.WatchResponse(snapshot=_up("b")),
    ]


async def test_run_live_json_lines_stop_after_count() -> None:
    out, closed = io.StringIO(), list[bool]()
    async with asyncio.timeout(5):
        seen = await run_live(
            _stream(_responses(), closed), WatchBoard(), out, mode="json", count=3
        )
    assert seen == 3 and closed == [True]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [next(iter(line)) for line in lines] == ["snapshot", "snapshot", "sync", "snapshot"]
    assert lines[3]["snapshot"]["window"]["request_rate"] == 12.5  # proto field names
    assert lines[0]["snapshot"]["health"] == "HEALTH_UP"


async def test_run_live_blocks_print_one_table_per_tick() -> None:
    out, closed = io.StringIO(), list[bool]()
    board = WatchBoard(title="t", expected=2)
    async with asyncio.timeout(5):
        seen = await run_live(
            _stream(_responses(), closed), board, out, mode="blocks", count=4, clock=lambda: NOW
        )
    assert seen == 4 and closed == [True]
    blocks = out.getvalue().split("\n\nt  ")  # each block starts with the title
    # Both targets of a tick in one block; the two ticks make two blocks.
    assert len(blocks) == 2, out.getvalue()
    assert all("\na " in block and "\nb " in block for block in blocks)
    assert "lifetime" in blocks[0] and "lifetime" not in blocks[1]
    assert "\x1b" not in out.getvalue()


async def test_run_live_blocks_flush_a_silent_target_after_a_while() -> None:
    """With one of two targets silent, the other's update still shows, after flush_after."""
    out, closed = io.StringIO(), list[bool]()
    responses = [collector_pb2.WatchResponse(snapshot=_up("a"))]
    task = asyncio.create_task(
        run_live(
            _stream(responses, closed), WatchBoard(expected=2), out, mode="blocks",
            flush_after=0.1,
        )
    )  # fmt: skip
    async with asyncio.timeout(5):
        for _ in itertools.count():
            if "\na " in out.getvalue():  # a's row printed although b never reported
                break
            await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]


async def test_run_live_tty_redraws_in_place_and_restores_the_cursor() -> None:
    out, closed = io.StringIO(), list[bool]()
    async with asyncio.timeout(5):
        await run_live(_stream(_responses(), closed), WatchBoard(), out, mode="tty", count=4)
    text = out.getvalue()
    assert text.startswith(_table.HIDE_CURSOR + "\x1b[2J\x1b[H")
    assert text.endswith(_table.SHOW_CURSOR)
    assert text.count("\x1b[H") >= 2 and text.count("\x1b[2J") == 1
    assert closed == [True]


async def test_run_live_propagates_the_stream_error() -> None:
    async def failing() -> AsyncGenerator[collector_pb2.WatchResponse, None]:
        yield collector_pb2.WatchResponse(snapshot=_up())
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        await run_live(failing(), WatchBoard(), io.StringIO(), mode="blocks")


def test_id_equals_url_targets() -> None:
    assert _watch_target("pod-1=http://10.0.0.1:80/metrics") == (
        "pod-1",
        "http://10.0.0.1:80/metrics",
    )
    assert _watch_target("http://h:80/metrics?a=b") == ("", "http://h:80/metrics?a=b")
    assert _watch_target("http://h:80/metrics") == ("", "http://h:80/metrics")


def test_watch_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["watch", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--server", "--interval", "--json", "--heartbeat", "--updates-only",
                 "--suppress-unchanged", "--count"):  # fmt: skip
        assert flag in out


# -- the command against a real collector -----------------------------------------------------


@pytest.fixture
async def collector() -> AsyncIterator[CollectorServer]:
    config = ServerConfig(listen="127.0.0.1:0", grace_seconds=0.5, min_watch_interval_seconds=0.1)
    async with CollectorServer(config) as server:
        yield server


@pytest.fixture
async def simulator() -> AsyncIterator[TgiSimulator]:
    async with TgiSimulator(SimulatorConfig(seed=3)) as sim:
        sim.advance(10.0)
        yield sim


async def test_watch_json_lines_against_a_real_server(
    collector: CollectorServer, simulator: TgiSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "watch", "--server", f"127.0.0.1:{collector.port}", f"sim={simulator.url}/metrics",
        "--interval", "0.2", "--json", "--count", "3",
    ]  # fmt: skip
    async with asyncio.timeout(10):
        code = await asyncio.to_thread(main, argv)
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    messages = [json.loads(line) for line in lines]  # every line is one JSON object
    snapshots = [m["snapshot"] for m in messages if "snapshot" in m]
    assert len(snapshots) == 3
    assert {"sync": {}} in messages
    assert all(s["instance_id"] == "sim" and s["health"] == "HEALTH_UP" for s in snapshots)
    assert "window" not in snapshots[0]  # lifetime first
    assert all("window" in s for s in snapshots[1:])
    assert "raw_metrics" not in snapshots[0]
    # Each line is the protobuf JSON mapping of a WatchResponse.
    parsed = json_format.Parse(lines[0], collector_pb2.WatchResponse())
    assert parsed.snapshot.instance_id == "sim"


async def test_watch_table_blocks_against_a_real_server(
    collector: CollectorServer, simulator: TgiSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "watch", "--server", f"127.0.0.1:{collector.port}", f"sim={simulator.url}/metrics",
        "--interval", "0.2", "--count", "2",
    ]  # fmt: skip
    async with asyncio.timeout(10):
        code = await asyncio.to_thread(main, argv)
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"tgi-collector watch  127.0.0.1:{collector.port}  interval 0.2 s")
    rows = [line for line in out.splitlines() if line.startswith("sim ")]
    assert len(rows) == 2
    assert all(row.split()[1] == "UP" for row in rows)
    assert rows[0].endswith("lifetime")
    assert "\x1b" not in out  # not a terminal: no escapes


async def test_watch_rejected_request_exits_2(
    collector: CollectorServer, simulator: TgiSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "watch", "--server", f"127.0.0.1:{collector.port}", f"{simulator.url}/metrics",
        "--interval", "0.01", "--count", "1",
    ]  # fmt: skip
    async with asyncio.timeout(10):
        code = await asyncio.to_thread(main, argv)
    assert code == 2
    assert "watch: INVALID_ARGUMENT: interval" in capsys.readouterr().err


async def test_watch_a_down_target_shows_a_down_row(
    collector: CollectorServer, unused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "watch", "--server", f"127.0.0.1:{collector.port}",
        f"gone=http://127.0.0.1:{unused_port}/metrics", "--interval", "0.2", "--count", "1",
    ]  # fmt: skip
    async with asyncio.timeout(10):
        code = await asyncio.to_thread(main, argv)
    assert code == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("gone "))
    assert row.split()[1] == "DOWN"
    assert "connect:" in row
