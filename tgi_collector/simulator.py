"""A loopback stand-in for a Hugging Face TGI 3.x server: ``GET /metrics`` and ``GET /info``.

Why: the collector must be tested end to end against something that behaves like TGI on the
wire (empty body before the first request, series that appear once hit, family order changing
between scrapes, Rust float formatting, keep-alive) with numbers that move consistently. They
come from :class:`~tgi_collector._workload.Workload`, a small model of TGI's router; this module
renders them and serves them over a minimal stdlib HTTP/1.1 server (GET/HEAD, keep-alive).

Tests drive the clock with :meth:`TgiSimulator.advance`; :func:`run_simulator` follows the wall
clock. ``tgi_request_count`` counts each request once: real TGI counts OpenAI-route and Vertex
requests twice (an open upstream bug), which the simulator does not reproduce.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import email.utils
import hashlib
import http
import itertools
import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from tgi_collector._workload import (
    MAX_CONCURRENT_REQUESTS,
    Histogram,
    Label,
    MetricStore,
    Workload,
)

__all__ = ["SimulatorConfig", "TgiSimulator", "run_simulator"]

_log = logging.getLogger(__name__)

_PER_METHOD = " per method (prefill or decode)"
_FILTER_HELP = "Time spent filtering batches and sending generated tokens"
# name -> (type, HELP text); None where TGI registers no description (those never get HELP).
_FAMILIES: dict[str, tuple[str, str | None]] = {
    "tgi_request_count": ("counter", "Total number of requests"),
    "tgi_request_success": ("counter", "Number of successful requests"),
    "tgi_request_failure": ("counter", None),
    "tgi_batch_inference_count": ("counter", "Inference calls" + _PER_METHOD),
    "tgi_batch_inference_success": (
        "counter",
        "Number of successful inference calls" + _PER_METHOD,
    ),
    "tgi_batch_inference_failure": ("counter", None),
    "tgi_batch_concat": ("counter", None),
    "tgi_queue_size": ("gauge", "Current queue size"),
    "tgi_batch_current_size": ("gauge", "Current batch size"),
    "tgi_batch_current_max_tokens": ("gauge", "Maximum tokens for the current batch"),
    "tgi_request_skipped_tokens": ("summary", "Speculated tokens per request"),
    "tgi_request_duration": ("histogram", "Request duration"),
    "tgi_request_validation_duration": ("histogram", "Request validation duration"),
    "tgi_request_queue_duration": ("histogram", "Request queue duration"),
    "tgi_request_inference_duration": ("histogram", "Request inference duration"),
    "tgi_request_mean_time_per_token_duration": ("histogram", "Mean time per token per request"),
    "tgi_request_input_length": ("histogram", "Input token length per request"),
    "tgi_request_max_new_tokens": ("histogram", "Maximum new tokens per request"),
    "tgi_request_generated_tokens": ("histogram", "Generated tokens per request"),
    "tgi_batch_next_size": ("histogram", "Batch size of the next batch"),
    "tgi_batch_forward_duration": ("histogram", "Batch forward duration" + _PER_METHOD),
    "tgi_batch_decode_duration": ("histogram", "Time spent decoding a batch" + _PER_METHOD),
    "tgi_batch_filter_duration": ("histogram", _FILTER_HELP + _PER_METHOD),
    "tgi_batch_inference_duration": ("histogram", "Batch inference duration"),
    "tgi_batch_concat_duration": ("histogram", None),
}
_QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def _rust_float(value: float) -> str:
    """``value`` as Rust's ``Display`` prints an f64: shortest round-trip digits, no exponent.

    Python's ``repr`` has the same digits but writes ``1.5e-05``, and ``128.0`` for ``128``.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value.is_integer():
        return ("-" if math.copysign(1.0, value) < 0 else "") + str(abs(int(value)))
    return format(Decimal(repr(value)), "f")


def _render(store: MetricStore, rng: random.Random) -> str:
    """The exposition text of ``store``; families and labelled series in shuffled order.

    Like metrics-exporter-prometheus 0.15: HELP only where TGI describes the metric, counters
    and bucket counts as integers, floats in Rust form, a blank line after every family.
    """
    present = store.counters.keys() | store.gauges.keys() | store.histograms.keys()
    names = [name for name in _FAMILIES if name in present]
    if store.skipped_tokens:
        names.append("tgi_request_skipped_tokens")
    rng.shuffle(names)  # the exporter iterates hash maps: the order changes between scrapes
    chunks = []
    for name in names:
        kind, help_text = _FAMILIES[name]
        lines = [] if help_text is None else [f"# HELP {name} {help_text}"]
        lines.append(f"# TYPE {name} {kind}")
        if kind == "counter":
            counters = list(store.counters[name].items())
            rng.shuffle(counters)
            lines += [f"{name}{_braces(label)} {value}" for label, value in counters]
        elif kind == "gauge":
            lines.append(f"{name} {_rust_float(store.gauges[name])}")
        elif kind == "summary":
            lines += _summary_lines(name, store.skipped_tokens)
        else:
            bounds = [_rust_float(b) for b in store.bounds(name)] + ["+Inf"]
            histograms = list(store.histograms[name].items())
            rng.shuffle(histograms)
            for label, hist in histograms:
                lines += _histogram_lines(name, label, hist, bounds)
        chunks.append("\n".join(lines) + "\n\n")
    return "".join(chunks)


def _histogram_lines(name: str, label: Label, hist: Histogram, bounds: list[str]) -> list[str]:
    """Cumulative ``_bucket`` lines (``le`` last among the labels), then ``_sum``, ``_count``."""
    prefix = "" if label is None else f'{label[0]}="{label[1]}",'
    lines, cumulative = [], 0
    for le, count in zip(bounds, hist.counts, strict=True):
        cumulative += count
        lines.append(f'{name}_bucket{{{prefix}le="{le}"}} {cumulative}')
    lines.append(f"{name}_sum{_braces(label)} {_rust_float(hist.total)}")
    lines.append(f"{name}_count{_braces(label)} {hist.count}")
    return lines


def _summary_lines(name: str, observed: Counter[float]) -> list[str]:
    """Quantile lines, ``_sum`` and ``_count``: exact nearest-rank quantiles (the exporter's
    windowed sketch gives the same for the few distinct values skipped tokens take)."""
    values = sorted(observed)  # distinct values: the work does not grow with observations
    cumulative = list(itertools.accumulate(observed[v] for v in values))
    n = cumulative[-1]
    lines = [
        f'{name}{{quantile="{_rust_float(q)}"}} '
        f"{_rust_float(values[bisect.bisect_left(cumulative, max(1, math.ceil(q * n)))])}"
        for q in _QUANTILES
    ]
    total = math.fsum(v * observed[v] for v in values)
    return [*lines, f"{name}_sum {_rust_float(total)}", f"{name}_count {n}"]


def _braces(label: Label) -> str:
    """``{key="value"}`` for a labelled series, nothing for an unlabelled one."""
    return "" if label is None else f'{{{label[0]}="{label[1]}"}}'


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated server serves and how busy it is; ``seed`` makes runs repeatable.

    ``failure_ratio`` is the share of requests drawn to fail (validation, overloaded, template,
    dropped, incomplete, generation); a generation failure fails its whole batch, as in TGI.
    """

    model_id: str = "HuggingFaceH4/zephyr-7b-beta"
    max_input_tokens: int = 511
    max_total_tokens: int = 512
    requests_per_second: float = 5.0
    failure_ratio: float = 0.02
    seed: int | None = None
    version: str = "3.3.4"

    def __post_init__(self) -> None:
        if not 1 <= self.max_input_tokens < self.max_total_tokens:
            raise ValueError("need 1 <= max_input_tokens < max_total_tokens, as TGI does")
        if not (math.isfinite(self.requests_per_second) and self.requests_per_second >= 0):
            raise ValueError("requests_per_second must be finite and >= 0")
        if not 0.0 <= self.failure_ratio <= 1.0:
            raise ValueError("failure_ratio must be within [0, 1]")


class TgiSimulator:
    """A TGI look-alike on loopback: ``/metrics``, ``/info``, ``/health``; 404 elsewhere.

    Its workload moves only on :meth:`advance`, or with the wall clock under :func:`run_simulator`.
    """

    def __init__(self, config: SimulatorConfig = SimulatorConfig()) -> None:
        self._config = config
        self._workload = Workload(
            max_input_tokens=config.max_input_tokens,
            max_total_tokens=config.max_total_tokens,
            requests_per_second=config.requests_per_second,
            failure_ratio=config.failure_ratio,
            seed=config.seed,
        )
        # Its own generator: how often we render must not change the workload's draws.
        self._order_rng = random.Random(None if config.seed is None else f"order-{config.seed}")
        self._last_order: list[str] = []
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._scrapes = 0
        self._wall_clock: float | None = None  # monotonic time of the last catch-up

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound TCP port (the ephemeral one when started with port 0)."""
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def scrape_count(self) -> int:
        """How many ``GET /metrics`` requests were answered."""
        return self._scrapes

    def advance(self, seconds: float) -> None:
        """Run the synthetic workload ``seconds`` of simulated time forward."""
        self._workload.advance(seconds)

    def render_metrics(self) -> str:
        """The current ``/metrics`` body; family order differs from the previous render."""
        while True:
            text = _render(self._workload.metrics, self._order_rng)
            order = [line for line in text.splitlines() if line.startswith("# TYPE ")]
            # Real TGI's order varies between scrapes; make sure consecutive renders differ.
            if order != self._last_order or len(order) < 2:
                self._last_order = order
                return text

    def info(self) -> dict[str, object]:
        """The ``/info`` document: TGI 3.x's fields, plus ``model_dtype`` and ``model_device_type``
        that real 3.x routers no longer send (clients must not require them)."""
        cfg = self._config
        sha = hashlib.sha1(f"tgi-{cfg.version}".encode()).hexdigest()
        return {
            "model_id": cfg.model_id,
            "model_sha": hashlib.sha1(cfg.model_id.encode()).hexdigest(),
            "model_dtype": "torch.float16",
            "model_device_type": "cuda",
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": MAX_CONCURRENT_REQUESTS,
            "max_best_of": 2,
            "max_stop_sequences": 4,
            "max_input_tokens": cfg.max_input_tokens,
            "max_total_tokens": cfg.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": cfg.version,
            "sha": sha,
            "docker_label": f"sha-{sha[:7]}",
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind and start serving; ``port=0`` picks a free port (see :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._server = await asyncio.start_server(self._serve, host, port)
        self._host, self._port = host, int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every connection, idle keep-alive ones included."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # EOF ends each handler cleanly; cancelling them would make asyncio log errors.
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> TgiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _follow_wall_clock(self) -> None:
        """Advance the workload by the real time elapsed since the previous call."""
        now = time.monotonic()
        if self._wall_clock is not None:
            self.advance(max(0.0, now - self._wall_clock))
        self._wall_clock = now

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until the client or HTTP/1.x semantics close it."""
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer  # so that stop() can end idle keep-alive connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                parsed = _parse_head(head)
                if parsed is None:
                    writer.write(_response(400, b"", "text/plain", keep_alive=False))
                    break
                method, path, keep_alive, length = parsed
                await reader.readexactly(length)  # a body on GET means nothing: discard it
                status, body, ctype = self._route(method, path)
                payload = b"" if method == "HEAD" else body
                writer.write(_response(status, payload, ctype, keep_alive, len(body)))
                await writer.drain()
                if not keep_alive:
                    break
        except asyncio.LimitOverrunError:
            writer.write(_response(431, b"", "text/plain", keep_alive=False))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client closed the connection (between or in the middle of requests)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[int, bytes, str]:
        """Status, body and content type for ``method path`` (HEAD gets GET's headers)."""
        if path not in ("/metrics", "/info", "/health"):
            return 404, b"", "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, b"", "text/plain; charset=utf-8"
        if path == "/info":
            return 200, json.dumps(self.info()).encode(), "application/json"
        if path == "/health":
            return 200, b"", "text/plain; charset=utf-8"
        if self._wall_clock is not None:
            self._follow_wall_clock()
        if method == "GET":
            self._scrapes += 1
        return 200, self.render_metrics().encode(), "text/plain; charset=utf-8"


def _parse_head(head: bytes) -> tuple[str, str, bool, int] | None:
    """Method, path, keep-alive and body length of a request head; None if malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                return None
            headers[name.strip().lower()] = value.strip().lower()
    if "transfer-encoding" in headers:  # chunked request bodies are not supported
        return None
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > 1 << 20:  # GET bodies are ignored: keep them small
        return None
    tokens = {t.strip() for t in headers.get("connection", "").split(",")}
    # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when asked to.
    keep_alive = "keep-alive" in tokens if parts[2] == "HTTP/1.0" else "close" not in tokens
    return parts[0], urlsplit(parts[1]).path, keep_alive, int(length)


def _response(status: int, body: bytes, ctype: str, keep_alive: bool, length: int = -1) -> bytes:
    """A complete HTTP/1.1 response; ``length`` overrides Content-Length (for HEAD)."""
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        f"content-type: {ctype}",
        f"content-length: {len(body) if length < 0 else length}",
        f"date: {email.utils.formatdate(usegmt=True)}",
    ]
    if status == 405:
        head.append("allow: GET,HEAD")
    if not keep_alive:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def run_simulator(config: SimulatorConfig, host: str, port: int) -> None:
    """Serve a simulator on ``host:port`` until cancelled, its workload following real time.

    The workload catches up with the wall clock before each ``/metrics`` answer and every
    second, so gauges move between scrapes and a long pause never costs one long catch-up.
    """
    simulator = TgiSimulator(config)
    simulator._follow_wall_clock()
    await simulator.start(host, port)
    try:
        _log.info("TGI simulator serving %s (model %s)", simulator.url, config.model_id)
        while True:
            await asyncio.sleep(1.0)
            simulator._follow_wall_clock()
    finally:
        await simulator.stop()
