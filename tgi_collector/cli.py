"""The ``tgi-collector`` command line (also ``python -m tgi_collector``).

Sub-commands: ``serve`` (the gRPC server), ``check-config`` (validate and print the configuration
``serve`` would use), ``collect URL`` (one scrape, no server needed), ``parse FILE`` (check an
exposition), ``simulate`` (a TGI look-alike to point it at), ``watch`` (a live table from a
collector's Watch stream) and ``demo`` (simulator, server and live table).
Exit codes: 0 success (also Ctrl-C out of ``watch`` and ``demo``), 1 the target is down or the
file does not parse, 2 bad usage or an invalid configuration (checked before anything starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from tgi_collector import convert
from tgi_collector._cli_args import build_parser
from tgi_collector._format import format_exposition, format_snapshot
from tgi_collector._logging import configure_logging
from tgi_collector._table import WatchBoard, retry_reporter, run_live, terminal_mode
from tgi_collector.client import CollectorClient
from tgi_collector.config import (
    EffectiveConfig,
    config_path,
    flags_from_args,
    load_config,
    resolve_log_format,
    resolve_log_level,
)
from tgi_collector.demo import run_demo
from tgi_collector.errors import CollectorError, ConfigError, ExpositionError, TargetDeniedError
from tgi_collector.exposition import parse
from tgi_collector.policy import DENIED_MESSAGE, TargetPolicy
from tgi_collector.scraper import Scraper
from tgi_collector.server import serve
from tgi_collector.simulator import SimulatorConfig, run_simulator
from tgi_collector.targets import Target, validate_options, validate_url

__all__ = ["main"]

logger = logging.getLogger("tgi_collector")


async def _collect(args: argparse.Namespace) -> int:
    target = Target(instance_id=args.instance_id, url=validate_url(args.url, field="url"))
    options = validate_options(
        timeout_seconds=args.timeout,
        max_body_bytes=args.max_body_bytes,
        max_samples=args.max_samples,
        fetch_info=not args.no_info,
        include_raw_metrics=args.raw,
        field="option",
    )
    async with Scraper(policy=TargetPolicy(allow_link_local=args.allow_link_local)) as scraper:
        snapshot = await scraper.scrape(target, options)
    if args.json:
        print(convert.snapshot_to_json(convert.snapshot_to_proto(snapshot)))
    else:
        print(format_snapshot(snapshot))
    return 0 if snapshot.up else 1


def _watch_target(text: str) -> tuple[str, str]:
    """``ID=URL`` -> (ID, URL); a plain URL (even one with ``=`` in its query) -> ("", URL)."""
    head, sep, tail = text.partition("=")
    if sep and "://" not in head:
        return head, tail
    return "", text


async def _watch(args: argparse.Namespace) -> int:
    targets = [_watch_target(text) for text in args.urls]
    mode = terminal_mode(sys.stdout, json_lines=args.json)
    interval = f"interval {args.interval:g} s" if args.interval else "server's interval"
    board = WatchBoard(
        title=f"tgi-collector watch  {args.server}  {interval}",
        expected=len(dict.fromkeys(targets)),
    )
    async with _client(args) as client:
        messages = client.watch(
            targets,
            interval=args.interval,
            updates_only=args.updates_only,
            suppress_unchanged=args.suppress_unchanged,
            heartbeat=args.heartbeat,
            on_retry=retry_reporter(board, mode, sys.stderr),
        )
        try:
            await run_live(
                messages,
                board,
                sys.stdout,
                mode=mode,
                count=args.count,
                flush_after=args.interval or 1.0,
            )
        except grpc.aio.AioRpcError as exc:
            print(f"tgi-collector: watch: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
    return 0


async def _until_signal(work: Coroutine[Any, Any, int]) -> int:
    """Run ``work``; SIGINT or SIGTERM cancels it and makes the result 0 (a clean exit)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Off the main thread (tests) there are no signal handlers: Ctrl-C still works there
        # as KeyboardInterrupt, which main() maps to 0 for these commands.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, interrupt)
            installed.append(signum)
    try:
        return await task
    except asyncio.CancelledError:
        if interrupted:
            return 0
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _run_live_command(work: Coroutine[Any, Any, int]) -> int:
    """``watch`` and ``demo``: Ctrl-C is the normal way out (exit 0), so is a closed pipe."""
    try:
        return asyncio.run(_until_signal(work))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # `... | head`: the reader left. Point stdout at /dev/null so the interpreter's final
        # flush does not complain again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _client(args: argparse.Namespace) -> CollectorClient:
    """A client for ``--server`` with the command's token and TLS options."""
    token = None
    if args.token_file:
        lines = Path(args.token_file).read_text(encoding="utf-8").splitlines()
        # The server's token file format: the first line that is not blank or a comment.
        tokens = (line.strip() for line in lines)
        token = next((line for line in tokens if line and not line.startswith("#")), "")

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    try:
        return CollectorClient(
            args.server,
            token=token,
            tls=args.tls,
            root_certificates=read(args.cacert),
            certificate_chain=read(args.cert),
            private_key=read(args.key),
        )
    except ValueError as exc:  # a bad token file or half a client certificate
        raise ConfigError(str(exc)) from exc


async def _health(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        try:
            status = await client.health(timeout=args.timeout)
        except grpc.aio.AioRpcError as exc:
            print(f"{args.server}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"{args.server}: {status}")
    return 0 if status == "SERVING" else 1


def _parse_file(args: argparse.Namespace) -> int:
    name = "<stdin>" if args.file == "-" else args.file
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"tgi-collector: cannot read {name}: {exc}", file=sys.stderr)
        return 1
    try:
        exposition = parse(text)
    except ExpositionError as exc:
        print(f"{name}:{exc.line_number}: {exc.reason}", file=sys.stderr)
        return 1
    if args.json:
        families = [
            json_format.MessageToDict(message, preserving_proto_field_name=True)
            for message in convert.families_to_proto(exposition)
        ]
        print(json.dumps({"families": families}, indent=2))
    else:
        print(format_exposition(exposition))
    return 0


def _effective_config(args: argparse.Namespace) -> EffectiveConfig:
    """``serve`` and ``check-config``: the file, the environment and the flags, merged."""
    flag_value = args.file if args.command == "check-config" else args.config
    path, origin = config_path(flag_value, os.environ)
    return load_config(path, environ=os.environ, flags=flags_from_args(args), path_origin=origin)


def _print_config_error(exc: ConfigError) -> None:
    if len(exc.problems) == 1:
        print(f"tgi-collector: invalid configuration: {exc.problems[0]}", file=sys.stderr)
    else:
        lines = "".join(f"\n  {problem}" for problem in exc.problems)
        print(f"tgi-collector: invalid configuration:{lines}", file=sys.stderr)


def _check_config(args: argparse.Namespace, effective: EffectiveConfig) -> int:
    for warning in effective.warnings:
        print(f"tgi-collector: warning: {warning}", file=sys.stderr)
    print(effective.to_json() if args.json else effective.to_toml(), end="\n" if args.json else "")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tgi-collector`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    effective: EffectiveConfig | None = None
    try:
        if args.command in ("serve", "check-config"):
            # Everything is checked here, before anything starts.
            effective = _effective_config(args)
            log_level, log_format = effective.log_level, effective.log_format
        else:
            log_level = resolve_log_level(args.log_level, os.environ)
            log_format = resolve_log_format(args.log_format, os.environ)
    except ConfigError as exc:
        _print_config_error(exc)
        return 2
    configure_logging(log_level, log_format)
    try:
        if effective is not None and args.command == "check-config":
            return _check_config(args, effective)
        if effective is not None:
            for warning in effective.warnings:
                logger.warning("configuration: %s", warning)
            if effective.config_file:
                logger.info("configuration file %s", effective.config_file)
            asyncio.run(serve(effective.server))
            return 0
        if args.command == "collect":
            return asyncio.run(_collect(args))
        if args.command == "parse":
            return _parse_file(args)
        if args.command == "health":
            return asyncio.run(_health(args))
        if args.command in ("watch", "demo"):
            live = (
                _watch(args)
                if args.command == "watch"
                else run_demo(listen=args.listen, interval=args.interval, count=args.count)
            )
            # The live table owns the terminal: routine INFO lines would tear through it
            # (retries are shown on the table). --log-level DEBUG shows everything.
            previous = logger.level
            if log_level == "INFO":
                logger.setLevel(logging.WARNING)
            try:
                return _run_live_command(live)
            finally:
                logger.setLevel(previous)
        config_sim = SimulatorConfig(
            model_id=args.model_id,
            max_input_tokens=args.max_input_tokens,
            max_total_tokens=args.max_total_tokens,
            requests_per_second=args.rps,
            seed=args.seed,
        )
        print(f"simulated TGI on http://{args.host}:{args.port}/metrics", flush=True)
        asyncio.run(run_simulator(config_sim, args.host, args.port))
        return 0
    except TargetDeniedError:
        print(f"tgi-collector: {DENIED_MESSAGE}", file=sys.stderr)
        return 1
    except CollectorError as exc:
        print(f"tgi-collector: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tgi-collector: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
