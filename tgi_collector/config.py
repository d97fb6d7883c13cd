"""Configuration of ``tgi-collector serve``: a TOML file, environment variables and flags.

Precedence, highest first::

    command-line flag  >  environment variable  >  config file  >  built-in default

A flag or variable overrides only when it is given. A list given by a flag or a variable
replaces the list from below whole (lists are never merged).

**Settings.** The settings are the fields of :class:`~tgi_collector.server.ServerConfig`, read
with :func:`dataclasses.fields` (so a new field is a setting at once, with its type and default),
plus ``log.level`` and ``log.format``. :data:`_LAYOUT` places each field in the file (its key
path, such as ``watch.max_subscribers``), names its flag and gives its help text and checks. A
field missing
from the layout still works, as a top-level key named like the field and a flag
``--field-name``; ``tests/test_config.py`` fails until it is placed, so that fallback never ships.

**Names.** The environment variable of key ``section.name`` is ``TGI_COLLECTOR_SECTION_NAME``
(``watch.max_subscribers`` -> ``TGI_COLLECTOR_WATCH_MAX_SUBSCRIBERS``). Lists are
comma-separated; booleans are ``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``);
registered targets are ``ID=URL,ID=URL``; an empty value unsets an optional path.
``TGI_COLLECTOR_CONFIG`` names the config file when ``--config`` is not given. Other variables
with the prefix are ignored (Kubernetes defines ``TGI_COLLECTOR_PORT`` and the like for a service
of that name), but a near miss of a setting's variable is reported as a warning.

**Paths** (token and TLS files) given in the file are relative to the file's directory; from a
variable or a flag, to the working directory. ``~`` is expanded. Each must name a readable file.

**Errors.** Everything is checked before anything starts: the file is read and parsed, unknown
keys are refused (with the closest known key as a hint), types and ranges are checked, and so are
the relations between settings (``min <= default <= max`` Watch interval, TLS key with
certificate, ``registered_only`` with registered targets). Every problem found is reported in
one :class:`~tgi_collector.errors.ConfigError`, one line each, naming the key path and where the
value came from, e.g. ``policy.allow_networks[2]: "10.0.0.0/33" is not a CIDR (in
/etc/tgi-collector.toml)``.

**Secrets.** Bearer tokens are never part of the configuration, only the path of the file that
holds them (``auth.token_file``); nothing here opens that file, so printing the effective
configuration shows paths and never file contents. A ``token`` key is refused with that advice.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import inspect
import ipaddress
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tgi_collector.errors import CollectorError, ConfigError, InvalidRequestError
from tgi_collector.policy import TargetPolicy
from tgi_collector.registry import TargetRegistry
from tgi_collector.server import ServerConfig
from tgi_collector.targets import validate_instance_id, validate_url

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SETTINGS",
    "UNSUPPORTED_FIELDS",
    "EffectiveConfig",
    "Kind",
    "Setting",
    "Source",
    "Value",
    "add_flags",
    "config_path",
    "flags_from_args",
    "load_config",
    "resolve_log_format",
    "resolve_log_level",
]

ENV_PREFIX = "TGI_COLLECTOR_"
#: Names the config file when ``--config`` is not given.
CONFIG_ENV = "TGI_COLLECTOR_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "INFO"
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"

Source = Literal["default", "file", "env", "flag"]

# gRPC channel arguments are C ints.
_MAX_INT = 2**31 - 1
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_SECRET_KEYS = frozenset({"token", "tokens", "bearer_token", "password", "secret"})


class Kind(enum.Enum):
    """The value type of a setting, from its ``ServerConfig`` annotation."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    STR_LIST = "list of str"  # tuple[str, ...]
    TARGETS = "list of (instance_id, url)"  # tuple[tuple[str, str], ...]


# -- checks of single values: each returns the problem (without the key) or None ---------------


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def _check_listen(text: str) -> str | None:
    """``host:port``, ``[v6]:port`` (port 0 = any free port), or ``unix:PATH``."""
    if text.startswith(("unix:", "unix-abstract:")):
        return None if text.partition(":")[2] else f"{_quote(text)} names no socket path"
    example = 'like "127.0.0.1:50051", "0.0.0.0:50051" or "[::]:50051"'
    if text.startswith("["):
        close = text.find("]")
        host, sep, port = text[: close + 1], text[close + 1 : close + 2], text[close + 2 :]
        if close < 0:
            host, sep, port = text, "", ""
    else:
        host, sep, port = text.rpartition(":")
    if sep != ":" or not host:
        return f"{_quote(text)} is not host:port ({example})"
    if host.startswith("["):
        try:
            valid_host = host.endswith("]") and bool(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            valid_host = False
        if not valid_host:
            return f"{_quote(host)} is not a bracketed IPv6 address ({example})"
    elif ":" in host:
        return f"{_quote(text)}: an IPv6 address needs brackets, like [::1]:50051"
    elif not _HOST_NAME.fullmatch(host):
        return f"{_quote(host)} is not a host name or address ({example})"
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return f"port {_quote(port)} is not a number from 0 to 65535 ({example})"
    return None


def _check_network(text: str) -> str | None:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{_quote(text)} is not a CIDR (like 10.0.0.0/8 or fd00::/8)"
        return f"{_quote(text)} has host bits set (did you mean {_quote(str(network))}?)"
    return None


def _check_host(text: str) -> str | None:
    # The policy's own check, so that the two cannot disagree.
    try:
        TargetPolicy(allow_hosts=[text])
    except ValueError as exc:
        return str(exc).removeprefix("allow_hosts: ")
    return None


def _check_log_level(text: str) -> str | None:
    if text.upper() in LOG_LEVELS:
        return None
    return f"{_quote(text)} is not a log level (one of {', '.join(LOG_LEVELS)})"


def _check_log_format(text: str) -> str | None:
    if text.lower() in LOG_FORMATS:
        return None
    return f"{_quote(text)} is not a log format (one of {', '.join(LOG_FORMATS)})"


# -- the layout: where each ServerConfig field lives in the file, its flag and its checks ------


@dataclass(frozen=True, slots=True)
class _Place:
    key: str
    flag: str
    help: str
    metavar: str | None = None
    # Numbers must be positive (ints >= 1, floats > 0); zero_ok: >= 0.
    zero_ok: bool = False
    # Strings: the check of the value; lists: the check of each item.
    check: Callable[[str], str | None] | None = None
    path: bool = False


#: ServerConfig field -> its place. The order is the order of ``check-config`` output.
_LAYOUT: dict[str, _Place] = {
    "listen": _Place(
        "listen",
        "--listen",
        "address to listen on, host:port (0.0.0.0:50051 for"
        " all interfaces, port 0 for any free one)",
        "HOST:PORT",
        check=_check_listen,
    ),
    "grace_seconds": _Place(
        "grace_seconds",
        "--grace",
        "seconds in-flight calls get on shutdown",
        "SECONDS",
        zero_ok=True,
    ),
    # [metrics]
    "metrics_listen": _Place(
        "metrics.listen",
        "--metrics-listen",
        "serve the collector's own Prometheus metrics over HTTP on host:port"
        " (127.0.0.1:9464; port 0 for any free one)",
        "HOST:PORT",
        check=_check_listen,
    ),
    # [watch]
    "default_watch_interval_seconds": _Place(
        "watch.default_interval_seconds",
        "--default-watch-interval",
        "interval of a Watch that asks for 0",
        "SECONDS",
    ),
    "min_watch_interval_seconds": _Place(
        "watch.min_interval_seconds",
        "--min-watch-interval",
        "smallest interval a Watch may ask for",
        "SECONDS",
    ),
    "max_watch_interval_seconds": _Place(
        "watch.max_interval_seconds",
        "--max-watch-interval",
        "largest interval a Watch may ask for",
        "SECONDS",
    ),
    "max_targets_per_watch": _Place(
        "watch.max_targets", "--max-targets-per-watch", "targets in one Watch", "N"
    ),
    "max_subscribers": _Place(
        "watch.max_subscribers", "--max-subscribers", "open Watch streams in total", "N"
    ),
    "max_subscribers_per_peer": _Place(
        "watch.max_subscribers_per_peer",
        "--max-subscribers-per-peer",
        "open Watch streams of one client address",
        "N",
    ),
    "stall_timeout_seconds": _Place(
        "watch.stall_timeout_seconds",
        "--stall-timeout",
        "end a subscriber that reads nothing for this long",
        "SECONDS",
    ),
    # [policy]
    "allow_link_local": _Place(
        "policy.allow_link_local",
        "--allow-link-local",
        "allow link-local targets (refused by default: cloud metadata lives there)",
    ),
    "allow_cloud_metadata": _Place(
        "policy.allow_cloud_metadata",
        "--allow-cloud-metadata",
        "allow the well-known cloud metadata addresses (169.254.169.254 also needs"
        " --allow-link-local)",
    ),
    "allow_networks": _Place(
        "policy.allow_networks",
        "--allow-network",
        "only targets in these networks (repeat the flag for more)",
        "CIDR",
        check=_check_network,
    ),
    "deny_networks": _Place(
        "policy.deny_networks",
        "--deny-network",
        "never targets in these networks; deny wins (repeatable)",
        "CIDR",
        check=_check_network,
    ),
    "allow_hosts": _Place(
        "policy.allow_hosts",
        "--allow-host",
        "only these host names, exact or *.suffix (repeatable)",
        "HOST",
        check=_check_host,
    ),
    "deny_hosts": _Place(
        "policy.deny_hosts",
        "--deny-host",
        "never these host names, exact or *.suffix (repeatable)",
        "HOST",
        check=_check_host,
    ),
    "registered_only": _Place(
        "policy.registered_only",
        "--registered-only",
        "scrape registered targets only (policy.targets)",
    ),
    "registered_targets": _Place(
        "policy.targets",
        "--registered-target",
        "register a target callers may name by instance id (repeatable)",
        "ID=URL",
    ),
    # [auth]
    "token_file": _Place(
        "auth.token_file",
        "--token-file",
        "file of bearer tokens, one per line; set: calls need one",
        "PATH",
        path=True,
    ),
    "auth_health_and_reflection": _Place(
        "auth.health_and_reflection",
        "--auth-health-and-reflection",
        "health and reflection need a token too",
    ),
    # [tls]
    "tls_cert_file": _Place(
        "tls.cert_file", "--tls-cert", "PEM certificate chain: serve TLS", "PATH", path=True
    ),
    "tls_key_file": _Place(
        "tls.key_file", "--tls-key", "PEM private key of --tls-cert", "PATH", path=True
    ),
    "tls_client_ca_file": _Place(
        "tls.client_ca_file",
        "--tls-client-ca",
        "PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
        "PATH",
        path=True,
    ),
    # [limits]
    "max_receive_bytes": _Place(
        "limits.max_receive_bytes", "--max-receive-bytes", "largest request message", "BYTES"
    ),
    "max_send_bytes": _Place(
        "limits.max_send_bytes", "--max-send-bytes", "largest response message", "BYTES"
    ),
    "max_concurrent_collects": _Place(
        "limits.max_concurrent_collects",
        "--max-concurrent-collects",
        "Collect calls served at once",
        "N",
    ),
    "max_concurrent_streams_per_connection": _Place(
        "limits.max_concurrent_streams_per_connection",
        "--max-concurrent-streams-per-connection",
        "HTTP/2 streams of one connection",
        "N",
    ),
    "keepalive_min_ping_interval_seconds": _Place(
        "limits.keepalive_min_ping_interval_seconds",
        "--keepalive-min-ping-interval",
        "clients pinging more often without data are cut off",
        "SECONDS",
    ),
}

_LOG_PLACE = _Place("log.level", "--log-level", "log level", "LEVEL", check=_check_log_level)
_LOG_FORMAT_PLACE = _Place(
    "log.format", "--log-format", "log line format", "FORMAT", check=_check_log_format
)
#: The settings that are not ServerConfig fields: global options of every command, each with
#: its argparse dest and default.
_GLOBAL_PLACES: tuple[tuple[_Place, str, str], ...] = (
    (_LOG_PLACE, "log_level", DEFAULT_LOG_LEVEL),
    (_LOG_FORMAT_PLACE, "log_format", DEFAULT_LOG_FORMAT),
)
_GLOBAL_DEST = {place.key: dest for place, dest, _ in _GLOBAL_PLACES}

# Section order in the file and in check-config output; "" is the top level.
_SECTIONS = ("", "metrics", "watch", "policy", "auth", "tls", "limits", "log")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its key path in the file, its variable, its flag, type and default."""

    key: str
    field: str | None  # the ServerConfig field; None for log.level
    kind: Kind
    optional: bool  # ``X | None``: may be unset
    default: object
    env: str
    flag: str
    help: str
    metavar: str | None
    placed: bool  # False: not in _LAYOUT, placed by the fallback
    zero_ok: bool = False
    check: Callable[[str], str | None] | None = None
    path: bool = False

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]


def _kind_of(annotation: object) -> tuple[Kind, bool] | None:
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            return None
        annotation, optional = rest[0], True
    for simple, kind in ((bool, Kind.BOOL), (int, Kind.INT), (float, Kind.FLOAT), (str, Kind.STR)):
        if annotation is simple:
            return kind, optional
    if annotation == tuple[str, ...] and not optional:
        return Kind.STR_LIST, False
    if annotation == tuple[tuple[str, str], ...] and not optional:
        return Kind.TARGETS, False
    return None


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _build_settings() -> tuple[tuple[Setting, ...], tuple[str, ...]]:
    hints = typing.get_type_hints(ServerConfig)
    settings: list[Setting] = []
    unsupported: list[str] = []
    for field in dataclasses.fields(ServerConfig):
        kind = _kind_of(hints[field.name])
        if field.default is not dataclasses.MISSING:
            default: object = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        if kind is None or default is dataclasses.MISSING:
            unsupported.append(field.name)
            continue
        place = _LAYOUT.get(field.name)
        placed = place is not None
        if place is None:
            place = _Place(field.name, "--" + field.name.replace("_", "-"), field.name)
        settings.append(
            Setting(
                key=place.key,
                field=field.name,
                kind=kind[0],
                optional=kind[1],
                default=default,
                env=_env_name(place.key),
                flag=place.flag,
                help=place.help,
                metavar=place.metavar,
                placed=placed,
                zero_ok=place.zero_ok,
                check=place.check,
                path=place.path,
            )
        )
    settings.extend(
        Setting(
            key=place.key,
            field=None,
            kind=Kind.STR,
            optional=False,
            default=default,
            env=_env_name(place.key),
            flag=place.flag,
            help=place.help,
            metavar=place.metavar,
            placed=True,
            check=place.check,
        )
        for place, _, default in _GLOBAL_PLACES
    )
    layout_order = {key: index for index, key in enumerate(place.key for place in _LAYOUT.values())}

    def order(setting: Setting) -> tuple[int, int, int]:
        section = _SECTIONS.index(setting.section) if setting.section in _SECTIONS else 99
        # Within a section: scalars and lists first, then arrays of tables (TOML needs them last).
        return (
            section,
            setting.kind is Kind.TARGETS,
            layout_order.get(setting.key, len(layout_order)),
        )

    settings.sort(key=order)
    for attribute in ("key", "env", "flag"):
        names = [getattr(setting, attribute) for setting in settings]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:  # pragma: no cover - a mistake in _LAYOUT, caught by the tests at import
            raise RuntimeError(f"config settings share a {attribute}: {sorted(duplicates)}")
    return tuple(settings), tuple(unsupported)


#: Every setting, in file order. ``UNSUPPORTED_FIELDS``: ServerConfig fields of a type this
#: module cannot read (they keep their default; a test keeps this empty).
SETTINGS, UNSUPPORTED_FIELDS = _build_settings()
_BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}
_BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}
# Every table that holds settings, and every table above one ("policy" for "policy.targets").
_TABLES: frozenset[str] = frozenset(
    ".".join(parts[:end])
    for parts in (setting.key.split(".") for setting in SETTINGS)
    for end in range(1, len(parts))
)


# -- values and where they came from ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Value:
    """A setting's effective value and where it came from."""

    value: object
    source: Source
    origin: str = ""  # the file's path, the variable's name or the flag; "" for a default

    def describe(self) -> str:
        """``default``, ``file``, ``env NAME`` or ``flag --name``."""
        if self.source in ("env", "flag"):
            return f"{self.source} {self.origin}"
        return self.source

    def where(self) -> str:
        """For error messages: ``in FILE``, ``from environment variable NAME``, ..."""
        if self.source == "file":
            return f"in {self.origin}"
        if self.source == "env":
            return f"from environment variable {self.origin}"
        if self.source == "flag":
            return f"from flag {self.origin}"
        return "default"


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, key: str, reason: str, where: str) -> None:
        self.lines.append(f"{key}: {reason} ({where})")


def _describe_toml(raw: object) -> str:
    if isinstance(raw, bool):
        return f"the boolean {str(raw).lower()}"
    if isinstance(raw, int):
        return f"the integer {raw}"
    if isinstance(raw, float):
        return f"the number {raw!r}"
    if isinstance(raw, str):
        return f"the string {_quote(raw)}"
    if isinstance(raw, list):
        return "an array"
    if isinstance(raw, dict):
        return "a table"
    return f"a {type(raw).__name__}"


def _kind_hint(setting: Setting) -> str:
    return {
        Kind.BOOL: "must be true or false",
        Kind.INT: "must be an integer",
        Kind.FLOAT: "must be a number",
        Kind.STR: "must be a string",
        Kind.STR_LIST: "must be an array of strings",
        Kind.TARGETS: 'must be an array of tables ([[policy.targets]] instance_id = "..."'
        ' url = "...")',
    }[setting.kind]


_TARGET_KEYS = ("instance_id", "url")


def _from_toml(setting: Setting, raw: object, problems: _Problems, where: str) -> object:
    """A value from the file, type-checked; ``dataclasses.MISSING`` after a problem."""
    bad = dataclasses.MISSING
    kind = setting.kind
    if kind is Kind.BOOL and isinstance(raw, bool):
        return raw
    if kind is Kind.INT and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is Kind.FLOAT and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind is Kind.STR and isinstance(raw, str):
        return raw
    if kind is Kind.STR_LIST and isinstance(raw, list):
        items: list[str] = []
        for index, item in enumerate(raw):
            if not isinstance(item, str):
                problems.add(
                    f"{setting.key}[{index}]",
                    f"must be a string, not {_describe_toml(item)}",
                    where,
                )
                return bad
            items.append(item)
        return tuple(items)
    if kind is Kind.TARGETS and isinstance(raw, list):
        targets: list[tuple[str, str]] = []
        ok = True
        for index, item in enumerate(raw):
            at = f"{setting.key}[{index}]"
            if not isinstance(item, dict):
                problems.add(at, f"must be a table, not {_describe_toml(item)}", where)
                ok = False
                continue
            for name in item:
                if name not in _TARGET_KEYS:
                    hint = difflib.get_close_matches(name, _TARGET_KEYS, n=1, cutoff=0.6)
                    suffix = f" (did you mean {hint[0]}?)" if hint else ""
                    problems.add(f"{at}.{name}", f"unknown key{suffix}", where)
                    ok = False
            values = []
            for name in _TARGET_KEYS:
                value = item.get(name)
                if not isinstance(value, str):
                    reason = (
                        "is missing"
                        if value is None
                        else (f"must be a string, not {_describe_toml(value)}")
                    )
                    problems.add(f"{at}.{name}", reason, where)
                    ok = False
                values.append(value if isinstance(value, str) else "")
            targets.append((values[0], values[1]))
        return tuple(targets) if ok else bad
    problems.add(setting.key, f"{_kind_hint(setting)}, not {_describe_toml(raw)}", where)
    return bad


def _from_text(
    setting: Setting, raw: object, problems: _Problems, where: str, *, split: bool
) -> object:
    """A value from a variable (text; lists comma-separated) or a flag (argparse's value)."""
    bad = dataclasses.MISSING
    kind = setting.kind
    if isinstance(raw, bool):  # a boolean flag
        return raw
    if kind in (Kind.STR_LIST, Kind.TARGETS):
        if isinstance(raw, str):
            items = [part.strip() for part in raw.split(",")] if split else [raw.strip()]
        else:
            items = [str(part).strip() for part in typing.cast(Iterable[object], raw)]
        items = [item for item in items if item]
        if kind is Kind.STR_LIST:
            return tuple(items)
        targets: list[tuple[str, str]] = []
        for index, item in enumerate(items):
            instance_id, sep, url = item.partition("=")
            if not sep or "://" in instance_id:
                problems.add(f"{setting.key}[{index}]", f"{_quote(item)} is not ID=URL", where)
                return bad
            targets.append((instance_id.strip(), url.strip()))
        return tuple(targets)
    text = str(raw).strip()
    if setting.optional and not text:
        return None  # an empty value unsets
    if kind is Kind.BOOL:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        problems.add(
            setting.key,
            f"must be true or false (or 1/0, yes/no, on/off), not {_quote(text)}",
            where,
        )
        return bad
    if kind is Kind.INT:
        try:
            return int(text)
        except ValueError:
            problems.add(setting.key, f"must be an integer, not {_quote(text)}", where)
            return bad
    if kind is Kind.FLOAT:
        try:
            return float(text)
        except ValueError:
            problems.add(setting.key, f"must be a number, not {_quote(text)}", where)
            return bad
    return text


def _check(setting: Setting, value: object, problems: _Problems, where: str) -> bool:
    """Range and format checks, the same for every source. False after a problem."""
    count = len(problems.lines)
    key = setting.key
    if value is None:
        pass
    elif setting.kind is Kind.INT:
        assert isinstance(value, int)
        low = 0 if setting.zero_ok else 1
        if not low <= value <= _MAX_INT:
            problems.add(key, f"must be from {low} to {_MAX_INT}, not {value}", where)
    elif setting.kind is Kind.FLOAT:
        assert isinstance(value, float)
        if not math.isfinite(value) or value < 0 or (value == 0 and not setting.zero_ok):
            bound = ">= 0" if setting.zero_ok else "> 0"
            problems.add(key, f"must be a finite number {bound}, not {value:g}", where)
    elif setting.kind is Kind.STR:
        assert isinstance(value, str)
        if not value and not setting.optional:
            problems.add(key, "must not be empty", where)
        elif not value:
            problems.add(key, "must not be empty (leave it out for none)", where)
        elif setting.check is not None and (reason := setting.check(value)) is not None:
            problems.add(key, reason, where)
        elif setting.path:
            if not os.path.isfile(value):
                problems.add(key, f"no such file: {value}", where)
            elif not os.access(value, os.R_OK):
                problems.add(key, f"file is not readable: {value}", where)
    elif setting.kind is Kind.STR_LIST:
        for index, item in enumerate(typing.cast(tuple[str, ...], value)):
            if not item:
                problems.add(f"{key}[{index}]", "must not be empty", where)
            elif setting.check is not None and (reason := setting.check(item)) is not None:
                problems.add(f"{key}[{index}]", reason, where)
    elif setting.kind is Kind.TARGETS:
        first: dict[str, int] = {}
        for index, (instance_id, url) in enumerate(typing.cast(tuple[tuple[str, str], ...], value)):
            at = f"{key}[{index}]"
            try:
                if not instance_id:
                    raise InvalidRequestError("instance_id", "must not be empty")
                validate_instance_id(instance_id, field="instance_id")
            except InvalidRequestError as exc:
                problems.add(f"{at}.instance_id", str(exc).removeprefix("instance_id: "), where)
            else:
                if instance_id in first:
                    problems.add(
                        f"{at}.instance_id",
                        f"{_quote(instance_id)} is registered twice"
                        f" (also {key}[{first[instance_id]}])",
                        where,
                    )
                first.setdefault(instance_id, index)
            try:
                validate_url(url, field="url")
            except InvalidRequestError as exc:
                problems.add(f"{at}.url", str(exc).removeprefix("url: "), where)
    return len(problems.lines) == count


def _normalize(setting: Setting, value: object) -> object:
    """The value as ServerConfig gets it: URLs completed, the log level in capitals."""
    if setting.kind is Kind.TARGETS:
        return tuple(
            (instance_id, validate_url(url, field="url"))
            for instance_id, url in typing.cast(tuple[tuple[str, str], ...], value)
        )
    if setting.key == _LOG_PLACE.key and isinstance(value, str):
        return value.upper()
    if setting.key == _LOG_FORMAT_PLACE.key and isinstance(value, str):
        return value.lower()
    return value


# -- reading the sources -------------------------------------------------------------------------


def _suggest(path: str) -> str:
    """`` (did you mean KEY?)`` for the closest known key or table, or ``""``."""
    names = [setting.key for setting in SETTINGS] + sorted(_TABLES)
    match = difflib.get_close_matches(path, names, n=1, cutoff=0.6)
    if not match:
        # A known name in the wrong table, or a ServerConfig field name used as a key.
        aliases: dict[str, str] = {}
        for setting in SETTINGS:
            aliases.setdefault(setting.name, setting.key)
            if setting.field is not None:
                aliases.setdefault(setting.field, setting.key)
        leaf = difflib.get_close_matches(path.rpartition(".")[2], list(aliases), n=1, cutoff=0.75)
        match = [aliases[leaf[0]]] if leaf else []
    return f" (did you mean {match[0]}?)" if match and match[0] != path else ""


def _walk(
    table: Mapping[str, Any],
    prefix: str,
    found: dict[str, object],
    problems: _Problems,
    where: str,
) -> None:
    for name, raw in table.items():
        path = f"{prefix}.{name}" if prefix else name
        if path in _BY_KEY:
            found[path] = raw
        elif path in _TABLES:
            if isinstance(raw, dict):
                _walk(raw, path, found, problems, where)
            else:
                problems.add(path, f"must be a table ([{path}]), not {_describe_toml(raw)}", where)
        elif name.lower() in _SECRET_KEYS:
            problems.add(
                path,
                "secrets are never written in the configuration: put the tokens in a file, one"
                " per line, and set auth.token_file to its path",
                where,
            )
        elif isinstance(raw, dict):
            problems.add(path, f"unknown table{_suggest(path)}", where)
        else:
            problems.add(path, f"unknown key{_suggest(path)}", where)


def _read_file(path: str, origin: str, problems: _Problems) -> dict[str, object] | None:
    """The file's settings by key (values as TOML typed them); None if it cannot be read."""
    named = f"{path} ({origin})" if origin else path
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        problems.lines.append(f"cannot read config file {named}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        problems.lines.append(f"{path}: not UTF-8 text (byte {exc.start})")
        return None
    except tomllib.TOMLDecodeError as exc:
        # The message ends with "(at line L, column C)".
        problems.lines.append(f"{path}: invalid TOML: {exc}")
        return None
    found: dict[str, object] = {}
    _walk(document, "", found, problems, f"in {path}")
    return found


def _env_warnings(environ: Mapping[str, str]) -> list[str]:
    warnings = []
    known = list(_BY_ENV)
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _BY_ENV or name == CONFIG_ENV:
            continue
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if match:
            warnings.append(
                f"environment variable {name} is not a setting (did you mean {match[0]}?); ignored"
            )
    return warnings


def _flag_name(setting: Setting, raw: object) -> str:
    if raw is False and setting.kind is Kind.BOOL:
        return "--no-" + setting.flag.removeprefix("--")
    return setting.flag


def config_path(flag_value: str | None, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The config file to read and where its name came from (``--config`` or the variable)."""
    if flag_value:
        return flag_value, ""
    from_env = environ.get(CONFIG_ENV, "")
    if from_env:
        return from_env, f"from environment variable {CONFIG_ENV}"
    return None, ""


# -- the effective configuration -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """The merged configuration: the ServerConfig, the log settings, and each value's source."""

    server: ServerConfig
    log_level: str
    config_file: str | None
    values: Mapping[str, Value]  # by key, in SETTINGS order
    warnings: tuple[str, ...] = ()
    log_format: str = DEFAULT_LOG_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """For ``check-config --json``: every key with its value, source and origin."""
        settings: dict[str, Any] = {}
        for setting in SETTINGS:
            value = self.values[setting.key]
            shown: object = value.value
            if setting.kind is Kind.TARGETS:
                shown = [
                    {"instance_id": instance_id, "url": url}
                    for instance_id, url in typing.cast(tuple[tuple[str, str], ...], shown)
                ]
            elif isinstance(shown, tuple):
                shown = list(shown)
            settings[setting.key] = {
                "value": shown,
                "source": value.source,
                "origin": value.origin,
                "env": setting.env,
                "flag": setting.flag,
            }
        return {
            "config_file": self.config_file,
            "settings": settings,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_toml(self) -> str:
        """The configuration as a TOML file that gives the same result, sources as comments.

        Unset optional values are commented out (TOML has no null).
        """
        lines = [
            "# tgi-collector: effective configuration",
            f"# config file: {self.config_file or '(none)'}",
            "# precedence: flag > environment variable > config file > default",
            "# the comment after each value says which one set it",
        ]
        section: str | None = None
        for setting in SETTINGS:
            value = self.values[setting.key]
            if setting.kind is Kind.TARGETS:
                lines.append("")
                pairs = typing.cast(tuple[tuple[str, str], ...], value.value)
                if not pairs:
                    lines.append(f"# [[{setting.key}]]: none  # {value.describe()}")
                for instance_id, url in pairs:
                    lines.append(f"[[{setting.key}]]  # {value.describe()}")
                    lines.append(f"instance_id = {_quote(instance_id)}")
                    lines.append(f"url = {_quote(url)}")
                continue
            if setting.section != section:
                section = setting.section
                lines.append("")
                if section:
                    lines.append(f"[{section}]")
            if value.value is None:
                lines.append(f"# {setting.name} = (not set)  # {value.describe()}")
            else:
                shown = _toml_literal(value.value)
                lines.append(f"{setting.name} = {shown}  # {value.describe()}")
        return "\n".join(lines) + "\n"


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_literal(item) for item in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")  # pragma: no cover


def _relations(values: Mapping[str, Value], problems: _Problems) -> list[str]:
    """Checks between settings; returns warnings."""
    by_field = {
        setting.field: (setting.key, values[setting.key])
        for setting in SETTINGS
        if setting.field is not None
    }

    def get(field: str) -> tuple[str, Value] | None:
        return by_field.get(field)

    def show(key: str, value: Value) -> str:
        return f"{key} ({_toml_literal(value.value)}, {value.describe()})"

    low, mid, high = (
        get("min_watch_interval_seconds"),
        get("default_watch_interval_seconds"),
        get("max_watch_interval_seconds"),
    )
    for small, large in ((low, mid), (mid, high), (low, high)):
        if small is None or large is None:
            continue
        if typing.cast(float, small[1].value) > typing.cast(float, large[1].value):
            # Blame the value someone set rather than a default.
            if small[1].source == "default" and large[1].source != "default":
                reason = f"{_toml_literal(large[1].value)} is below {show(*small)}"
                problems.add(large[0], reason, large[1].where())
            else:
                reason = f"{_toml_literal(small[1].value)} is above {show(*large)}"
                problems.add(small[0], reason, small[1].where())
            break
    cert, key, client_ca = get("tls_cert_file"), get("tls_key_file"), get("tls_client_ca_file")
    if cert is not None and key is not None:
        if cert[1].value is None and key[1].value is not None:
            problems.add(key[0], f"is set but {cert[0]} is not", key[1].where())
        if cert[1].value is not None and key[1].value is None:
            problems.add(cert[0], f"is set but {key[0]} is not", cert[1].where())
    if (
        cert is not None
        and client_ca is not None
        and client_ca[1].value is not None
        and cert[1].value is None
    ):
        problems.add(
            client_ca[0],
            f"needs TLS: set {cert[0]} and {key[0] if key else 'the key'} too",
            client_ca[1].where(),
        )
    only, targets = get("registered_only"), get("registered_targets")
    if only is not None and targets is not None and only[1].value is True and not targets[1].value:
        problems.add(
            only[0],
            f"is true but no targets are registered ({targets[0]}): every target would be refused",
            only[1].where(),
        )
    warnings = []
    token, both = get("token_file"), get("auth_health_and_reflection")
    if token is not None and both is not None and both[1].value is True and token[1].value is None:
        warnings.append(f"{both[0]} is true but {token[0]} is not set: no call needs a token")
    return warnings


def _component_checks(values: Mapping[str, Value], problems: _Problems) -> None:
    """Build the scrape policy and the target registry as the server will, before it starts.

    They validate their settings themselves (a :class:`ValueError` whose message starts with
    the field name); that message is reported under the key path, with the value's source.
    """
    by_field = {
        setting.field: (setting, values[setting.key])
        for setting in SETTINGS
        if setting.field is not None
    }

    def report(exc: Exception) -> None:
        message = str(exc)
        match = re.match(r"(\w+)(.*)", message, re.DOTALL)
        if match is not None and match[1] in by_field:
            setting, value = by_field[match[1]]
            problems.lines.append(f"{setting.key}{match[2]} ({value.where()})")
        else:
            problems.lines.append(f"invalid configuration: {message}")

    policy_args = {
        name: by_field[name][1].value
        for name in inspect.signature(TargetPolicy).parameters
        if name in by_field
    }
    try:
        TargetPolicy(**policy_args)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        report(exc)
    if "registered_targets" in by_field and "registered_only" in by_field:
        try:
            TargetRegistry(
                typing.cast(Iterable[tuple[str, str]], by_field["registered_targets"][1].value),
                registered_only=bool(by_field["registered_only"][1].value),
            )
        except (TypeError, ValueError) as exc:
            report(exc)


def load_config(
    path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    path_origin: str = "",
) -> EffectiveConfig:
    """Merge defaults, the TOML file at ``path``, ``environ`` and ``flags`` (by key).

    ``flags`` holds the flags that were given, by setting key, as argparse parsed them (see
    :func:`flags_from_args`). ``environ`` defaults to ``os.environ``. ``path_origin`` says where
    the file's name came from, for the message if it cannot be read.

    Raises :class:`~tgi_collector.errors.ConfigError` listing every problem.
    """
    environ = os.environ if environ is None else environ
    flags = flags or {}
    problems = _Problems()
    chosen: dict[str, Value] = {
        setting.key: Value(setting.default, "default") for setting in SETTINGS
    }

    def offer(setting: Setting, value: object, source: Source, origin: str, where: str) -> None:
        # Every value given is checked, even one a higher source overrides.
        if value is not dataclasses.MISSING and _check(setting, value, problems, where):
            chosen[setting.key] = Value(value, source, origin)

    abs_path = os.path.abspath(path) if path else None
    if path and abs_path:
        base_dir = os.path.dirname(abs_path)
        found = _read_file(path, path_origin, problems)
        for key, raw in (found or {}).items():
            setting = _BY_KEY[key]
            where = f"in {path}"
            value = _from_toml(setting, raw, problems, where)
            if value is not dataclasses.MISSING:
                value = _normalize_path(setting, value, base_dir)
            offer(setting, value, "file", abs_path, where)
    for setting in SETTINGS:
        if setting.env in environ:
            where = f"from environment variable {setting.env}"
            value = _from_text(setting, environ[setting.env], problems, where, split=True)
            if value is not dataclasses.MISSING:
                value = _normalize_path(setting, value, os.getcwd())
            offer(setting, value, "env", setting.env, where)
    for key, raw in flags.items():
        setting = _BY_KEY[key]
        flag = _flag_name(setting, raw)
        where = f"from flag {flag}"
        value = _from_text(setting, raw, problems, where, split=False)
        if value is not dataclasses.MISSING:
            value = _normalize_path(setting, value, os.getcwd())
        offer(setting, value, "flag", flag, where)
    warnings = _env_warnings(environ)
    if not problems.lines:
        warnings += _relations(chosen, problems)
    if not problems.lines:
        _component_checks(chosen, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    values = {
        key: dataclasses.replace(value, value=_normalize(_BY_KEY[key], value.value))
        for key, value in chosen.items()
    }
    fields = {
        setting.field: values[setting.key].value
        for setting in SETTINGS
        if setting.field is not None
    }
    try:
        # ServerConfig may check more itself; its complaint is a config error too.
        server = ServerConfig(**fields)  # type: ignore[arg-type]
    except ConfigError:
        raise
    except (TypeError, ValueError, CollectorError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return EffectiveConfig(
        server=server,
        log_level=typing.cast(str, values[_LOG_PLACE.key].value),
        log_format=typing.cast(str, values[_LOG_FORMAT_PLACE.key].value),
        config_file=abs_path,
        values=values,
        warnings=tuple(warnings),
    )


def _normalize_path(setting: Setting, value: object, base_dir: str) -> object:
    """A path with ``~`` expanded and, if relative, taken from ``base_dir``."""
    if setting.path and isinstance(value, str) and value:
        return os.path.join(base_dir, os.path.expanduser(value))
    return value


def resolve_log_level(flag_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The log level of commands other than ``serve``: ``--log-level``, the variable, INFO."""
    return _resolve_global(_LOG_PLACE, flag_value, environ).upper()


def resolve_log_format(flag_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The log format of commands other than ``serve``: ``--log-format``, the variable, text."""
    return _resolve_global(_LOG_FORMAT_PLACE, flag_value, environ).lower()


def _resolve_global(
    place: _Place, flag_value: str | None, environ: Mapping[str, str] | None
) -> str:
    environ = os.environ if environ is None else environ
    if flag_value:
        return flag_value
    setting = _BY_KEY[place.key]
    text = environ.get(setting.env, "").strip()
    if not text:
        return typing.cast(str, setting.default)
    reason = place.check(text) if place.check is not None else None
    if reason is not None:
        raise ConfigError(f"{setting.key}: {reason} (from environment variable {setting.env})")
    return text


# -- command-line flags --------------------------------------------------------------------------

_GROUP_TITLES = {
    "": "server",
    "metrics": "self-metrics (file: [metrics])",
    "watch": "Watch limits (file: [watch])",
    "policy": "scrape policy (file: [policy])",
    "auth": "authentication (file: [auth])",
    "tls": "TLS (file: [tls])",
    "limits": "server limits (file: [limits])",
}


def _dest(setting: Setting) -> str:
    return "setting:" + setting.key


def _shown_default(setting: Setting) -> str:
    value = setting.default
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every setting but ``log.*`` (global options) to ``parser``.

    Every flag defaults to None (not given), so only the flags given override the file and
    the environment.
    """
    groups: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.field is None:
            continue
        title = _GROUP_TITLES.get(setting.section, f"[{setting.section}]")
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        text = f"{setting.help} (default: {_shown_default(setting)}; file: {setting.key})"
        text = text.replace("%", "%%")
        if setting.kind is Kind.BOOL:
            group.add_argument(
                setting.flag,
                dest=_dest(setting),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        elif setting.kind in (Kind.STR_LIST, Kind.TARGETS):
            group.add_argument(
                setting.flag,
                dest=_dest(setting),
                action="append",
                default=None,
                metavar=setting.metavar,
                help=text,
            )
        else:
            group.add_argument(
                setting.flag,
                dest=_dest(setting),
                default=None,
                metavar=setting.metavar,
                help=text,
            )


def flags_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The flags given on the command line, by setting key (for :func:`load_config`)."""
    given: dict[str, object] = {}
    for setting in SETTINGS:
        dest = _GLOBAL_DEST[setting.key] if setting.field is None else _dest(setting)
        value = getattr(args, dest, None)
        if value is not None:
            given[setting.key] = value
    return given
