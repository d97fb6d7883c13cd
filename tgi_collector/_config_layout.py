"""Where each setting lives: its key path in the TOML file, its flag, help text and checks.

:data:`LAYOUT` places the fields of :class:`~tgi_collector.server.ServerConfig` by name; the
type and default of each come from the dataclass itself (see
:mod:`tgi_collector._config_settings`), so this table holds only what the dataclass cannot say.
A field missing here still works through a fallback place, and ``tests/test_config.py`` fails
until it is placed. :data:`GLOBAL_PLACES` adds the two settings that are not ``ServerConfig``
fields, ``log.level`` and ``log.format`` (global options of every command).

Why a table rather than metadata on the dataclass fields: the server should not know about
TOML keys, flags or help texts, and one table reads as the map of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tgi_collector._config_checks import (
    check_host,
    check_listen,
    check_log_format,
    check_log_level,
    check_network,
    check_tcp_listen,
)

__all__ = [
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_LOG_LEVEL",
    "GLOBAL_DEST",
    "GLOBAL_PLACES",
    "LAYOUT",
    "LOG_FORMAT_PLACE",
    "LOG_PLACE",
    "SECTIONS",
    "Place",
]

DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_LOG_FORMAT = "text"


@dataclass(frozen=True, slots=True)
class Place:
    """A setting's key path, flag, help text, metavar and the checks of its values."""

    key: str
    flag: str
    help: str
    metavar: str | None = None
    # Numbers must be positive (ints >= 1, floats > 0); zero_ok: >= 0.
    zero_ok: bool = False
    # Strings: the check of the value; lists: the check of each item.
    check: Callable[[str], str | None] | None = None
    # A file path: relative to the config file's directory there, and it must be readable.
    path: bool = False


#: ServerConfig field -> its place. The order is the order of ``check-config`` output.
LAYOUT: dict[str, Place] = {
    "listen": Place(
        "listen",
        "--listen",
        "address to listen on, host:port (0.0.0.0:50051 for"
        " all interfaces, port 0 for any free one)",
        "HOST:PORT",
        check=check_listen,
    ),
    "grace_seconds": Place(
        "grace_seconds",
        "--grace",
        "seconds in-flight calls get on shutdown",
        "SECONDS",
        zero_ok=True,
    ),
    # [metrics]
    "metrics_listen": Place(
        "metrics.listen",
        "--metrics-listen",
        "serve the collector's own Prometheus metrics over HTTP on host:port"
        " (127.0.0.1:9464; port 0 for any free one)",
        "HOST:PORT",
        check=check_tcp_listen,
    ),
    # [watch]
    "default_watch_interval_seconds": Place(
        "watch.default_interval_seconds",
        "--default-watch-interval",
        "interval of a Watch that asks for 0",
        "SECONDS",
    ),
    "min_watch_interval_seconds": Place(
        "watch.min_interval_seconds",
        "--min-watch-interval",
        "smallest interval a Watch may ask for",
        "SECONDS",
    ),
    "max_watch_interval_seconds": Place(
        "watch.max_interval_seconds",
        "--max-watch-interval",
        "largest interval a Watch may ask for",
        "SECONDS",
    ),
    "max_targets_per_watch": Place(
        "watch.max_targets", "--max-targets-per-watch", "targets in one Watch", "N"
    ),
    "max_subscribers": Place(
        "watch.max_subscribers", "--max-subscribers", "open Watch streams in total", "N"
    ),
    "max_subscribers_per_peer": Place(
        "watch.max_subscribers_per_peer",
        "--max-subscribers-per-peer",
        "open Watch streams of one client address",
        "N",
    ),
    "stall_timeout_seconds": Place(
        "watch.stall_timeout_seconds",
        "--stall-timeout",
        "end a subscriber that reads nothing for this long",
        "SECONDS",
    ),
    # [policy]
    "allow_link_local": Place(
        "policy.allow_link_local",
        "--allow-link-local",
        "allow link-local targets (refused by default: cloud metadata lives there)",
    ),
    "allow_cloud_metadata": Place(
        "policy.allow_cloud_metadata",
        "--allow-cloud-metadata",
        "allow the well-known cloud metadata addresses (169.254.169.254 also needs"
        " --allow-link-local)",
    ),
    "allow_networks": Place(
        "policy.allow_networks",
        "--allow-network",
        "only targets in these networks (repeat the flag for more)",
        "CIDR",
        check=check_network,
    ),
    "deny_networks": Place(
        "policy.deny_networks",
        "--deny-network",
        "never targets in these networks; deny wins (repeatable)",
        "CIDR",
        check=check_network,
    ),
    "allow_hosts": Place(
        "policy.allow_hosts",
        "--allow-host",
        "only these host names, exact or *.suffix (repeatable)",
        "HOST",
        check=check_host,
    ),
    "deny_hosts": Place(
        "policy.deny_hosts",
        "--deny-host",
        "never these host names, exact or *.suffix (repeatable)",
        "HOST",
        check=check_host,
    ),
    "registered_only": Place(
        "policy.registered_only",
        "--registered-only",
        "scrape registered targets only (policy.targets)",
    ),
    "registered_targets": Place(
        "policy.targets",
        "--registered-target",
        "register a target callers may name by instance id (repeatable)",
        "ID=URL",
    ),
    # [auth]
    "token_file": Place(
        "auth.token_file",
        "--token-file",
        "file of bearer tokens, one per line; set: calls need one",
        "PATH",
        path=True,
    ),
    "auth_health_and_reflection": Place(
        "auth.health_and_reflection",
        "--auth-health-and-reflection",
        "health and reflection need a token too",
    ),
    # [tls]
    "tls_cert_file": Place(
        "tls.cert_file", "--tls-cert", "PEM certificate chain: serve TLS", "PATH", path=True
    ),
    "tls_key_file": Place(
        "tls.key_file", "--tls-key", "PEM private key of --tls-cert", "PATH", path=True
    ),
    "tls_client_ca_file": Place(
        "tls.client_ca_file",
        "--tls-client-ca",
        "PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
        "PATH",
        path=True,
    ),
    # [limits]
    "max_receive_bytes": Place(
        "limits.max_receive_bytes", "--max-receive-bytes", "largest request message", "BYTES"
    ),
    "max_send_bytes": Place(
        "limits.max_send_bytes", "--max-send-bytes", "largest response message", "BYTES"
    ),
    "max_concurrent_collects": Place(
        "limits.max_concurrent_collects",
        "--max-concurrent-collects",
        "Collect calls served at once",
        "N",
    ),
    "max_concurrent_streams_per_connection": Place(
        "limits.max_concurrent_streams_per_connection",
        "--max-concurrent-streams-per-connection",
        "HTTP/2 streams of one connection",
        "N",
    ),
    "keepalive_min_ping_interval_seconds": Place(
        "limits.keepalive_min_ping_interval_seconds",
        "--keepalive-min-ping-interval",
        "clients pinging more often without data are cut off",
        "SECONDS",
    ),
}

LOG_PLACE = Place("log.level", "--log-level", "log level", "LEVEL", check=check_log_level)
LOG_FORMAT_PLACE = Place(
    "log.format", "--log-format", "log line format", "FORMAT", check=check_log_format
)
#: The settings that are not ServerConfig fields: global options of every command, each with
#: its argparse dest and default.
GLOBAL_PLACES: tuple[tuple[Place, str, str], ...] = (
    (LOG_PLACE, "log_level", DEFAULT_LOG_LEVEL),
    (LOG_FORMAT_PLACE, "log_format", DEFAULT_LOG_FORMAT),
)
GLOBAL_DEST = {place.key: dest for place, dest, _ in GLOBAL_PLACES}

# Section order in the file and in check-config output; "" is the top level.
SECTIONS = ("", "metrics", "watch", "policy", "auth", "tls", "limits", "log")
