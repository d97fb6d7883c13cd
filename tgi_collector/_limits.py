"""Server limits: concurrent Collect calls, Watch subscribers per peer, the grpc server options.

The counters here are used from the server's event loop only (no locks); each refusal is a
:class:`~tgi_collector.errors.CapacityError`, which the server answers ``RESOURCE_EXHAUSTED``
at once rather than queueing the call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import unquote

from tgi_collector.errors import CapacityError

if TYPE_CHECKING:
    from tgi_collector.server import ServerConfig

__all__ = [
    "COLLECT_LIMIT_MESSAGE",
    "MAX_PING_STRIKES",
    "ConcurrencyLimit",
    "PerKeyLimit",
    "RateLimitedLog",
    "check_server_config",
    "peer_host",
    "server_options",
]

logger = logging.getLogger(__name__)

COLLECT_LIMIT_MESSAGE = "too many concurrent Collect calls; retry later"

#: Pings a client may send too early before the server ends its connection (GOAWAY
#: ``too_many_pings``).
MAX_PING_STRIKES = 2

# grpc's integer channel arguments are C ints.
_MAX_GRPC_INT = 2**31 - 1


class RateLimitedLog:
    """Warnings of one kind, at most one line per ``every`` seconds.

    A flood of refusals must not become a flood of log lines: the lines left out are counted
    in the next one written.
    """

    def __init__(
        self,
        log: logging.Logger,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._every = every
        self._clock = clock
        self._last = -math.inf
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._last < self._every:
            self._suppressed += 1
            return
        self._last = now
        if self._suppressed:
            message += " (and %d more since the last such line)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        self._log.warning(message, *args)


class ConcurrencyLimit:
    """At most ``limit`` holders at once; one more raises CapacityError(``message``).

    ``setting`` names the limit in the (rate-limited) warning logged on refusal.
    """

    def __init__(self, limit: int, message: str, *, setting: str) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._message = message
        self._setting = setting
        self._log = RateLimitedLog(logger)
        self.active = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.active >= self.limit:
            self._log.warning("refused: %s (%s = %d)", self._message, self._setting, self.limit)
            raise CapacityError(self._message)
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class PerKeyLimit:
    """At most ``limit`` holders per key (a client address); keys with none are forgotten.

    ``setting`` names the limit in the (rate-limited) warning logged on refusal.
    """

    def __init__(self, limit: int, what: str, *, setting: str) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._what = what
        self._setting = setting
        self._log = RateLimitedLog(logger)
        self._counts: dict[str, int] = {}

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        """Keys holding at least one slot."""
        return len(self._counts)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        count = self._counts.get(key, 0)
        if count >= self.limit:
            self._log.warning(
                "refused: client %s already has %d %s (%s = %d)",
                key, count, self._what, self._setting, self.limit,
            )  # fmt: skip
            # The caller knows its own address: the message need not repeat it.
            raise CapacityError(f"at most {self.limit} {self._what} per client address")
        self._counts[key] = count + 1
        try:
            yield
        finally:
            left = self._counts[key] - 1
            if left:
                self._counts[key] = left
            else:
                del self._counts[key]


def peer_host(peer: str) -> str:
    """The client address of a gRPC peer string, without the port.

    ``ipv4:127.0.0.1:54321`` -> ``127.0.0.1``; ``ipv6:[::1]:54321`` (or its percent-encoded
    spelling ``ipv6:%5B::1%5D:54321``) -> ``::1``. Anything else (``unix:...``) is returned
    whole: every such peer shares one key per string.
    """
    scheme, _, rest = peer.partition(":")
    rest = unquote(rest)
    if scheme == "ipv4":
        return rest.rpartition(":")[0] or rest
    if scheme == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]")
    return peer


def _positive_int(config: ServerConfig, name: str, *, maximum: int | None = None) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")


def _positive_seconds(config: ServerConfig, name: str, *, zero_ok: bool = False) -> None:
    value = getattr(config, name)
    valid = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero_ok else value > 0)
    )
    if not valid:
        kind = "zero or positive" if zero_ok else "positive"
        raise ValueError(f"{name} must be a {kind} finite number of seconds, got {value!r}")


def check_server_config(config: ServerConfig) -> None:
    """ValueError naming the first field of ``config`` that is out of range (reads no file)."""
    for name in ("max_receive_bytes", "max_send_bytes", "max_concurrent_streams_per_connection"):
        _positive_int(config, name, maximum=_MAX_GRPC_INT)
    for name in (
        "max_concurrent_collects",
        "max_subscribers_per_peer",
        "max_subscribers",
        "max_targets_per_watch",
    ):
        _positive_int(config, name)
    _positive_seconds(config, "grace_seconds", zero_ok=True)
    for name in (
        "keepalive_min_ping_interval_seconds",
        "default_watch_interval_seconds",
        "min_watch_interval_seconds",
        "max_watch_interval_seconds",
        "stall_timeout_seconds",
    ):
        _positive_seconds(config, name)
    if config.keepalive_min_ping_interval_seconds * 1000 > _MAX_GRPC_INT:
        raise ValueError(
            "keepalive_min_ping_interval_seconds must be at most"
            f" {_MAX_GRPC_INT // 1000} s, got {config.keepalive_min_ping_interval_seconds!r}"
        )
    if config.min_watch_interval_seconds > config.max_watch_interval_seconds:
        raise ValueError(
            "min_watch_interval_seconds must not exceed max_watch_interval_seconds"
            f" ({config.min_watch_interval_seconds:g} > {config.max_watch_interval_seconds:g})"
        )
    if not (
        config.min_watch_interval_seconds
        <= config.default_watch_interval_seconds
        <= config.max_watch_interval_seconds
    ):
        raise ValueError(
            "default_watch_interval_seconds must be between min_watch_interval_seconds and"
            f" max_watch_interval_seconds, got {config.default_watch_interval_seconds:g}"
        )


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """The grpc server options (channel arguments) of ``config``'s limits."""
    return [
        ("grpc.max_receive_message_length", config.max_receive_bytes),
        ("grpc.max_send_message_length", config.max_send_bytes),
        # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls past it wait on the client's side.
        ("grpc.max_concurrent_streams", config.max_concurrent_streams_per_connection),
        # Keepalive enforcement: a client pinging more often than this without data gets a
        # strike; past MAX_PING_STRIKES the server sends GOAWAY (too_many_pings) and closes.
        # (The name is grpc core's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
        # "grpc.http2.min_recv_ping_interval_without_data_ms" does not exist and would be
        # silently ignored, as any unknown channel argument is.)
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            round(config.keepalive_min_ping_interval_seconds * 1000),
        ),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        # Pings with no call open are strikes too.
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.so_reuseport", 0),
    ]
