"""Shared helpers of the Watch benchmarks (private to ``bench/``; not a library).

- TGI targets in their own process: ``python bench/_benchlib.py targets N`` listens on N
  loopback ports (port 0: chosen by the OS, so N ports = N distinct targets, each with its own
  connections) and answers ``GET /metrics`` with the real TGI scrape
  (``tests/data/tgi/tgi-3.3-real.prom``, 98,977 bytes) and ``GET /info`` with a small JSON
  document, from pre-built bytes: an asyncio ``Protocol``, no HTTP library, no compression, so
  the targets cost little CPU. ``--payload static`` (the default) answers the file itself every
  time; ``--payload busy`` answers the k-th /metrics request of each port with the file as a
  busy TGI would have moved it after k scrapes (``bench/_busy.py``: counters and histograms
  grow, gauges alternate), each body built once per k for all ports. ``GET /stats`` (any port)
  answers counters as JSON and is not counted; ``/stats?times`` adds the wall-clock time of the
  last /metrics answers. The process exits when its stdin closes (the parent went away) or
  after ``--max-seconds``.
- A ``tgi-collector serve`` subprocess, waited for until its health is SERVING.
- Process CPU (utime + stime) and memory (VmRSS, VmHWM) from ``/proc/PID``, and percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from _busy import Bodies, Template

from tgi_collector.client import CollectorClient

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "tgi" / "tgi-3.3-real.prom"
PAYLOADS = ("static", "busy")
INFO = b'{"model_id":"bench/model","model_sha":"0","model_dtype":"torch.float16","version":"3.3.0"}'
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows the script's whole docstring, as written, and every default."""


def free_port() -> int:
    """A free loopback TCP port (closed again: a tiny race, fine on a bench machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all threads (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of process ``pid`` in MiB (``VmRSS``, ``VmHWM``)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def http_json(port: int, path: str) -> dict:
    """GET ``http://127.0.0.1:<port><path>`` and decode its JSON body."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM ``proc`` (this script started it), then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_targets(
    count: int, max_seconds: float, payload: str = "static"
) -> tuple[subprocess.Popen, list[int]]:
    """Start the targets process (``payload``: one of ``PAYLOADS``); returns it and its ports
    (the first one serves /stats)."""
    proc = subprocess.Popen(
        [
            *(sys.executable, __file__, "targets", str(count)),
            *("--max-seconds", str(max_seconds), "--payload", payload),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the process prints its ports once all are listening
    if not line:
        stop(proc)
        raise RuntimeError("the targets process did not start")
    return proc, json.loads(line)


def spawn(command: Sequence[str], log: Path) -> subprocess.Popen:
    """Start ``command`` with stdout and stderr appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL)


async def start_collector(port: int, *args: str, log: Path) -> subprocess.Popen:
    """Start ``python -m tgi_collector serve`` on 127.0.0.1:port; return once SERVING."""
    command = [sys.executable, "-m", "tgi_collector", "--log-level", "WARNING", "serve"]
    proc = spawn([*command, "--listen", f"127.0.0.1:{port}", *args], log)
    async with CollectorClient(f"127.0.0.1:{port}") as client:
        for _ in range(150):  # 15 s at most
            if proc.poll() is not None:
                raise RuntimeError(f"the collector exited ({proc.returncode}); see {log}")
            with contextlib.suppress(Exception):
                if await client.health(timeout=1.0) == "SERVING":
                    return proc
            await asyncio.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"the collector did not become SERVING in 15 s; see {log}")


# -- the targets process ----------------------------------------------------------------------


def _response(body: bytes, content_type: str, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class _Stats:
    def __init__(self) -> None:
        self.metrics = 0
        self.info = 0
        self.connections = 0
        self.times: collections.deque[float] = collections.deque(maxlen=20_000)


class _Static:
    """The /metrics answer of a static port: the same bytes every time."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def metrics(self) -> bytes:
        return self._answer


class _Busy:
    """The /metrics answer of a busy port: its own scrape counter k, bodies shared by all."""

    def __init__(self, bodies: Bodies) -> None:
        self._bodies, self._k = bodies, 0

    def metrics(self) -> bytes:
        self._k += 1
        return self._bodies.response(self._k - 1)


class _Target(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; GET only, pre-built answers."""

    def __init__(self, stats: _Stats, metrics: _Static | _Busy, info: bytes) -> None:
        self._stats, self._metrics, self._info = stats, metrics, info
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._stats.connections += 1

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            parts = head.split(b" ", 2)
            target = parts[1] if len(parts) > 2 else b""
            path = target.partition(b"?")[0]
            if path == b"/metrics":
                self._transport.write(self._metrics.metrics())
                self._stats.metrics += 1
                self._stats.times.append(time.time())
            elif path == b"/info":
                self._transport.write(self._info)
                self._stats.info += 1
            elif path == b"/stats":
                stats = self._stats
                doc = {
                    "metrics": stats.metrics,
                    "info": stats.info,
                    "connections": stats.connections,
                }
                if target.endswith(b"?times"):
                    doc["times"] = list(stats.times)
                self._transport.write(_response(json.dumps(doc).encode(), "application/json"))
            else:
                self._transport.write(_response(b"not found\n", "text/plain", "404 Not Found"))
        if len(self._buffer) > 65536:
            self._transport.close()


def _metrics_answer(body: bytes) -> bytes:
    return _response(body, "text/plain; version=0.0.4")


async def _serve_targets(count: int, max_seconds: float, payload: str) -> None:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    info = _response(INFO, "application/json")
    if payload == "busy":
        bodies = Bodies(Template(DATA.read_text()), _metrics_answer)
        ports: list[_Static | _Busy] = [_Busy(bodies) for _ in range(count)]
    else:
        ports = [_Static(_metrics_answer(DATA.read_bytes()))] * count
    servers = [
        await loop.create_server(
            lambda port=port: _Target(stats, port, info), "127.0.0.1", 0, backlog=1024
        )
        for port in ports
    ]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    eof = loop.run_in_executor(None, sys.stdin.buffer.read)  # returns when the parent goes
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(eof, max_seconds)
    for server in servers:
        server.close()
    os._exit(0)  # the executor thread may still be blocked reading stdin


def _main() -> None:
    parser = argparse.ArgumentParser(description="TGI targets for the benchmarks.")
    parser.add_argument("command", choices=["targets"])
    parser.add_argument("count", type=int, help="number of ports (targets)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long")
    parser.add_argument(
        "--payload", choices=PAYLOADS, default="static", help="what GET /metrics answers"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(_serve_targets(args.count, args.max_seconds, args.payload))


if __name__ == "__main__":
    _main()
