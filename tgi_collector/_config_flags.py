"""The command-line flags of the settings, for ``serve`` and ``check-config``.

:func:`add_flags` adds one flag per setting, in groups by file section, with the default and
the key path in its help; every flag defaults to None (not given), so that only the flags given
override the file and the environment. :func:`flags_from_args` collects the flags given, by
setting key, for :func:`tgi_collector.config.load_config`, which checks their values like the
file's. ``--log-level`` and ``--log-format`` are global options of every command
(:mod:`tgi_collector._cli_args` adds them); they are read here under their own dests.
"""

from __future__ import annotations

import argparse
from typing import Any

from tgi_collector._config_layout import GLOBAL_DEST
from tgi_collector._config_settings import SETTINGS, Kind, Setting

__all__ = ["add_flags", "flag_name", "flags_from_args"]

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
    # The prefix keeps these dests apart from those of the command's other options.
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
        dest = GLOBAL_DEST[setting.key] if setting.field is None else _dest(setting)
        value = getattr(args, dest, None)
        if value is not None:
            given[setting.key] = value
    return given


def flag_name(setting: Setting, raw: object) -> str:
    """The flag as it was given: ``--no-NAME`` for a boolean flag set to false."""
    if raw is False and setting.kind is Kind.BOOL:
        return "--no-" + setting.flag.removeprefix("--")
    return setting.flag
