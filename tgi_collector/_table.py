"""The live terminal table of ``tgi-collector watch`` and ``tgi-collector demo``.

Two halves. The first is pure: protobuf snapshots in, text out (:func:`snapshot_row`,
:func:`render_table`, :class:`WatchBoard`), so every number on screen is unit-testable; it
lives in :mod:`tgi_collector._board` and is re-exported here. The second, :func:`run_live`
here, drives a terminal from a stream of ``WatchResponse`` messages: a refreshing table
redrawn in place with ANSI escapes on a TTY, one table block per update on a pipe, or one JSON
object per message (JSON lines).

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
from collections.abc import AsyncGenerator, Callable
from typing import Literal, TextIO

import grpc
from google.protobuf import json_format

from tgi_collector._board import (
    COLUMNS,
    LATENCY_FAMILY,
    Row,
    WatchBoard,
    format_age,
    format_latency,
    render_rows,
    render_table,
    request_latency,
    snapshot_row,
)
from tgi_collector.v1 import collector_pb2

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

# ANSI: cursor home, erase to end of line, erase below, clear screen, hide/show the cursor.
_HOME, _EOL, _EOS, _CLEAR = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"

Mode = Literal["tty", "blocks", "json"]


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
