"""Configuration: the TOML file, environment variables, flags, their precedence and their errors.

Table-driven over :data:`tgi_collector.config.SETTINGS`, so a new ``ServerConfig`` field is
tested through all three sources as soon as it exists (and fails here until it has a place in
the file layout and, when its type needs one, a sample value below).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tgi_collector import _config_layout, _config_settings
from tgi_collector import config as config_module
from tgi_collector._cli_args import build_parser
from tgi_collector.cli import main
from tgi_collector.client import CollectorClient
from tgi_collector.config import (
    CONFIG_ENV,
    ENV_PREFIX,
    SETTINGS,
    UNSUPPORTED_FIELDS,
    EffectiveConfig,
    Kind,
    Setting,
    flags_from_args,
    load_config,
    resolve_log_format,
    resolve_log_level,
)
from tgi_collector.errors import CollectorError, ConfigError
from tgi_collector.server import ServerConfig

BY_KEY = {setting.key: setting for setting in SETTINGS}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TGI_COLLECTOR_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# -- helpers -----------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "collector.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def toml_for(setting: Setting, literal: str) -> str:
    """A config file setting only ``setting`` (``literal`` is TOML; a block for targets)."""
    if setting.kind is Kind.TARGETS:
        return literal
    if setting.section:
        return f"[{setting.section}]\n{setting.name} = {literal}\n"
    return f"{setting.name} = {literal}\n"


def flags(argv: list[str]) -> dict[str, object]:
    """The flags given in a ``tgi-collector ... serve ...`` command line, as main sees them."""
    return flags_from_args(build_parser().parse_args(argv))


def load(
    path: Path | None = None,
    env: dict[str, str] | None = None,
    argv: list[str] | None = None,
) -> EffectiveConfig:
    return load_config(
        str(path) if path else None,
        environ=env or {},
        flags=flags(argv or ["serve"]),
    )


def problems(
    path: Path | None = None, env: dict[str, str] | None = None, argv: list[str] | None = None
) -> str:
    with pytest.raises(ConfigError) as raised:
        load(path, env, argv)
    return str(raised.value)


@dataclass(frozen=True)
class Sample:
    """One non-default value of a setting, as each source spells it."""

    toml: str  # TOML literal (a [[...]] block for targets)
    env: str
    flag: list[str]  # argv after "serve" (before it for --log-level)
    expected: object  # the value ServerConfig gets


def samples(setting: Setting, tmp_path: Path) -> tuple[Sample, Sample, Sample]:
    """Three distinct values (file, env, flag) for ``setting``."""
    key, flag = setting.key, setting.flag
    if key in ("listen", "metrics.listen"):
        values = ["0.0.0.0:50052", "127.0.0.1:0", "[::1]:50053"]
        return tuple(  # type: ignore[return-value]
            Sample(json.dumps(v), v, [flag, v], v) for v in values
        )
    if key == "log.level":
        return (
            Sample('"debug"', "warning", [], "DEBUG"),
            Sample('"WARNING"', "warning", [], "WARNING"),
            Sample('"ERROR"', "error", ["--log-level", "ERROR"], "ERROR"),
        )
    if key == "log.format":
        return (
            Sample('"JSON"', "text", [], "json"),
            Sample('"text"', "JSON", [], "json"),
            Sample('"json"', "json", ["--log-format", "text"], "text"),
        )
    if setting.path:
        files = []
        for name in ("file-value", "env-value", "flag-value"):
            path = tmp_path / f"{setting.name}-{name}.pem"
            path.write_text("not read by the configuration\n")
            files.append(path)
        return (
            # Relative to the config file's directory.
            Sample(json.dumps(files[0].name), str(files[0]), [flag, str(files[0])], str(files[0])),
            Sample("", str(files[1]), [], str(files[1])),
            Sample("", "", [flag, str(files[2])], str(files[2])),
        )
    if setting.kind is Kind.BOOL:
        on = not setting.default
        no_flag = "--no-" + flag.removeprefix("--")
        return (
            Sample(json.dumps(on), str(on).lower(), [flag if on else no_flag], on),
            Sample(json.dumps(not on), "off" if on else "on", [], not on),
            Sample("", "", [flag if on else no_flag], on),
        )
    if setting.kind is Kind.INT:
        return tuple(  # type: ignore[return-value]
            Sample(str(v), str(v), [flag, str(v)], v) for v in (7, 8, 9)
        )
    if setting.kind is Kind.FLOAT:
        base = 7200.0 if key == "watch.max_interval_seconds" else 1.0
        return tuple(  # type: ignore[return-value]
            Sample(repr(v), repr(v), [flag, repr(v)], v) for v in (base + 1.5, base + 2.5, base + 3)
        )
    if setting.kind is Kind.STR_LIST:
        if setting.name.endswith("networks"):
            lists = [["10.0.0.0/8", "fd00::/8"], ["192.168.0.0/16", "172.16.0.0/12"], ["1.2.3.4"]]
        else:
            lists = [["*.internal", "tgi-0.example"], ["a.example", "*.b.example"], ["c.example"]]
        return (
            Sample(json.dumps(lists[0]), "", [], tuple(lists[0])),
            # Comma-separated, spaces around the commas ignored.
            Sample("", " , ".join(lists[1]), [], tuple(lists[1])),
            Sample("", "", [arg for v in lists[2] for arg in (flag, v)], tuple(lists[2])),
        )
    if setting.kind is Kind.TARGETS:
        block = (
            f'[[{key}]]\ninstance_id = "tgi-0"\nurl = "http://tgi-0:80"\n'
            f'[[{key}]]\ninstance_id = "tgi-1"\nurl = "http://tgi-1:80/metrics"\n'
        )
        return (
            Sample(
                block, "", [],
                (("tgi-0", "http://tgi-0:80/metrics"), ("tgi-1", "http://tgi-1:80/metrics")),
            ),
            Sample("", "a=http://a:1,b=https://b/m", [], (("a", "http://a:1/metrics"),
                                                          ("b", "https://b/m"))),
            Sample("", "", [flag, "c=http://c:2"], (("c", "http://c:2/metrics"),)),
        )  # fmt: skip
    raise AssertionError(f"no sample values for {key} ({setting.kind}): add them here")


def companions(setting: Setting, tmp_path: Path) -> list[str]:
    """Flags other settings need for ``setting``'s values to be valid (TLS key with cert...)."""
    cert, key = tmp_path / "companion-cert.pem", tmp_path / "companion-key.pem"
    for path in (cert, key):
        path.write_text("x")
    return {
        "tls.cert_file": ["--tls-key", str(key)],
        "tls.key_file": ["--tls-cert", str(cert)],
        "tls.client_ca_file": ["--tls-cert", str(cert), "--tls-key", str(key)],
        "policy.registered_only": ["--registered-target", "companion=http://companion:80"],
    }.get(setting.key, [])


def argv_for(setting: Setting, flag_args: list[str], extra: list[str]) -> list[str]:
    if setting.key.startswith("log."):
        return [*flag_args, "serve", *extra]
    return ["serve", *flag_args, *extra]


def field_value(effective: EffectiveConfig, setting: Setting) -> object:
    if setting.key == "log.format":
        return effective.log_format
    if setting.field is None:
        return effective.log_level
    return getattr(effective.server, setting.field)


# -- the layout covers every field -------------------------------------------------------------


def test_every_server_config_field_has_a_key_a_variable_and_a_flag() -> None:
    fields = [field.name for field in dataclasses.fields(ServerConfig)]
    assert UNSUPPORTED_FIELDS == (), "ServerConfig fields of a type config.py cannot read"
    by_field = {setting.field: setting for setting in SETTINGS if setting.field}
    missing = [name for name in fields if name not in by_field]
    assert not missing
    unplaced = [setting.field for setting in SETTINGS if not setting.placed]
    assert not unplaced, f"give these ServerConfig fields a TOML key in _config_layout: {unplaced}"
    assert not set(_config_layout.LAYOUT) - set(fields), "LAYOUT names fields that do not exist"
    for attribute in ("key", "env", "flag"):
        names = [getattr(setting, attribute) for setting in SETTINGS]
        assert len(names) == len(set(names)), attribute
    for setting in SETTINGS:
        assert setting.env == ENV_PREFIX + setting.key.replace(".", "_").upper()
        assert setting.section in _config_layout.SECTIONS
        assert setting.flag.startswith("--")
        global_defaults = {"log.level": "INFO", "log.format": "text"}
        assert setting.default == (
            getattr(ServerConfig(), setting.field)
            if setting.field
            else global_defaults[setting.key]
        )
    assert CONFIG_ENV not in {setting.env for setting in SETTINGS}


def test_a_new_field_is_a_setting_without_editing_config(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True)
    class Extended(ServerConfig):
        brand_new_limit: int = 3
        odd_type: complex = 1j

    monkeypatch.setattr(_config_settings, "ServerConfig", Extended)
    settings, unsupported = _config_settings.build_settings()
    new = {setting.key: setting for setting in settings}["brand_new_limit"]
    assert (new.kind, new.default, new.placed) == (Kind.INT, 3, False)
    assert (new.env, new.flag) == ("TGI_COLLECTOR_BRAND_NEW_LIMIT", "--brand-new-limit")
    assert unsupported == ("odd_type",)


# -- every setting through every source, and the precedence between them ------------------------


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.key)
def test_every_setting_via_file_env_and_flag_with_precedence(
    setting: Setting, tmp_path: Path
) -> None:
    from_file, from_env, from_flag = samples(setting, tmp_path)
    extra = companions(setting, tmp_path)
    file_path = write(tmp_path, toml_for(setting, from_file.toml))
    # Every combination of sources: the highest one given wins.
    for in_file, in_env, in_flag in itertools.product((False, True), repeat=3):
        if not (in_file or in_env or in_flag) and extra:
            continue  # the companions alone are not a valid configuration
        effective = load(
            file_path if in_file else None,
            {setting.env: from_env.env} if in_env else {},
            argv_for(setting, from_flag.flag if in_flag else [], extra),
        )
        expected, source = (
            (from_flag.expected, "flag") if in_flag
            else (from_env.expected, "env") if in_env
            else (from_file.expected, "file") if in_file
            else (setting.default, "default")
        )  # fmt: skip
        combination = f"file={in_file} env={in_env} flag={in_flag}"
        value = effective.values[setting.key]
        assert (value.value, value.source) == (expected, source), combination
        assert field_value(effective, setting) == expected, combination
        if source == "env":
            assert value.origin == setting.env
        if source == "file":
            assert value.origin == str(file_path)
        if source == "flag":
            assert value.origin in (from_flag.flag[0], setting.flag)


def test_flags_not_given_do_not_clobber_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'listen = "0.0.0.0:1"\ngrace_seconds = 0\n[watch]\nmax_subscribers = 5\n'
        "[policy]\nallow_link_local = true\n",
    )
    assert flags(["serve", "--config", str(path)]) == {}
    effective = load(path, argv=["serve", "--config", str(path)])
    server = effective.server
    assert (server.listen, server.grace_seconds, server.max_subscribers) == ("0.0.0.0:1", 0, 5)
    assert server.allow_link_local is True
    # --no-allow-link-local turns off what the file turned on.
    assert load(path, argv=["serve", "--no-allow-link-local"]).server.allow_link_local is False


def test_the_existing_serve_flags_keep_working() -> None:
    effective = load(
        argv=[
            "serve", "--listen", "127.0.0.1:6000", "--grace", "1", "--allow-link-local",
            "--default-watch-interval", "2", "--min-watch-interval", "0.1",
            "--max-subscribers", "3", "--max-targets-per-watch", "4", "--stall-timeout", "9",
        ]
    )  # fmt: skip
    assert effective.server == ServerConfig(
        listen="127.0.0.1:6000",
        grace_seconds=1.0,
        allow_link_local=True,
        default_watch_interval_seconds=2.0,
        min_watch_interval_seconds=0.1,
        max_subscribers=3,
        max_targets_per_watch=4,
        stall_timeout_seconds=9.0,
    )


def test_a_list_from_a_higher_source_replaces_the_list_below(tmp_path: Path) -> None:
    path = write(tmp_path, '[policy]\nallow_networks = ["10.0.0.0/8", "fd00::/8"]\n')
    env = {"TGI_COLLECTOR_POLICY_ALLOW_NETWORKS": "192.168.0.0/16"}
    assert load(path, env).server.allow_networks == ("192.168.0.0/16",)
    # An empty variable is an empty list: it clears the file's.
    assert load(path, {"TGI_COLLECTOR_POLICY_ALLOW_NETWORKS": ""}).server.allow_networks == ()
    # An empty variable unsets an optional path.
    token = tmp_path / "tokens"
    token.write_text("x\n")
    path = write(tmp_path, '[auth]\ntoken_file = "tokens"\n')
    assert load(path).server.token_file == str(token)
    assert load(path, {"TGI_COLLECTOR_AUTH_TOKEN_FILE": ""}).server.token_file is None


def test_the_documented_example_file(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("a-token\n")
    path = write(tmp_path, EXAMPLE)
    server = load(path).server
    assert server.listen == "0.0.0.0:50051"
    assert server.grace_seconds == 10
    assert server.max_subscribers == 5000
    assert server.allow_networks == ("10.0.0.0/8",)
    assert server.registered_targets == (
        ("tgi-0", "http://tgi-0.internal:80/metrics"),
        ("tgi-1", "http://tgi-1.internal:80/metrics"),
    )
    assert server.token_file == str(tmp_path / "tokens")
    assert load(path).log_level == "INFO"


EXAMPLE = """\
listen = "0.0.0.0:50051"
grace_seconds = 10

[watch]
max_subscribers = 5000
stall_timeout_seconds = 30

[policy]
allow_networks = ["10.0.0.0/8"]
allow_hosts = ["*.internal"]
registered_only = false

[[policy.targets]]
instance_id = "tgi-0"
url = "http://tgi-0.internal:80"

[[policy.targets]]
instance_id = "tgi-1"
url = "http://tgi-1.internal:80/metrics"

[auth]
token_file = "tokens"

[limits]
max_concurrent_collects = 64

[log]
level = "info"
"""


# -- errors ------------------------------------------------------------------------------------

FILE_ERRORS = [
    # (file text, expected line of the ConfigError; {path} is the file)
    ('[watch]\nmax_subscriber = 5\n',
     "watch.max_subscriber: unknown key (did you mean watch.max_subscribers?) (in {path})"),
    ("max_targets_per_watch = 5\n",
     "max_targets_per_watch: unknown key (did you mean watch.max_targets?) (in {path})"),
    ("[wach]\nmax_targets = 5\n", "wach: unknown table (did you mean watch?) (in {path})"),
    ("frobnicate = 1\n", "frobnicate: unknown key (in {path})"),
    ("watch = 5\n", "watch: must be a table ([watch]), not the integer 5 (in {path})"),
    ('grace_seconds = "10"\n',
     'grace_seconds: must be a number, not the string "10" (in {path})'),
    ('[policy]\nallow_link_local = "yes"\n',
     'policy.allow_link_local: must be true or false, not the string "yes" (in {path})'),
    ("[watch]\nmax_subscribers = 1.5\n",
     "watch.max_subscribers: must be an integer, not the number 1.5 (in {path})"),
    ("[watch]\nmax_subscribers = true\n",
     "watch.max_subscribers: must be an integer, not the boolean true (in {path})"),
    ('[policy]\nallow_networks = "10.0.0.0/8"\n',
     'policy.allow_networks: must be an array of strings, not the string "10.0.0.0/8"'
     " (in {path})"),
    ('[policy]\nallow_networks = ["10.0.0.0/8", 5]\n',
     "policy.allow_networks[1]: must be a string, not the integer 5 (in {path})"),
    ('[policy]\nallow_networks = ["10.0.0.0/8", "192.168.0.0/16", "10.0.0.0/33"]\n',
     'policy.allow_networks[2]: "10.0.0.0/33" is not a CIDR (like 10.0.0.0/8 or fd00::/8)'
     " (in {path})"),
    ('[policy]\ndeny_networks = ["10.0.0.1/8"]\n',
     'policy.deny_networks[0]: "10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)'
     " (in {path})"),
    ('[policy]\nallow_hosts = ["http://tgi-0"]\n', "policy.allow_hosts[0]: 'http://tgi-0' is"),
    ('[policy]\ndeny_hosts = [""]\n', "policy.deny_hosts[0]: must not be empty (in {path})"),
    ("[watch]\nmax_subscribers = 0\n",
     "watch.max_subscribers: must be from 1 to 2147483647, not 0 (in {path})"),
    ("[limits]\nmax_send_bytes = 4294967296\n",
     "limits.max_send_bytes: must be from 1 to 2147483647, not 4294967296 (in {path})"),
    ("grace_seconds = -1\n", "grace_seconds: must be a finite number >= 0, not -1 (in {path})"),
    ("[watch]\nstall_timeout_seconds = 0\n",
     "watch.stall_timeout_seconds: must be a finite number > 0, not 0 (in {path})"),
    ("[limits]\nkeepalive_min_ping_interval_seconds = nan\n",
     "limits.keepalive_min_ping_interval_seconds: must be a finite number > 0, not nan"),
    ('listen = "localhost"\n', 'listen: "localhost" is not host:port (like "127.0.0.1:50051"'),
    ('listen = "127.0.0.1:99999"\n', 'listen: port "99999" is not a number from 0 to 65535'),
    ('listen = "::1:50051"\n', "an IPv6 address needs brackets, like [::1]:50051"),
    ('listen = "[zz]:1"\n', 'listen: "[zz]" is not a bracketed IPv6 address'),
    ('listen = "a b:1"\n', 'listen: "a b" is not a host name or address'),
    ('listen = ""\n', "listen: must not be empty (in {path})"),
    ('listen = "[::1"\n', 'listen: "[::1" is not host:port'),
    ('listen = "unix:"\n', 'listen: "unix:" names no socket path'),
    ('[auth]\ntoken_file = ""\n',
     "auth.token_file: must not be empty (leave it out for none) (in {path})"),
    ('[[policy.targets]]\ninstance_id = "tgi-0"\n',
     "policy.targets[0].url: is missing (in {path})"),
    ('[[policy.targets]]\ninstance_id = "tgi-0"\nurll = "http://x"\nurl = "http://x"\n',
     "policy.targets[0].urll: unknown key (did you mean url?) (in {path})"),
    ('[[policy.targets]]\ninstance_id = "tgi-0"\nurl = "ftp://x/metrics"\n',
     "policy.targets[0].url: scheme 'ftp' is not supported (use http or https) (in {path})"),
    ('[[policy.targets]]\ninstance_id = ""\nurl = "http://x"\n',
     "policy.targets[0].instance_id: must not be empty (in {path})"),
    ('[[policy.targets]]\ninstance_id = "a"\nurl = "http://x"\n'
     '[[policy.targets]]\ninstance_id = "a"\nurl = "http://y"\n',
     'policy.targets[1].instance_id: "a" is registered twice (also policy.targets[0])'),
    ('[policy]\ntargets = ["tgi-0=http://x"]\n',
     "policy.targets[0]: must be a table, not the string"),
    ('[policy]\ntargets = 1\n', "policy.targets: must be an array of tables"),
    ('[auth]\ntoken = "hunter2"\n',
     "auth.token: secrets are never written in the configuration: put the tokens in a file,"),
    ('[auth]\ntoken_file = "no-such-file"\n',
     "auth.token_file: no such file: {dir}/no-such-file (in {path})"),
    ('[log]\nlevel = "loud"\n',
     'log.level: "loud" is not a log level (one of DEBUG, INFO, WARNING, ERROR) (in {path})'),
    ('[log]\nformat = "yaml"\n',
     'log.format: "yaml" is not a log format (one of text, json) (in {path})'),
    ('[metrics]\nlisten = "9464"\n', 'metrics.listen: "9464" is not host:port'),
    ('[metrics]\nlisten = "unix:/tmp/m"\n',
     'metrics.listen: "unix:/tmp/m" is a unix socket: this port is TCP'),
    ('[log]\nformats = "json"\n', "log.formats: unknown key (did you mean log.format?)"),
    # Relations between settings.
    ("[watch]\nmin_interval_seconds = 10\n",
     "watch.min_interval_seconds: 10.0 is above watch.default_interval_seconds (5.0, default)"
     " (in {path})"),
    ("[watch]\ndefault_interval_seconds = 0.5\n",
     "watch.default_interval_seconds: 0.5 is below watch.min_interval_seconds (1.0, default)"
     " (in {path})"),
    ('[tls]\nkey_file = "key.pem"\n', "tls.key_file: is set but tls.cert_file is not (in {path})"),
    ('[tls]\ncert_file = "cert.pem"\n', "tls.cert_file: is set but tls.key_file is not"),
    ('[tls]\nclient_ca_file = "cert.pem"\n',
     "tls.client_ca_file: needs TLS: set tls.cert_file and tls.key_file too (in {path})"),
    ("[policy]\nregistered_only = true\n",
     "policy.registered_only: is true but no targets are registered (policy.targets): every"
     " target would be refused (in {path})"),
    # Checked by the scrape policy / target registry themselves, reported under the key.
    ('[[policy.targets]]\ninstance_id = "a"\nurl = "http://x"\n'
     '[[policy.targets]]\ninstance_id = "b"\nurl = "http://X:80/metrics"\n',
     "policy.targets[1].url: 'http://X:80/metrics' is already registered as 'a' (in {path})"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), FILE_ERRORS, ids=[e[1][:60] for e in FILE_ERRORS])
def test_file_errors_name_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    for name in ("key.pem", "cert.pem"):
        (tmp_path / name).write_text("x")
    path = write(tmp_path, text)
    message = problems(path)
    assert expected.format(path=path, dir=tmp_path) in message


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:50051", "[::]:0", "localhost:1", "tgi-collector.internal:65535",
               "unix:/run/tgi-collector.sock"],
)  # fmt: skip
def test_listen_addresses_accepted(listen: str) -> None:
    assert load(env={"TGI_COLLECTOR_LISTEN": listen}).server.listen == listen


def test_server_config_own_checks_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True)
    class Checked(ServerConfig):
        def __post_init__(self) -> None:
            if self.max_subscribers > 100:
                raise ValueError("max_subscribers: at most 100 here")

    monkeypatch.setattr(config_module, "ServerConfig", Checked)
    assert problems() == "invalid configuration: max_subscribers: at most 100 here"
    assert load(argv=["serve", "--max-subscribers", "50"]).server.max_subscribers == 50


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "x"\n[watch]\nmax_subscribers = 0\nbogus = 1\n')
    env = {"TGI_COLLECTOR_GRACE_SECONDS": "soon"}
    with pytest.raises(ConfigError) as raised:
        load(path, env, ["serve", "--max-targets-per-watch", "-1"])
    error = raised.value
    assert isinstance(error, CollectorError)
    assert len(error.problems) == 5
    assert str(error) == "\n".join(error.problems)
    sources = " ".join(error.problems)
    assert f"in {path}" in sources
    assert "from environment variable TGI_COLLECTOR_GRACE_SECONDS" in sources
    assert "from flag --max-targets-per-watch" in sources


def test_file_level_errors(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "0.0.0.0:1"\ngrace_seconds = \n')
    message = problems(path)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "(at line 2, column 17)" in message
    assert problems(tmp_path / "missing.toml") == (
        f"cannot read config file {tmp_path / 'missing.toml'}: No such file or directory"
    )
    assert problems(tmp_path) == f"cannot read config file {tmp_path}: Is a directory"
    (tmp_path / "latin1.toml").write_bytes(b'listen = "\xe9"\n')
    latin1 = tmp_path / "latin1.toml"
    assert problems(latin1) == f"{latin1}: not UTF-8 text (byte 10)"
    with pytest.raises(ConfigError) as raised:
        load_config(
            str(tmp_path / "gone.toml"), environ={}, path_origin="from environment variable X"
        )
    assert "gone.toml (from environment variable X): No such file" in str(raised.value)


ENV_ERRORS = [
    ({"TGI_COLLECTOR_WATCH_MAX_SUBSCRIBERS": "lots"},
     'watch.max_subscribers: must be an integer, not "lots" (from environment variable'
     " TGI_COLLECTOR_WATCH_MAX_SUBSCRIBERS)"),
    ({"TGI_COLLECTOR_GRACE_SECONDS": "1s"}, 'grace_seconds: must be a number, not "1s"'),
    ({"TGI_COLLECTOR_POLICY_REGISTERED_ONLY": "maybe"},
     'policy.registered_only: must be true or false (or 1/0, yes/no, on/off), not "maybe"'),
    ({"TGI_COLLECTOR_POLICY_DENY_NETWORKS": "10.0.0.0/8,bad"},
     'policy.deny_networks[1]: "bad" is not a CIDR (like 10.0.0.0/8 or fd00::/8) (from'
     " environment variable TGI_COLLECTOR_POLICY_DENY_NETWORKS)"),
    ({"TGI_COLLECTOR_POLICY_TARGETS": "a=http://a,http://b"},
     'policy.targets[1]: "http://b" is not ID=URL (from environment variable'),
    ({"TGI_COLLECTOR_POLICY_TARGETS": "=http://a"},
     "policy.targets[0].instance_id: must not be empty"),
    ({"TGI_COLLECTOR_LISTEN": "50051"}, 'listen: "50051" is not host:port'),
    ({"TGI_COLLECTOR_LOG_LEVEL": "chatty"}, 'log.level: "chatty" is not a log level'),
    ({"TGI_COLLECTOR_TLS_CERT_FILE": "/no/such/cert.pem"},
     "tls.cert_file: no such file: /no/such/cert.pem (from environment variable"),
]  # fmt: skip


@pytest.mark.parametrize(("env", "expected"), ENV_ERRORS, ids=[e[1][:50] for e in ENV_ERRORS])
def test_environment_errors_name_the_variable(env: dict[str, str], expected: str) -> None:
    assert expected in problems(env=env)


FLAG_ERRORS = [
    (["--max-subscribers", "0"],
     "watch.max_subscribers: must be from 1 to 2147483647, not 0 (from flag --max-subscribers)"),
    (["--grace", "soon"], 'grace_seconds: must be a number, not "soon" (from flag --grace)'),
    (["--allow-network", "10.0.0.0/8", "--allow-network", "300.0.0.0/8"],
     'policy.allow_networks[1]: "300.0.0.0/8" is not a CIDR'),
    (["--registered-target", "http://x"], 'policy.targets[0]: "http://x" is not ID=URL'),
    (["--tls-key", "/no/such/key.pem"], "tls.key_file: no such file: /no/such/key.pem"),
    (["--listen", "[::1]"], 'listen: "[::1]" is not host:port'),
    (["--min-watch-interval", "6"],
     "watch.min_interval_seconds: 6.0 is above watch.default_interval_seconds (5.0, default)"
     " (from flag --min-watch-interval)"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), FLAG_ERRORS, ids=[e[1][:50] for e in FLAG_ERRORS])
def test_flag_errors_name_the_flag(argv: list[str], expected: str) -> None:
    assert expected in problems(argv=["serve", *argv])


def test_relation_errors_name_both_sources(tmp_path: Path) -> None:
    path = write(tmp_path, "[watch]\nmax_interval_seconds = 60\n")
    message = problems(path, {"TGI_COLLECTOR_WATCH_DEFAULT_INTERVAL_SECONDS": "90"})
    assert message == (
        "watch.default_interval_seconds: 90.0 is above watch.max_interval_seconds"
        " (60.0, file) (from environment variable TGI_COLLECTOR_WATCH_DEFAULT_INTERVAL_SECONDS)"
    )


def test_environment_warnings_for_near_misses_only() -> None:
    effective = load(
        env={
            "TGI_COLLECTOR_WATCH_MAX_SUBSCRIBER": "5",  # a typo
            "TGI_COLLECTOR_PORT": "tcp://10.0.0.1:50051",  # Kubernetes service variables
            "TGI_COLLECTOR_SERVICE_HOST": "10.0.0.1",
            "OTHER": "1",
        }
    )
    assert effective.warnings == (
        "environment variable TGI_COLLECTOR_WATCH_MAX_SUBSCRIBER is not a setting"
        " (did you mean TGI_COLLECTOR_WATCH_MAX_SUBSCRIBERS?); ignored",
    )
    assert effective.server == ServerConfig()
    effective = load(argv=["serve", "--auth-health-and-reflection"])
    assert effective.warnings == (
        "auth.health_and_reflection is true but auth.token_file is not set: no call needs a token",
    )


def test_log_level_of_other_commands() -> None:
    assert resolve_log_level(None, {}) == "INFO"
    assert resolve_log_level(None, {"TGI_COLLECTOR_LOG_LEVEL": "debug"}) == "DEBUG"
    assert resolve_log_level("ERROR", {"TGI_COLLECTOR_LOG_LEVEL": "debug"}) == "ERROR"
    with pytest.raises(ConfigError, match=r'log\.level: "x" is not a log level'):
        resolve_log_level(None, {"TGI_COLLECTOR_LOG_LEVEL": "x"})


def test_log_format_of_other_commands() -> None:
    assert resolve_log_format(None, {}) == "text"
    assert resolve_log_format(None, {"TGI_COLLECTOR_LOG_FORMAT": "JSON"}) == "json"
    assert resolve_log_format("text", {"TGI_COLLECTOR_LOG_FORMAT": "json"}) == "text"
    with pytest.raises(ConfigError, match=r'log\.format: "xml" is not a log format'):
        resolve_log_format(None, {"TGI_COLLECTOR_LOG_FORMAT": "xml"})


# -- printing the effective configuration -----------------------------------------------------


def test_printed_configuration_is_toml_that_gives_the_same_result(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("s3cret-token\n")
    path = write(tmp_path, EXAMPLE)
    effective = load(
        path, {"TGI_COLLECTOR_WATCH_MAX_TARGETS": "12"}, ["serve", "--deny-host", "bad.internal"]
    )
    text = effective.to_toml()
    assert "s3cret-token" not in text
    assert 'listen = "0.0.0.0:50051"  # file\n' in text
    assert "max_targets = 12  # env TGI_COLLECTOR_WATCH_MAX_TARGETS\n" in text
    assert 'deny_hosts = ["bad.internal"]  # flag --deny-host\n' in text
    assert "default_interval_seconds = 5.0  # default\n" in text
    assert "# cert_file = (not set)  # default\n" in text
    assert f'token_file = "{tmp_path / "tokens"}"  # file\n' in text
    document = tomllib.loads(text)
    assert document["policy"]["targets"][0] == {
        "instance_id": "tgi-0",
        "url": "http://tgi-0.internal:80/metrics",
    }
    again = load(write(tmp_path, text, "printed.toml"))
    assert again.server == effective.server
    assert again.log_level == effective.log_level

    data = json.loads(effective.to_json())
    assert data["config_file"] == str(path)
    assert data["settings"]["watch.max_targets"] == {
        "value": 12,
        "source": "env",
        "origin": "TGI_COLLECTOR_WATCH_MAX_TARGETS",
        "env": "TGI_COLLECTOR_WATCH_MAX_TARGETS",
        "flag": "--max-targets-per-watch",
    }
    assert data["settings"]["policy.targets"]["value"][1]["instance_id"] == "tgi-1"
    assert data["settings"]["tls.cert_file"]["value"] is None
    assert list(data["settings"]) == [setting.key for setting in SETTINGS]
    assert "s3cret-token" not in effective.to_json()


# -- the commands ------------------------------------------------------------------------------


def test_check_config_prints_the_effective_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tokens").write_text("s3cret-token\n")
    path = write(tmp_path, EXAMPLE)
    monkeypatch.setenv("TGI_COLLECTOR_WATCH_MAX_SUBSCRIBERS", "7")
    assert main(["check-config", str(path), "--listen", "127.0.0.1:7000"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"# config file: {path}\n" in out
    assert 'listen = "127.0.0.1:7000"  # flag --listen\n' in out
    assert "max_subscribers = 7  # env TGI_COLLECTOR_WATCH_MAX_SUBSCRIBERS\n" in out
    assert "grace_seconds = 10.0  # file\n" in out
    assert "s3cret-token" not in out

    assert main(["check-config", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["watch.max_subscribers"]["source"] == "env"
    assert data["settings"]["grace_seconds"] == {
        "value": 10.0, "source": "file", "origin": str(path), "env": "TGI_COLLECTOR_GRACE_SECONDS",
        "flag": "--grace",
    }  # fmt: skip

    # No FILE: TGI_COLLECTOR_CONFIG names it; with neither, defaults and the environment.
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert main(["check-config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config_file"] == str(path)
    monkeypatch.delenv(CONFIG_ENV)
    assert main(["check-config"]) == 0
    assert "# config file: (none)\n" in capsys.readouterr().out


def test_check_config_rejects_a_bad_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[policy]\nallow_networks = ["10.0.0.0/33"]\n')
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        'tgi-collector: invalid configuration: policy.allow_networks[0]: "10.0.0.0/33" is not a'
        f" CIDR (like 10.0.0.0/8 or fd00::/8) (in {path})\n"
    )
    path = write(tmp_path, "[watch]\nmax_subscribers = 0\nmax_targets = 0\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tgi-collector: invalid configuration:\n  watch.max_subscribers: ")
    assert "\n  watch.max_targets: " in err
    # A misspelt variable is a warning, not an error.
    monkeypatch.setenv("TGI_COLLECTOR_GRACE_SECOND", "1")
    assert main(["check-config"]) == 0
    assert "warning: environment variable TGI_COLLECTOR_GRACE_SECOND" in capsys.readouterr().err
    # The variable naming the file is reported as such when the file is missing.
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "nope.toml"))
    assert main(["serve"]) == 2
    assert "(from environment variable TGI_COLLECTOR_CONFIG)" in capsys.readouterr().err


def test_bad_log_level_variable_fails_other_commands_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TGI_COLLECTOR_LOG_LEVEL", "verbose")
    assert main(["parse", "/dev/null"]) == 2
    assert 'log.level: "verbose" is not a log level' in capsys.readouterr().err


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tgi_collector", *args]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    env.update(extra)
    return env


def test_check_config_as_a_real_process(tmp_path: Path) -> None:
    path = write(tmp_path, "[watch]\nmax_subscribers = 5\n")
    result = subprocess.run(
        _cli("check-config", str(path)),
        capture_output=True, text=True, timeout=60, check=False,
        env=_clean_env(TGI_COLLECTOR_LISTEN="127.0.0.1:7001"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "max_subscribers = 5  # file\n" in result.stdout
    assert 'listen = "127.0.0.1:7001"  # env TGI_COLLECTOR_LISTEN\n' in result.stdout
    bad = write(tmp_path, "[watch]\nmax_subscribers = -5\n", "bad.toml")
    result = subprocess.run(
        _cli("check-config", str(bad)),
        capture_output=True, text=True, timeout=60, check=False, env=_clean_env(),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert "watch.max_subscribers: must be from 1 to 2147483647, not -5" in result.stderr


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _health(port: int, deadline: float) -> str:
    async with CollectorClient(f"127.0.0.1:{port}") as client, asyncio.timeout(deadline):
        while True:
            try:
                return await client.health(timeout=1)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)


async def test_serve_with_a_config_file(tmp_path: Path, unused_port: int) -> None:
    """``serve --config FILE``, a real process: it listens where the file says; SIGTERM ends it."""
    path = write(
        tmp_path,
        f'listen = "127.0.0.1:{unused_port}"\ngrace_seconds = 1\n'
        '[watch]\nmin_interval_seconds = 0.5\n[log]\nlevel = "INFO"\n',
    )
    process = await asyncio.create_subprocess_exec(
        *_cli("serve", "--config", str(path)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=_clean_env(),
    )  # fmt: skip
    try:
        assert await _health(unused_port, 30) == "SERVING"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr
        assert f"configuration file {path}" in stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_serve_with_a_bad_file_exits_2_before_listening(tmp_path: Path, unused_port: int) -> None:
    path = write(
        tmp_path, f'listen = "127.0.0.1:{unused_port}"\n[watch]\nmax_subscribers = "many"\n'
    )
    result = subprocess.run(
        _cli("serve", "--config", str(path)),
        capture_output=True, text=True, timeout=60, check=False, env=_clean_env(),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "tgi-collector: invalid configuration: watch.max_subscribers: must be an integer, not the"
        f' string "many" (in {path})\n'
    )
    assert not _listening(unused_port)


def test_what_check_config_accepts_serve_can_start_with(capsys: pytest.CaptureFixture[str]) -> None:
    # gRPC takes the keepalive interval in milliseconds as a C int: the server's own check.
    assert main(["check-config", "--keepalive-min-ping-interval", "3000000"]) == 2
    err = capsys.readouterr().err
    assert "keepalive_min_ping_interval_seconds must be at most 2147483 s" in err
