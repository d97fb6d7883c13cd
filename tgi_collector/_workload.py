"""The synthetic workload behind :mod:`tgi_collector.simulator`: a small TGI 3.x router model.

Why a model and not random numbers: a collector derives rates, ratios and quantiles from
several families at once, so they must agree the way they do on a real server. Requests arrive
as a Poisson process, pass validation, wait in a queue and run in a continuously batched engine
(prefill, then one decode step per token, new requests chunked into the running batch) whose
step times grow with batch size. Every metric is recorded where TGI's router records it
(``router/src/infer``, ``router/src/server.rs``, ``backends/v3/src/{backend,queue}.rs``).

Time is an integer count of nanoseconds, like Rust's ``Duration``, so request duration is
exactly validation + queue + inference and histograms see ``as_secs_f64`` values.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter, deque
from dataclasses import dataclass

__all__ = [
    "MAX_CONCURRENT_REQUESTS",
    "Histogram",
    "Label",
    "MetricStore",
    "Workload",
    "bucket_bounds",
]

_NS = 1_000_000_000
MAX_CONCURRENT_REQUESTS = 128  # TGI's --max-concurrent-requests default
_MIN_PREFILL_TOKENS = 4096  # TGI's --max-batch-prefill-tokens default
_WAKE_NS = 150_000  # the batching task is woken through a tokio Notify: not instantaneous
_CONCAT_REASON = "chunking"  # TGI 3.x chunks prefills: min_size is None, reason is "chunking"

# What a failing request fails with, and how often (relative weights). "generation" fails the
# whole batch on the shard, as in TGI, so it is kept rare.
_FAILURES = ("validation", "overloaded", "template", "dropped", "incomplete", "generation")
_FAILURE_WEIGHTS = (45, 12, 8, 20, 5, 10)


Label = tuple[str, str] | None
"""The one label pair of a TGI series (``("method", "decode")``), or None."""


def _duration_bounds() -> tuple[float, ...]:
    """The 35 bounds of every ``*_duration`` histogram: 0.0001 * 1.5^n, n = 1..35."""
    bounds = [0.0001]
    for _ in range(35):  # repeated multiplication, as TGI does: 1.5**n differs in last digits
        bounds.append(bounds[-1] * 1.5)
    return tuple(bounds[1:])


_DURATION_BOUNDS = _duration_bounds()


def bucket_bounds(name: str, max_input_tokens: int, max_total_tokens: int) -> tuple[float, ...]:
    """Bucket bounds of histogram ``name`` (``+Inf`` excluded), as TGI's router computes them."""
    if name == "tgi_batch_next_size":
        return tuple(float(k) for k in range(1, 1025))
    if name == "tgi_request_input_length":
        limit = max_input_tokens
    elif name in ("tgi_request_max_new_tokens", "tgi_request_generated_tokens"):
        limit = max_total_tokens
    else:
        return _DURATION_BOUNDS
    return tuple(limit / 100.0 * k for k in range(1, 101))


@dataclass(slots=True)
class Histogram:
    """One histogram series: per-bucket (not cumulative) counts, then +Inf; sum; count."""

    counts: list[int]
    total: float = 0.0
    count: int = 0


class MetricStore:
    """The values TGI's router would hold; a series exists only once touched, as in TGI."""

    def __init__(self, max_input_tokens: int, max_total_tokens: int) -> None:
        self._limits = (max_input_tokens, max_total_tokens)
        self._bounds: dict[str, tuple[float, ...]] = {}
        self.counters: dict[str, dict[Label, int]] = {}
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, dict[Label, Histogram]] = {}
        self.skipped_tokens: Counter[float] = Counter()  # the one summary: value -> times

    def inc(self, name: str, label: Label = None) -> None:
        """Add one to a counter series."""
        series = self.counters.setdefault(name, {})
        series[label] = series.get(label, 0) + 1

    def set(self, name: str, value: float) -> None:
        """Set a gauge."""
        self.gauges[name] = float(value)

    def bounds(self, name: str) -> tuple[float, ...]:
        """Bucket bounds of histogram ``name`` (computed once)."""
        if name not in self._bounds:
            self._bounds[name] = bucket_bounds(name, *self._limits)
        return self._bounds[name]

    def observe(self, name: str, value: float, label: Label = None) -> None:
        """Record an observation; a bucket counts values ``<=`` its bound (and > the previous)."""
        bounds = self.bounds(name)
        series = self.histograms.setdefault(name, {})
        hist = series.get(label)
        if hist is None:
            hist = series[label] = Histogram([0] * (len(bounds) + 1))
        hist.counts[bisect.bisect_left(bounds, value)] += 1
        hist.total += value
        hist.count += 1


def _secs(ns: int) -> float:
    """Rust's ``Duration::as_secs_f64``: whole seconds plus nanoseconds / 1e9."""
    return float(ns // _NS) + (ns % _NS) / 1e9


@dataclass(slots=True)
class _Request:
    """One request that passed validation, from queue to its last token."""

    received: int  # when the HTTP request arrived (validation starts)
    queued: int
    input_tokens: int
    max_new_tokens: int
    target_tokens: int  # tokens until EOS, at most max_new_tokens
    fate: str | None  # planned late failure: dropped, incomplete, generation or None
    fail_at: int  # for dropped/generation: how many tokens are generated before it fails
    start: int = 0
    generated: int = 0

    @property
    def reserved(self) -> int:
        """Tokens the request holds in the batch budget: prompt + max_new_tokens."""
        return self.input_tokens + self.max_new_tokens


@dataclass(frozen=True, slots=True)
class _Step:
    """One planned forward pass of the engine, applied when it ends."""

    method: str  # prefill or decode
    entries: tuple[_Request, ...]  # prefill: the new requests; decode: the whole batch
    fails: bool
    forward: int
    decode: int
    filter: int
    concat: int | None
    total: int


class Workload:
    """A deterministic (given a seed) TGI router; its metrics are in :attr:`metrics`."""

    def __init__(
        self,
        *,
        max_input_tokens: int,
        max_total_tokens: int,
        requests_per_second: float,
        failure_ratio: float,
        seed: int | None,
    ) -> None:
        self.metrics = MetricStore(max_input_tokens, max_total_tokens)
        self._max_input = max_input_tokens
        self._max_total = max_total_tokens
        self._rps = requests_per_second
        self._failure_ratio = failure_ratio
        self._rng = random.Random(seed)
        # TGI sizes its budget from free GPU memory at warmup; a fixed multiple is enough here.
        self._batch_budget = max(16_384, 16 * max_total_tokens)
        self._prefill_budget = max(_MIN_PREFILL_TOKENS, max_input_tokens)
        self._now = 0
        self._next_arrival: int | None = self._draw_arrival(0)
        self._queue: deque[_Request] = deque()
        self._batch: list[_Request] = []
        self._step: _Step | None = None
        self._engine_at: int | None = None  # when the engine next acts; None = idle
        self._decode_next = False  # a chunked-in prefill just ran: the decode follows
        self._concat_pending = False  # requests joined the batch since the last decode

    def advance(self, seconds: float) -> None:
        """Run every arrival and engine step due in the next ``seconds`` of simulated time."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        target = self._now + round(seconds * _NS)
        while True:
            engine = self._engine_at
            arrival = self._next_arrival
            if engine is not None and engine <= target and (arrival is None or engine <= arrival):
                self._now = engine
                self._on_engine(engine)
            elif arrival is not None and arrival <= target:
                self._now = arrival
                self._next_arrival = self._draw_arrival(arrival)
                self._on_arrival(arrival)
            else:
                break
        self._now = target

    # -- randomness ---------------------------------------------------------------------------

    def _draw_arrival(self, after: int) -> int | None:
        """The next Poisson arrival after ``after``; None if the rate is zero."""
        if self._rps <= 0:
            return None
        return after + 1 + int(self._rng.expovariate(self._rps) * _NS)

    def _jitter(self, base_ns: float) -> int:
        """``base_ns`` spread by a lognormal factor (about +-15 %), at least 1 ns."""
        return max(1, int(base_ns * self._rng.lognormvariate(0.0, 0.15)))

    def _draw_lengths(self) -> tuple[int, int, int]:
        """Prompt tokens, max_new_tokens and tokens until EOS of one valid request."""
        rng = self._rng
        longest = min(self._max_input, self._max_total - 1)
        median = max(1.0, self._max_input * 0.12)
        input_tokens = min(longest, max(1, round(rng.lognormvariate(math.log(median), 0.9))))
        room = self._max_total - input_tokens
        # None: the client left max_new_tokens unset, TGI then allows all remaining room.
        asked = rng.choice((None, 16, 20, 64, 128, 256, 512))
        max_new = room if asked is None else min(asked, room)
        target = min(max_new, 1 + int(rng.expovariate(1 / 80)))
        return input_tokens, max_new, target

    # -- arrivals -----------------------------------------------------------------------------

    def _on_arrival(self, now: int) -> None:
        """A request reaches the router: count it, maybe reject it, else validate and queue it."""
        m, rng = self.metrics, self._rng
        m.inc("tgi_request_count")
        fate: str | None = None
        if rng.random() < self._failure_ratio:
            fate = rng.choices(_FAILURES, weights=_FAILURE_WEIGHTS)[0]
        # Rejected before queueing, in TGI's order: a failing chat template, no free permit
        # (drawn, or really over max_concurrent_requests), then validation (e.g. a prompt over
        # max_input_tokens: no length is recorded for it).
        prefilling = self._step.entries if self._step and self._step.method == "prefill" else ()
        if len(self._queue) + len(self._batch) + len(prefilling) >= MAX_CONCURRENT_REQUESTS:
            fate = fate if fate == "template" else "overloaded"
        if fate in ("template", "overloaded", "validation"):
            m.inc("tgi_request_failure", ("err", fate))
            return
        input_tokens, max_new, target = self._draw_lengths()
        validation = self._jitter(120_000 + 150 * input_tokens)
        m.observe("tgi_request_input_length", input_tokens)
        m.observe("tgi_request_max_new_tokens", max_new)
        fail_at = rng.randrange(target) if fate in ("dropped", "generation") else 0
        self._queue.append(
            _Request(now - validation, now, input_tokens, max_new, target, fate, fail_at)
        )
        m.set("tgi_queue_size", len(self._queue))
        if self._engine_at is None:
            self._engine_at = now + _WAKE_NS

    # -- engine -------------------------------------------------------------------------------

    def _on_engine(self, now: int) -> None:
        """The engine finished its step (if any): apply it, then plan the next one."""
        step, self._step = self._step, None
        if step is not None:
            self._finish(step, now)
        self._plan(now)

    def _plan(self, now: int) -> None:
        """Choose the next step like TGI's batching loop; go idle when there is nothing to do."""
        m = self.metrics
        if self._batch and self._decode_next:
            self._decode_next = False
            self._start(now, "decode", tuple(self._batch))
            return
        if not self._batch:
            new = self._pop_batch(now, self._batch_budget)
            if new:
                self._start(now, "prefill", tuple(new))
            else:
                self._engine_at = None
            return
        # Top of a decode-loop iteration: gauges describe the running batch, then queued
        # requests are chunked in (a prefill), then the whole batch decodes one token.
        reserved = sum(r.reserved for r in self._batch)
        m.set("tgi_batch_current_size", len(self._batch))
        m.set("tgi_batch_current_max_tokens", reserved)
        new = self._pop_batch(now, self._batch_budget - reserved)
        if new:
            m.inc("tgi_batch_concat", ("reason", _CONCAT_REASON))
            self._decode_next = True
            self._start(now, "prefill", tuple(new))
        else:
            self._start(now, "decode", tuple(self._batch))

    def _pop_batch(self, now: int, budget: int) -> list[_Request]:
        """TGI's ``Queue::next_batch``: take queued requests in order while they fit."""
        taken: list[_Request] = []
        prefill_tokens = 0
        while self._queue:
            request = self._queue[0]
            prefill_tokens += request.input_tokens
            if request.reserved > budget or prefill_tokens > self._prefill_budget:
                break
            self._queue.popleft()
            budget -= request.reserved
            request.start = now
            taken.append(request)
        if taken:
            self.metrics.observe("tgi_batch_next_size", len(taken))
            self.metrics.set("tgi_queue_size", len(self._queue))
        return taken

    def _start(self, now: int, method: str, entries: tuple[_Request, ...]) -> None:
        """Count an inference call, draw its timings and keep the engine busy until it ends.

        A prefill's time grows with the prompt tokens, a decode step's with the batch size.
        """
        self.metrics.inc("tgi_batch_inference_count", ("method", method))
        size, concat_ns = len(entries), None
        if method == "prefill":
            fails = any(r.fate == "generation" and r.fail_at == 0 for r in entries)
            forward, overhead = 15e6 + 30e3 * sum(r.input_tokens for r in entries), 2e6
        else:
            fails = any(r.fate == "generation" and 0 < r.fail_at <= r.generated for r in entries)
            forward, overhead = 12e6 + 6e5 * size, 4e5
            if self._concat_pending:  # batches chunked in since the last decode are merged first
                concat_ns = self._jitter(3e5 + 4e4 * size)
                self._concat_pending = False
        forward_ns, decode_ns, filter_ns = (
            self._jitter(b) for b in (forward, 40e3 + 8e3 * size, 80e3 + 12e3 * size)
        )
        total = forward_ns + decode_ns + filter_ns + self._jitter(overhead) + (concat_ns or 0)
        self._step = _Step(
            method, entries, fails, forward_ns, decode_ns, filter_ns, concat_ns, total
        )
        self._engine_at = now + total

    def _finish(self, step: _Step, now: int) -> None:
        """Apply a step that just ended: record it, send tokens, update the running batch."""
        m, method = self.metrics, ("method", step.method)
        if step.fails:  # the shard failed: every request the call held fails with generation
            m.inc("tgi_batch_inference_failure", method)
            for _ in step.entries:
                m.inc("tgi_request_failure", ("err", "generation"))
            if step.method == "decode":
                self._batch = []
        else:
            m.observe("tgi_batch_forward_duration", _secs(step.forward), method)
            m.observe("tgi_batch_decode_duration", _secs(step.decode), method)
            m.observe("tgi_batch_filter_duration", _secs(step.filter), method)
            if step.concat is not None:
                m.observe("tgi_batch_concat_duration", _secs(step.concat), method)
            m.observe("tgi_batch_inference_duration", _secs(step.total), method)
            m.inc("tgi_batch_inference_success", method)
            if step.method == "decode":
                self._batch = [r for r in self._batch if not self._emit(r, now)]
            else:  # each new request got its first token; the others join the batch
                survivors = [r for r in step.entries if not self._emit(r, now)]
                self._concat_pending = bool(survivors and self._batch)
                self._batch.extend(survivors)
        if not self._batch:  # the batch is gone: TGI resets the batch gauges
            self._decode_next = self._concat_pending = False
            m.set("tgi_batch_current_size", 0)
            m.set("tgi_batch_current_max_tokens", 0)

    def _emit(self, request: _Request, now: int) -> bool:
        """Send ``request`` its next token; True when it leaves the batch (done or dropped)."""
        m = self.metrics
        if request.fate == "dropped" and request.generated >= request.fail_at:
            m.inc("tgi_request_failure", ("err", "dropped"))  # the client went away
            return True
        request.generated += 1
        m.skipped_tokens[0.0] += 1  # no speculation: one token per step, none skipped
        if request.generated < request.target_tokens:
            return False
        if request.fate == "incomplete":
            m.inc("tgi_request_failure", ("err", "incomplete"))
            return True
        validation = request.queued - request.received
        queue = request.start - request.queued
        inference = now - request.start
        m.inc("tgi_request_success")
        m.observe("tgi_request_duration", _secs(now - request.received))
        m.observe("tgi_request_validation_duration", _secs(validation))
        m.observe("tgi_request_queue_duration", _secs(queue))
        m.observe("tgi_request_inference_duration", _secs(inference))
        # Duration / u32 in Rust: nanoseconds divided, rounded down.
        m.observe("tgi_request_mean_time_per_token_duration", _secs(inference // request.generated))
        m.observe("tgi_request_generated_tokens", request.generated)
        return True
