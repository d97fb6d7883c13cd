"""Configuration of ``tgi-collector serve``: a TOML file, environment variables and flags.

Precedence, highest first::

    command-line flag  >  environment variable  >  config file  >  built-in default

A flag or variable overrides only when it is given. A list given by a flag or a variable
replaces the list from below whole (lists are never merged).

**Settings.** The settings are the fields of :class:`~tgi_collector.server.ServerConfig`, read
with :func:`dataclasses.fields` (so a new field is a setting at once, with its type and default),
plus ``log.level`` and ``log.format``. :data:`tgi_collector._config_layout.LAYOUT` places each
field in the file (its key path, such as ``watch.max_subscribers``), names its flag and gives its
help text and checks. A field missing from the layout still works, as a top-level key named like
the field and a flag ``--field-name``; ``tests/test_config.py`` fails until it is placed, so that
fallback never ships.

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

**Modules.** This module is the public face and the merge (:func:`load_config`,
:class:`EffectiveConfig`); the parts live in private modules, each with one job, imported in
this order (none imports a later one):

- ``_config_checks``: checks of one text value (listen address, CIDR, host pattern, log level);
- ``_config_layout``: where each setting lives in the file, its flag, help text and checks;
- ``_config_settings``: :data:`SETTINGS`, built from ``ServerConfig`` and the layout;
- ``_config_values``: one value read from TOML or text, checked, normalized, with its source;
- ``_config_sources``: reading the file and its tables, the environment's near misses;
- ``_config_relations``: checks between settings, and the components built as the server will;
- ``_config_flags``: the command-line flags of the settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tgi_collector._config_checks import LOG_FORMATS, LOG_LEVELS, quote
from tgi_collector._config_flags import add_flags, flag_name, flags_from_args
from tgi_collector._config_layout import DEFAULT_LOG_FORMAT, LOG_FORMAT_PLACE, LOG_PLACE, Place
from tgi_collector._config_relations import component_checks, relations
from tgi_collector._config_settings import (
    BY_KEY,
    ENV_PREFIX,
    SETTINGS,
    UNSUPPORTED_FIELDS,
    Kind,
    Setting,
)
from tgi_collector._config_sources import CONFIG_ENV, config_path, env_warnings, read_file
from tgi_collector._config_values import (
    Problems,
    Source,
    Value,
    check_value,
    from_text,
    from_toml,
    normalize,
    normalize_path,
    toml_literal,
)
from tgi_collector.errors import CollectorError, ConfigError
from tgi_collector.server import ServerConfig

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
                    lines.append(f"instance_id = {quote(instance_id)}")
                    lines.append(f"url = {quote(url)}")
                continue
            if setting.section != section:
                section = setting.section
                lines.append("")
                if section:
                    lines.append(f"[{section}]")
            if value.value is None:
                lines.append(f"# {setting.name} = (not set)  # {value.describe()}")
            else:
                shown = toml_literal(value.value)
                lines.append(f"{setting.name} = {shown}  # {value.describe()}")
        return "\n".join(lines) + "\n"


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
    problems = Problems()
    chosen: dict[str, Value] = {
        setting.key: Value(setting.default, "default") for setting in SETTINGS
    }

    def offer(setting: Setting, value: object, source: Source, origin: str, where: str) -> None:
        # Every value given is checked, even one a higher source overrides.
        if value is not dataclasses.MISSING and check_value(setting, value, problems, where):
            chosen[setting.key] = Value(value, source, origin)

    abs_path = os.path.abspath(path) if path else None
    if path and abs_path:
        base_dir = os.path.dirname(abs_path)
        found = read_file(path, path_origin, problems)
        for key, raw in (found or {}).items():
            setting = BY_KEY[key]
            where = f"in {path}"
            value = from_toml(setting, raw, problems, where)
            if value is not dataclasses.MISSING:
                value = normalize_path(setting, value, base_dir)
            offer(setting, value, "file", abs_path, where)
    for setting in SETTINGS:
        if setting.env in environ:
            where = f"from environment variable {setting.env}"
            value = from_text(setting, environ[setting.env], problems, where, split=True)
            if value is not dataclasses.MISSING:
                value = normalize_path(setting, value, os.getcwd())
            offer(setting, value, "env", setting.env, where)
    for key, raw in flags.items():
        setting = BY_KEY[key]
        flag = flag_name(setting, raw)
        where = f"from flag {flag}"
        value = from_text(setting, raw, problems, where, split=False)
        if value is not dataclasses.MISSING:
            value = normalize_path(setting, value, os.getcwd())
        offer(setting, value, "flag", flag, where)
    warnings = env_warnings(environ)
    if not problems.lines:
        warnings += relations(chosen, problems)
    if not problems.lines:
        component_checks(chosen, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    values = {
        key: dataclasses.replace(value, value=normalize(BY_KEY[key], value.value))
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
        # The server's own range checks, so that nothing check-config accepts fails at start.
        server.check()
    except ConfigError:
        raise
    except (TypeError, ValueError, CollectorError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return EffectiveConfig(
        server=server,
        log_level=typing.cast(str, values[LOG_PLACE.key].value),
        log_format=typing.cast(str, values[LOG_FORMAT_PLACE.key].value),
        config_file=abs_path,
        values=values,
        warnings=tuple(warnings),
    )


def resolve_log_level(flag_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The log level of commands other than ``serve``: ``--log-level``, the variable, INFO."""
    return _resolve_global(LOG_PLACE, flag_value, environ).upper()


def resolve_log_format(flag_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The log format of commands other than ``serve``: ``--log-format``, the variable, text."""
    return _resolve_global(LOG_FORMAT_PLACE, flag_value, environ).lower()


def _resolve_global(place: Place, flag_value: str | None, environ: Mapping[str, str] | None) -> str:
    environ = os.environ if environ is None else environ
    if flag_value:
        return flag_value
    setting = BY_KEY[place.key]
    text = environ.get(setting.env, "").strip()
    if not text:
        return typing.cast(str, setting.default)
    reason = place.check(text) if place.check is not None else None
    if reason is not None:
        raise ConfigError(f"{setting.key}: {reason} (from environment variable {setting.env})")
    return text
