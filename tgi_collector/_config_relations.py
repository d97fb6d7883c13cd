"""Checks between settings, and the components built as the server will build them.

Each value was checked alone by :mod:`tgi_collector._config_values`; what is left is what only
the merged configuration can say: the Watch intervals ordered ``min <= default <= max``, a TLS
key with its certificate, a client CA only with TLS, ``registered_only`` with registered
targets (:func:`relations`), and whatever the scrape policy and the target registry refuse when
they are built from the settings (:func:`component_checks`). Messages name the key paths and
blame the value someone set rather than a default.

The server checks some of the same rules again when it starts (``ServerConfig.check``:
:func:`tgi_collector._limits.check_server_config` and :meth:`tgi_collector.auth.TlsFiles.check`),
for a ``ServerConfig`` built in code; here they are worded for the configuration's keys and
sources, and every problem is reported rather than the first.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Iterable, Mapping

from tgi_collector._config_settings import SETTINGS
from tgi_collector._config_values import Problems, Value, toml_literal
from tgi_collector.policy import TargetPolicy
from tgi_collector.registry import TargetRegistry

__all__ = ["component_checks", "relations"]


def relations(values: Mapping[str, Value], problems: Problems) -> list[str]:
    """Checks between settings; returns warnings."""
    by_field = {
        setting.field: (setting.key, values[setting.key])
        for setting in SETTINGS
        if setting.field is not None
    }

    def get(field: str) -> tuple[str, Value] | None:
        return by_field.get(field)

    def show(key: str, value: Value) -> str:
        return f"{key} ({toml_literal(value.value)}, {value.describe()})"

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
                reason = f"{toml_literal(large[1].value)} is below {show(*small)}"
                problems.add(large[0], reason, large[1].where())
            else:
                reason = f"{toml_literal(small[1].value)} is above {show(*large)}"
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


def component_checks(values: Mapping[str, Value], problems: Problems) -> None:
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
