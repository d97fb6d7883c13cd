"""The pure half of the live table: protobuf snapshots in, formatted rows and text out.

What is here: the columns (:data:`COLUMNS`), one target's :class:`Row` and how each cell is
formatted (:func:`snapshot_row`, :func:`format_latency`, :func:`format_age`), the aligned table
(:func:`render_rows`, :func:`render_table`) and :class:`WatchBoard`, the state of a live table
(latest snapshot per target, sync, heartbeats, retries) and its rendering to text.

Why it is separate: none of it touches a terminal, a clock or a stream, so every number on
screen is unit-testable; :mod:`tgi_collector._table` drives the terminal from a Watch stream
and re-exports every name here, which is where callers import them from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tgi_collector.v1 import collector_pb2, snapshot_pb2

__all__ = [
    "COLUMNS",
    "LATENCY_FAMILY",
    "Row",
    "WatchBoard",
    "format_age",
    "format_latency",
    "render_rows",
    "render_table",
    "request_latency",
    "snapshot_row",
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
