"""One setting's value: read from TOML or from text, checked, normalized, and its source.

A value goes through the same steps from every source: :func:`from_toml` (a value of the file,
as TOML typed it) or :func:`from_text` (a variable's text, or a flag as argparse parsed it)
converts it to the setting's :class:`~tgi_collector._config_settings.Kind`, :func:`check_value`
checks its range and format, and after the merge :func:`normalize` gives it the form
``ServerConfig`` gets. Each step reports into a :class:`Problems` instead of raising, so that
every problem of every source is reported at once. :class:`Value` keeps where the value came
from, for ``check-config`` and for error messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tgi_collector._config_checks import quote
from tgi_collector._config_layout import LOG_FORMAT_PLACE, LOG_PLACE
from tgi_collector._config_settings import Kind, Setting
from tgi_collector.errors import InvalidRequestError
from tgi_collector.targets import validate_instance_id, validate_url

__all__ = [
    "Problems",
    "Source",
    "Value",
    "check_value",
    "describe_toml",
    "from_text",
    "from_toml",
    "normalize",
    "normalize_path",
    "toml_literal",
]

Source = Literal["default", "file", "env", "flag"]

# gRPC channel arguments are C ints.
_MAX_INT = 2**31 - 1
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


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


class Problems:
    """Every problem found so far, one line each: ``key: reason (where)``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, key: str, reason: str, where: str) -> None:
        self.lines.append(f"{key}: {reason} ({where})")


def describe_toml(raw: object) -> str:
    """What a TOML value is, for messages: ``the integer 3``, ``an array``."""
    if isinstance(raw, bool):
        return f"the boolean {str(raw).lower()}"
    if isinstance(raw, int):
        return f"the integer {raw}"
    if isinstance(raw, float):
        return f"the number {raw!r}"
    if isinstance(raw, str):
        return f"the string {quote(raw)}"
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


def from_toml(setting: Setting, raw: object, problems: Problems, where: str) -> object:
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
                    f"must be a string, not {describe_toml(item)}",
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
                problems.add(at, f"must be a table, not {describe_toml(item)}", where)
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
                        else (f"must be a string, not {describe_toml(value)}")
                    )
                    problems.add(f"{at}.{name}", reason, where)
                    ok = False
                values.append(value if isinstance(value, str) else "")
            targets.append((values[0], values[1]))
        return tuple(targets) if ok else bad
    problems.add(setting.key, f"{_kind_hint(setting)}, not {describe_toml(raw)}", where)
    return bad


def from_text(
    setting: Setting, raw: object, problems: Problems, where: str, *, split: bool
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
                problems.add(f"{setting.key}[{index}]", f"{quote(item)} is not ID=URL", where)
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
            f"must be true or false (or 1/0, yes/no, on/off), not {quote(text)}",
            where,
        )
        return bad
    if kind is Kind.INT:
        try:
            return int(text)
        except ValueError:
            problems.add(setting.key, f"must be an integer, not {quote(text)}", where)
            return bad
    if kind is Kind.FLOAT:
        try:
            return float(text)
        except ValueError:
            problems.add(setting.key, f"must be a number, not {quote(text)}", where)
            return bad
    return text


def check_value(setting: Setting, value: object, problems: Problems, where: str) -> bool:
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
                        f"{quote(instance_id)} is registered twice"
                        f" (also {key}[{first[instance_id]}])",
                        where,
                    )
                first.setdefault(instance_id, index)
            try:
                validate_url(url, field="url")
            except InvalidRequestError as exc:
                problems.add(f"{at}.url", str(exc).removeprefix("url: "), where)
    return len(problems.lines) == count


def normalize(setting: Setting, value: object) -> object:
    """The value as ServerConfig gets it: URLs completed, the log level in capitals."""
    if setting.kind is Kind.TARGETS:
        return tuple(
            (instance_id, validate_url(url, field="url"))
            for instance_id, url in typing.cast(tuple[tuple[str, str], ...], value)
        )
    if setting.key == LOG_PLACE.key and isinstance(value, str):
        return value.upper()
    if setting.key == LOG_FORMAT_PLACE.key and isinstance(value, str):
        return value.lower()
    return value


def normalize_path(setting: Setting, value: object, base_dir: str) -> object:
    """A path with ``~`` expanded and, if relative, taken from ``base_dir``."""
    if setting.path and isinstance(value, str) and value:
        return os.path.join(base_dir, os.path.expanduser(value))
    return value


def toml_literal(value: object) -> str:
    """``value`` as TOML writes it, for ``check-config`` output and messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")  # pragma: no cover
