"""Checks of single text values of the configuration: listen addresses, CIDRs, host patterns.

Each check takes the text of one value (a whole setting, or one item of a list) and returns the
problem, worded without the key (``"x" is not host:port (...)``), or None when the value is
fine; :mod:`tgi_collector._config_values` puts the key path and the value's source in front.
They are plain functions of text so that the file, the variables and the flags share them and
say the same thing about the same value.
"""

from __future__ import annotations

import ipaddress
import json
import re

from tgi_collector.policy import TargetPolicy

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "check_host",
    "check_listen",
    "check_log_format",
    "check_log_level",
    "check_network",
    "check_tcp_listen",
    "quote",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def quote(text: str) -> str:
    """``text`` in double quotes, escaped as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def check_listen(text: str) -> str | None:
    """``host:port``, ``[v6]:port`` (port 0 = any free port), or ``unix:PATH``."""
    if text.startswith(("unix:", "unix-abstract:")):
        return None if text.partition(":")[2] else f"{quote(text)} names no socket path"
    example = 'like "127.0.0.1:50051", "0.0.0.0:50051" or "[::]:50051"'
    if text.startswith("["):
        close = text.find("]")
        host, sep, port = text[: close + 1], text[close + 1 : close + 2], text[close + 2 :]
        if close < 0:
            host, sep, port = text, "", ""
    else:
        host, sep, port = text.rpartition(":")
    if sep != ":" or not host:
        return f"{quote(text)} is not host:port ({example})"
    if host.startswith("["):
        try:
            valid_host = host.endswith("]") and bool(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            valid_host = False
        if not valid_host:
            return f"{quote(host)} is not a bracketed IPv6 address ({example})"
    elif ":" in host:
        return f"{quote(text)}: an IPv6 address needs brackets, like [::1]:50051"
    elif not _HOST_NAME.fullmatch(host):
        return f"{quote(host)} is not a host name or address ({example})"
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return f"port {quote(port)} is not a number from 0 to 65535 ({example})"
    return None


def check_tcp_listen(text: str) -> str | None:
    """:func:`check_listen` for an HTTP port: ``host:port`` or ``[v6]:port``, no unix socket."""
    if text.startswith(("unix:", "unix-abstract:")):
        return f"{quote(text)} is a unix socket: this port is TCP (host:port, like 127.0.0.1:9464)"
    return check_listen(text)


def check_network(text: str) -> str | None:
    """A CIDR without host bits set (``10.0.0.0/8``, not ``10.1.0.0/8``)."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{quote(text)} is not a CIDR (like 10.0.0.0/8 or fd00::/8)"
        return f"{quote(text)} has host bits set (did you mean {quote(str(network))}?)"
    return None


def check_host(text: str) -> str | None:
    """A host name or ``*.suffix`` pattern of the scrape policy's allow and deny lists."""
    # The policy's own check, so that the two cannot disagree.
    try:
        TargetPolicy(allow_hosts=[text])
    except ValueError as exc:
        return str(exc).removeprefix("allow_hosts: ")
    return None


def check_log_level(text: str) -> str | None:
    """One of :data:`LOG_LEVELS`, in any case."""
    if text.upper() in LOG_LEVELS:
        return None
    return f"{quote(text)} is not a log level (one of {', '.join(LOG_LEVELS)})"


def check_log_format(text: str) -> str | None:
    """One of :data:`LOG_FORMATS`, in any case."""
    if text.lower() in LOG_FORMATS:
        return None
    return f"{quote(text)} is not a log format (one of {', '.join(LOG_FORMATS)})"
