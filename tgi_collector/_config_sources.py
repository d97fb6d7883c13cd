"""Reading the sources of the configuration: the TOML file, the environment, the file's name.

:func:`read_file` parses the file and walks its tables, returning the value of every known key
and reporting every unknown key (with the closest known key as a hint), a table that is not
one, and a secret written in the file (tokens belong in ``auth.token_file``, never in the
configuration). :func:`env_warnings` notices a variable that looks like a setting's but is not
one: other variables with the prefix are ignored, since Kubernetes defines
``TGI_COLLECTOR_PORT`` and the like for a service of that name. :func:`config_path` finds the
file's name. Values are converted and checked by :mod:`tgi_collector._config_values`.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from typing import Any

from tgi_collector._config_settings import BY_ENV, BY_KEY, ENV_PREFIX, SETTINGS, TABLES
from tgi_collector._config_values import Problems, describe_toml

__all__ = ["CONFIG_ENV", "config_path", "env_warnings", "read_file"]

#: Names the config file when ``--config`` is not given.
CONFIG_ENV = "TGI_COLLECTOR_CONFIG"

_SECRET_KEYS = frozenset({"token", "tokens", "bearer_token", "password", "secret"})


def _suggest(path: str) -> str:
    """`` (did you mean KEY?)`` for the closest known key or table, or ``""``."""
    names = [setting.key for setting in SETTINGS] + sorted(TABLES)
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
    problems: Problems,
    where: str,
) -> None:
    """Put the value of every known key under ``table`` in ``found``; report the rest."""
    for name, raw in table.items():
        path = f"{prefix}.{name}" if prefix else name
        if path in BY_KEY:
            found[path] = raw
        elif path in TABLES:
            if isinstance(raw, dict):
                _walk(raw, path, found, problems, where)
            else:
                problems.add(path, f"must be a table ([{path}]), not {describe_toml(raw)}", where)
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


def read_file(path: str, origin: str, problems: Problems) -> dict[str, object] | None:
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


def env_warnings(environ: Mapping[str, str]) -> list[str]:
    """A warning for each variable with the prefix that is a near miss of a setting's."""
    warnings = []
    known = list(BY_ENV)
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in BY_ENV or name == CONFIG_ENV:
            continue
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if match:
            warnings.append(
                f"environment variable {name} is not a setting (did you mean {match[0]}?); ignored"
            )
    return warnings


def config_path(flag_value: str | None, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The config file to read and where its name came from (``--config`` or the variable)."""
    if flag_value:
        return flag_value, ""
    from_env = environ.get(CONFIG_ENV, "")
    if from_env:
        return from_env, f"from environment variable {CONFIG_ENV}"
    return None, ""
