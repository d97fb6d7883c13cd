"""ServerConfig: every setting of the server, its defaults, and its own range checks.

Why it is separate: the settings are read by more than the server: :mod:`tgi_collector.config`
builds the config file, environment and flags from its fields and type hints, and
:mod:`tgi_collector._limits` checks them and turns them into grpc options. So they live apart
from the gRPC machinery that uses them. Re-exported by :mod:`tgi_collector.server`, which is
where callers import them from.
"""

from __future__ import annotations

from dataclasses import dataclass

from tgi_collector import _limits, auth, convert
from tgi_collector._metrics_http import parse_listen

__all__ = ["DEFAULT_MAX_RECEIVE_BYTES", "DEFAULT_MAX_SEND_BYTES", "ServerConfig"]

# Requests are a target and a few options: 1 MiB is generous and keeps hostile requests cheap.
DEFAULT_MAX_RECEIVE_BYTES = 1024 * 1024
# A snapshot with raw metrics of a real TGI is ~150 kB; huge label sets can be far larger.
DEFAULT_MAX_SEND_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the server listens, what it allows, and how it shuts down."""

    listen: str = "127.0.0.1:50051"
    grace_seconds: float = 5.0
    # host:port of the collector's own Prometheus metrics (HTTP); None: not served.
    metrics_listen: str | None = None
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    # -- scrape policy (tgi_collector.policy) --
    allow_link_local: bool = False
    allow_cloud_metadata: bool = False
    # CIDRs; when any allow list is set, a target must match one of them. Deny wins.
    allow_networks: tuple[str, ...] = ()
    deny_networks: tuple[str, ...] = ()
    # Host names as in the URL: exact ("tgi-0.internal") or a suffix pattern ("*.internal").
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()
    # (instance_id, url) pairs from the config file; callers may name them by instance id.
    registered_targets: tuple[tuple[str, str], ...] = ()
    # Only registered targets may be scraped.
    registered_only: bool = False
    # -- who may call --
    # A file with one bearer token per line (blank lines and # comments ignored).
    token_file: str | None = None
    # Whether health and reflection also need a token (off: probes and grpcurl list work).
    auth_health_and_reflection: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Set: clients must present a certificate signed by this CA (mutual TLS).
    tls_client_ca_file: str | None = None
    # -- server limits --
    max_concurrent_collects: int = 64
    max_subscribers_per_peer: int = 1_000
    max_concurrent_streams_per_connection: int = 1_000
    # Clients may ping at most this often without data; more is a ping flood and is cut off.
    keepalive_min_ping_interval_seconds: float = 10.0
    # Watch: a control plane wants seconds, not minutes; below 1 s a TGI scrape is mostly cost.
    default_watch_interval_seconds: float = 5.0
    min_watch_interval_seconds: float = 1.0
    max_watch_interval_seconds: float = 3600.0
    max_targets_per_watch: int = 1_000
    max_subscribers: int = 10_000
    # A subscriber that takes no message for this long is ended with RESOURCE_EXHAUSTED.
    stall_timeout_seconds: float = 30.0

    @property
    def watch_limits(self) -> convert.WatchLimits:
        """The Watch request bounds of this configuration."""
        return convert.WatchLimits(
            default_interval_seconds=self.default_watch_interval_seconds,
            min_interval_seconds=self.min_watch_interval_seconds,
            max_interval_seconds=self.max_watch_interval_seconds,
            max_targets=self.max_targets_per_watch,
        )

    @property
    def tls_files(self) -> auth.TlsFiles:
        """The TLS files of the gRPC port (none set: plaintext)."""
        return auth.TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range (reads no file).

        Limits must be positive (byte and stream counts at most 2**31 - 1, grpc's C ints),
        durations positive and finite, the Watch intervals ordered min <= default <= max,
        TLS settings complete (a cert needs its key; a client CA needs both), and the metrics
        address a TCP host:port (the metrics port is HTTP: no unix socket).
        """
        _limits.check_server_config(self)
        self.tls_files.check()
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
