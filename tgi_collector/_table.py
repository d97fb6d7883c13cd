"""The live terminal table of ``tgi-collector watch`` and ``tgi-collector demo``.

Two halves. The top is pure: protobuf snapshots in, text out (:func:`snapshot_row`,
:func:`render_table`, :class:`WatchBoard`), so every number on screen is unit-testable. The
bottom, :func:`run_live`, drives a terminal from a stream of ``WatchResponse`` messages: a
refreshing table redrawn in place with ANSI escapes on a TTY, one table block per update on a
pipe, or one JSON object per message (JSON lines).

Columns per target: up/down, queue, running batch, requests/s, generated tokens/s, error rate
(failures / requests over the window), p50 and p99 of the end-to-end request latency
(``tgi_request_duration``) over the window, and the age of the snapshot. A target's first
snapshot of a stream has no window: its rates show ``-`` and its latencies are lifetime ones
(the note column says ``lifetime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TextIO

import grpc
from google.protobuf import json_format

from tgi_collector.v1 import collector_pb2, snapshot_pb2

__all__ = [
    "COLUMNS",
    "HIDE_CURSOR",
    "LATENCY_FAMILY",
    "SHOW_CURSOR",
    "Mode",
    "Row",
    "WatchBoard",
    "ansi_frame",
    "format_age",
    "format_latency",
    "render_rows",
    "render_table",
    "request_latency",
    "response_json",
    "retry_reporter",
    "run_live",
    "snapshot_row",
    "terminal_mode",
]

#: The histogram whose quantiles fill the p50 and p99 columns (end-to-end request latency).
LATENCY_FAMILY = "tgi_request_duration"

#: Column headings and alignment (``<`` left, ``>`` right), in display order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("target", "<"),
    ("state", "<"),
    ("queue", ">"),
    ("batch", ">"),
    ("req/s", ">"),
    ("tok/s", ">"),
    ("err%", ">"),
    ("p50", ">"),
    ("p99", ">"),
    ("age", ">"),
    ("note", "<"),
)

_MISSING = "-"
_NOTE_WIDTH = 60

# ANSI: cursor home, erase to end of line, erase below, clear screen, hide/show the cursor.
_HOME, _EOL, _EOS, _CLEAR = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"

Mode = Literal["tty", "blocks", "json"]


@dataclass(frozen=True, slots=True)
class Row:
    """One target's line of the table, every cell already formatted."""

    target: str
    state: str
    queue: str
    batch: str
    request_rate: str
    token_rate: str
    error_rate: str
    p50: str
    p99: str
    age: str
    note: str

    def cells(self) -> tuple[str, ...]:
        """The cells in :data:`COLUMNS` order."""
        return (
            self.target,
            self.state,
            self.queue,
            self.batch,
            self.request_rate,
            self.token_rate,
            self.error_rate,
            self.p50,
            self.p99,
            self.age,
            self.note,
        )


def _gauge(value: float) -> str:
    """Queue and batch sizes: integers as such, anything else with one decimal."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def format_latency(seconds: float | None) -> str:
    """``0.8 ms``, ``42 ms``, ``1.25 s``; ``-`` when unknown."""
    if seconds is None:
        return _MISSING
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def format_age(seconds: float) -> str:
    """How old a snapshot is: ``0.4s``, ``12s``, ``5m``, ``3h`` (clock skew clamps to 0)."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds // 60:.0f}m"
    return f"{seconds // 3600:.0f}h"


def _pick(
    summaries: Iterable[snapshot_pb2.HistogramSummary], family: str
) -> snapshot_pb2.HistogramSummary | None:
    """The unlabelled series of ``family``, else its only series; None when absent."""
    series = [summary for summary in summaries if summary.family == family]
    for summary in series:
        if not summary.labels:
            return summary
    return series[0] if len(series) == 1 else None


def request_latency(snapshot: snapshot_pb2.Snapshot) -> tuple[float | None, float | None, bool]:
    """p50 and p99 of the request latency, and whether they cover the window.

    From the window's histograms when the snapshot has a window (None when nothing finished
    in it), else from the lifetime summaries (the first snapshot of a stream).
    """
    windowed = snapshot.HasField("window")
    summaries = snapshot.window.histograms if windowed else snapshot.histograms
    summary = _pick(summaries, LATENCY_FAMILY)
    if summary is None:
        return None, None, windowed
    p50 = summary.p50 if summary.HasField("p50") else None
    p99 = summary.p99 if summary.HasField("p99") else None
    return p50, p99, windowed


def _timestamp(snapshot: snapshot_pb2.Snapshot) -> float | None:
    if not snapshot.HasField("timestamp"):
        return None
    return snapshot.timestamp.seconds + snapshot.timestamp.nanos / 1e9


def _shorten(text: str, width: int = _NOTE_WIDTH) -> str:
    text = " ".join(text.split())  # error messages may hold newlines
    return text if len(text) <= width else text[: width - 3] + "..."


def _error_note(error: snapshot_pb2.ScrapeError) -> str:
    kind = snapshot_pb2.ErrorKind.Name(error.kind).removeprefix("ERROR_KIND_").lower()
    status = f" {error.http_status}" if error.http_status else ""
    return _shorten(f"{kind}{status}: {error.message}" if error.message else f"{kind}{status}")


def snapshot_row(snapshot: snapshot_pb2.Snapshot, *, now: float) -> Row:
    """The table row of ``snapshot``; ``now`` (seconds since the epoch) gives its age."""
    stamp = _timestamp(snapshot)
    age = _MISSING if stamp is None else format_age(now - stamp)
    target = snapshot.instance_id or snapshot.endpoint
    if snapshot.health != snapshot_pb2.HEALTH_UP:
        state = "DOWN" if snapshot.health == snapshot_pb2.HEALTH_DOWN else "?"
        dash = _MISSING
        note = _error_note(snapshot.error) if snapshot.HasField("error") else ""
        return Row(target, state, dash, dash, dash, dash, dash, dash, dash, age, note)
    p50, p99, windowed = request_latency(snapshot)
    notes = []
    if windowed:
        window = snapshot.window
        request_rate = f"{window.request_rate:.2f}"
        token_rate = f"{window.generated_tokens_rate:.1f}"
        error_rate = (
            f"{100.0 * window.failure_rate / window.request_rate:.1f}%"
            if window.request_rate > 0
            else _MISSING
        )
        if window.counter_reset:
            notes.append("counter reset")
    else:
        request_rate = token_rate = error_rate = _MISSING
        notes.append("lifetime")
    return Row(
        target=target,
        state="UP",
        queue=_gauge(snapshot.request_metrics.queue_size),
        batch=_gauge(snapshot.generation_metrics.batch_current_size),
        request_rate=request_rate,
        token_rate=token_rate,
        error_rate=error_rate,
        p50=format_latency(p50),
        p99=format_latency(p99),
        age=age,
        note=", ".join(notes),
    )


def render_rows(rows: Sequence[Row]) -> str:
    """The heading and ``rows`` in aligned columns (two spaces apart, no trailing blanks)."""
    grid = [tuple(name for name, _ in COLUMNS), *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    lines = []
    for line in grid:
        cells = [
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(line, COLUMNS, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_table(snapshots: Iterable[snapshot_pb2.Snapshot], *, now: float) -> str:
    """The table of ``snapshots``, one row each, in the order given."""
    return render_rows([snapshot_row(snapshot, now=now) for snapshot in snapshots])


def ansi_frame(text: str, *, clear: bool = False) -> str:
    """``text`` drawn over the previous frame from the top-left corner, without flicker.

    Each line erases its own tail and the frame erases everything below it; ``clear`` wipes
    the whole screen first (the first frame).
    """
    body = "".join(line + _EOL + "\n" for line in text.split("\n"))
    return (_CLEAR if clear else "") + _HOME + body + _EOS


def response_json(response: collector_pb2.WatchResponse) -> str:
    """One line of JSON: the protobuf JSON mapping of ``response``, proto field names."""
    return json_format.MessageToJson(response, preserving_proto_field_name=True, indent=None)


class WatchBoard:
    """What a live table shows: the latest snapshot per target, and the stream's state.

    Rows keep the order in which targets first reported. ``expected`` is the number of targets
    requested (for "waiting for ..." and for knowing when every target has reported a tick).
    """

    def __init__(self, *, title: str = "", expected: int = 0, header: Sequence[str] = ()) -> None:
        self.title = title
        self.header = tuple(header)
        self.expected = expected
        self.snapshots: dict[str, snapshot_pb2.Snapshot] = {}
        self.pending: set[str] = set()  # targets updated since the last flush
        self.synced = False
        self.snapshot_count = 0
        self.coalesced = 0
        self.last_heartbeat: float | None = None
        self.status = ""

    def apply(self, response: collector_pb2.WatchResponse, *, now: float) -> bool:
        """Take one stream message; True when it carried a snapshot."""
        self.coalesced += response.coalesced
        self.status = ""  # a message arrived: the stream is (back) up
        event = response.WhichOneof("event")
        if event == "sync":
            self.synced = True
        elif event == "heartbeat":
            self.last_heartbeat = now
        elif event == "snapshot":
            snapshot = response.snapshot
            key = snapshot.instance_id or snapshot.endpoint
            self.snapshots[key] = snapshot
            self.pending.add(key)
            self.snapshot_count += 1
            return True
        return False

    def note_retry(self, code: str, details: str, delay: float) -> None:
        """The stream ended and is about to be resubscribed (a new sync marker will come)."""
        self.synced = False
        self.status = (
            f"stream down ({code}: {_shorten(details, 100)}); resubscribing in {delay:.1f} s"
        )

    @property
    def tick_complete(self) -> bool:
        """Every expected target has a snapshot not yet flushed."""
        return bool(self.pending) and len(self.pending) >= max(1, self.expected)

    def render(self, *, now: float, max_lines: int | None = None) -> str:
        """Title, header lines, the table, and status lines.

        ``max_lines`` (a terminal's height) drops the table rows that would not fit, saying
        how many: a frame taller than the screen would scroll and break the redraw.
        """
        clock = datetime.fromtimestamp(now).strftime("%H:%M:%S")
        top = [f"{self.title}  {clock}".strip() if self.title else clock, *self.header, ""]
        bottom = ["", self._facts()]
        if self.status:
            bottom.append(self.status)
        if not self.snapshots:
            return "\n".join([*top, "(no snapshot yet)", *bottom])
        table = render_table(self.snapshots.values(), now=now).split("\n")
        if max_lines is not None and len(top) + len(table) + len(bottom) > max_lines:
            room = max(0, max_lines - len(top) - len(bottom) - 2)  # the heading, "... more"
            hidden = len(table) - 1 - room
            table = [*table[: 1 + room], f"... {hidden} more target(s): enlarge the terminal"]
        return "\n".join([*top, *table, *bottom])

    def _facts(self) -> str:
        facts = []
        if self.synced:
            facts.append("synced")
        else:
            facts.append(f"waiting for targets ({len(self.snapshots)} of {self.expected})")
        plural = "" if self.snapshot_count == 1 else "s"
        facts.append(f"{self.snapshot_count} snapshot{plural}")
        if self.coalesced:
            facts.append(f"{self.coalesced} coalesced (slow reader)")
        if self.last_heartbeat is not None:
            heartbeat = datetime.fromtimestamp(self.last_heartbeat).strftime("%H:%M:%S")
            facts.append(f"last heartbeat {heartbeat}")
        return "  ".join(facts)


async def run_live(
    messages: AsyncGenerator[collector_pb2.WatchResponse, None],
    board: WatchBoard,
    out: TextIO,
    *,
    mode: Mode,
    count: int | None = None,
    refresh: float = 1.0,
    flush_after: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> int:
    """Show ``messages`` on ``out`` until ``count`` snapshots (None: until cancelled).

    ``tty``: redraw the board in place on every message and every ``refresh`` seconds (ages
    keep moving). ``blocks``: print the board when every expected target has sent a new
    snapshot, or ``flush_after`` seconds after the first unprinted one (targets' ticks are
    spread over the interval; silent ones must not hold the others back). ``json``: one line
    per message. Returns the number of snapshots seen. The stream is closed on return.
    """
    seen = 0
    if mode == "json":
        async with contextlib.aclosing(messages):
            async for response in messages:
                print(response_json(response), file=out, flush=True)
                if response.HasField("snapshot"):
                    seen += 1
                    if count is not None and seen >= count:
                        break
        return seen

    changed = asyncio.Event()

    async def read() -> None:
        nonlocal seen
        async with contextlib.aclosing(messages):
            async for response in messages:
                if board.apply(response, now=clock()):
                    seen += 1
                changed.set()
                if count is not None and seen >= count:
                    return

    def draw(*, first: bool = False) -> None:
        if mode == "tty":
            height = shutil.get_terminal_size().lines
            out.write(ansi_frame(board.render(now=clock(), max_lines=height - 1), clear=first))
        else:
            out.write(board.render(now=clock()) + "\n\n")
        out.flush()
        board.pending.clear()

    reader = asyncio.create_task(read(), name="tgi-collector-watch-reader")
    first_pending: float | None = None
    try:
        if mode == "tty":
            out.write(HIDE_CURSOR)
            draw(first=True)
        while not reader.done():
            changed.clear()
            if mode == "tty":
                timeout = refresh
            elif first_pending is None:
                timeout = None
            else:
                timeout = max(0.0, first_pending + flush_after - time.monotonic())
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait(
                    {reader, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
            if mode == "tty":
                draw()
                continue
            if board.pending and first_pending is None:
                first_pending = time.monotonic()
            due = first_pending is not None and time.monotonic() >= first_pending + flush_after
            if board.pending and (board.tick_complete or due):
                draw()
                first_pending = None
        reader.result()  # the stream's error, if it ended with one
        if mode == "tty" or board.pending:
            draw()
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if mode == "tty":
            out.write(SHOW_CURSOR)
            out.flush()
    return seen


def terminal_mode(out: TextIO, *, json_lines: bool = False) -> Mode:
    """``json`` when asked, ``tty`` when ``out`` is a terminal, else ``blocks``."""
    if json_lines:
        return "json"
    try:
        return "tty" if out.isatty() else "blocks"
    except ValueError:  # a closed stream
        return "blocks"


def retry_reporter(
    board: WatchBoard, mode: Mode, err: TextIO
) -> Callable[[grpc.StatusCode, str, float], None]:
    """An ``on_retry`` callback for :meth:`CollectorClient.watch`: the board's status line on
    a TTY (the next redraw shows it), a line on ``err`` otherwise (the table is not redrawn
    while the stream is down)."""

    def report(code: grpc.StatusCode, details: str, delay: float) -> None:
        board.note_retry(code.name, details, delay)
        if mode != "tty":
            print(f"tgi-collector: {board.status}", file=err, flush=True)

    return report
