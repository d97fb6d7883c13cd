"""The ``tgi-collector`` command line (also ``python -m tgi_collector``).

Sub-commands: ``serve`` (the gRPC server), ``collect URL`` (one scrape, no server needed),
``parse FILE`` (check an exposition), ``simulate`` (a TGI look-alike to point it at), ``watch``
(a live table from a collector's Watch stream) and ``demo`` (simulator, server and live table).
Exit codes: 0 success (also Ctrl-C out of ``watch`` and ``demo``), 1 the target is down or the
file does not parse, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import grpc
from google.protobuf import json_format

from tgi_collector import convert
from tgi_collector._format import format_exposition, format_snapshot
from tgi_collector._table import WatchBoard, retry_reporter, run_live, terminal_mode
from tgi_collector._version import __version__
from tgi_collector.client import CollectorClient
from tgi_collector.demo import MIN_DEMO_INTERVAL_SECONDS, run_demo
from tgi_collector.errors import CollectorError, ExpositionError, TargetDeniedError
from tgi_collector.exposition import parse
from tgi_collector.policy import TargetPolicy
from tgi_collector.scraper import Scraper
from tgi_collector.server import ServerConfig, serve
from tgi_collector.simulator import SimulatorConfig, run_simulator
from tgi_collector.targets import DEFAULT_TIMEOUT_SECONDS, Target, validate_options, validate_url

__all__ = ["main"]

logger = logging.getLogger("tgi_collector")


def _add_scrape_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="overall deadline of the scrape in seconds (default: %(default)s)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=0, help="body limit (0 = default)")
    parser.add_argument("--max-samples", type=int, default=0, help="sample limit (0 = default)")
    parser.add_argument("--no-info", action="store_true", help="do not fetch GET /info")
    parser.add_argument(
        "--raw", action="store_true", help="with --json, include raw_metrics (every family)"
    )
    parser.add_argument(
        "--allow-link-local",
        action="store_true",
        help="allow link-local targets (refused by default: cloud metadata lives there)",
    )


def _non_negative(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def _demo_interval(text: str) -> float:
    value = _non_negative(text)
    if value < MIN_DEMO_INTERVAL_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_DEMO_INTERVAL_SECONDS:g} s")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgi-collector",
        description="Scrape Hugging Face TGI /metrics and serve typed snapshots over gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser(
        "serve", help="run the gRPC server", description="Run the gRPC server until SIGTERM/SIGINT."
    )
    serve_parser.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        help="address to listen on, host:port (default: %(default)s; 0.0.0.0:50051 for all)",
    )
    serve_parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds in-flight calls get on shutdown (default: %(default)s)",
    )
    defaults = ServerConfig()
    watch_group = serve_parser.add_argument_group("Watch limits")
    watch_group.add_argument(
        "--default-watch-interval", type=_positive_float,
        default=defaults.default_watch_interval_seconds,
        help="interval of a Watch that asks for 0 (default: %(default)s s)",
    )  # fmt: skip
    watch_group.add_argument(
        "--min-watch-interval", type=_positive_float,
        default=defaults.min_watch_interval_seconds,
        help="smallest interval a Watch may ask for (default: %(default)s s)",
    )  # fmt: skip
    watch_group.add_argument(
        "--max-subscribers", type=_positive_int, default=defaults.max_subscribers,
        help="open Watch streams in total (default: %(default)s)",
    )  # fmt: skip
    watch_group.add_argument(
        "--max-targets-per-watch", type=_positive_int, default=defaults.max_targets_per_watch,
        help="targets in one Watch (default: %(default)s)",
    )  # fmt: skip
    watch_group.add_argument(
        "--stall-timeout", type=_positive_float, default=defaults.stall_timeout_seconds,
        help="end a subscriber that reads nothing for this long (default: %(default)s s)",
    )  # fmt: skip
    serve_parser.add_argument(
        "--allow-link-local",
        action="store_true",
        help="allow link-local targets (refused by default: cloud metadata lives there)",
    )

    collect = commands.add_parser(
        "collect",
        help="scrape one target now and print its snapshot",
        description="Scrape one TGI /metrics endpoint directly (no server needed).",
    )
    collect.add_argument("url", help="metrics URL, e.g. http://127.0.0.1:8080/metrics")
    collect.add_argument("--instance-id", default="", help="id shown in the snapshot")
    collect.add_argument(
        "--json",
        action="store_true",
        help="print the Snapshot in the protobuf JSON mapping (proto field names)",
    )
    _add_scrape_options(collect)

    parse_parser = commands.add_parser(
        "parse",
        help="parse a Prometheus text exposition file",
        description="Parse a Prometheus text-format 0.0.4 file ('-' for stdin).",
    )
    parse_parser.add_argument("file", help="path of the exposition, or - for stdin")
    parse_parser.add_argument(
        "--json", action="store_true", help="print the families as MetricFamily JSON"
    )

    health_parser = commands.add_parser(
        "health",
        help="ask a collector's gRPC health service (exit 0 when SERVING)",
        description="Check a running collector through the standard gRPC health service.",
    )
    health_parser.add_argument(
        "--server", default="127.0.0.1:50051", help="collector address (default: %(default)s)"
    )
    health_parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")

    watch = commands.add_parser(
        "watch",
        help="live table of targets, streamed by a collector (Watch)",
        description=(
            "Subscribe to a running collector's Watch stream and show a live table per target"
            " (up/down, queue, batch, req/s, tokens/s, error rate, p50/p99 request latency);"
            " the stream is resubscribed with backoff when it ends. Ctrl-C exits."
        ),
    )
    watch.add_argument(
        "--server", default="127.0.0.1:50051", help="collector address (default: %(default)s)"
    )
    watch.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="metrics URL of a target, or ID=URL to give it an instance id",
    )
    watch.add_argument(
        "--interval",
        type=_non_negative,
        default=0.0,
        help="seconds between scrapes (default: 0 = the server's default)",
    )
    watch.add_argument(
        "--json",
        action="store_true",
        help="print every WatchResponse as one line of JSON (proto field names)",
    )
    watch.add_argument(
        "--heartbeat",
        type=_non_negative,
        default=0.0,
        help="ask for a heartbeat after this many silent seconds (default: none)",
    )
    watch.add_argument(
        "--updates-only", action="store_true", help="skip the immediate first snapshots"
    )
    watch.add_argument(
        "--suppress-unchanged",
        action="store_true",
        help="send a target's snapshot only when its values changed",
    )
    watch.add_argument(
        "--count", type=_positive_int, default=None, help="exit after this many snapshots"
    )

    demo = commands.add_parser(
        "demo",
        help="simulator + server + live watch in one command",
        description=(
            "Start a simulated TGI (following the wall clock) and a collector, then show the"
            " collector's Watch stream of it as a live table until Ctrl-C."
        ),
    )
    demo.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        help="collector address to listen on (default: %(default)s; port 0 for any free one)",
    )
    demo.add_argument(
        "--interval",
        type=_demo_interval,
        default=1.0,
        help="seconds between scrapes (default: %(default)s)",
    )
    demo.add_argument(
        "--count", type=_positive_int, default=None, help="exit after this many snapshots"
    )

    simulate = commands.add_parser(
        "simulate",
        help="run a TGI look-alike on loopback",
        description="Serve /metrics and /info like a real TGI, driven by a synthetic workload.",
    )
    simulate.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    simulate.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    simulate.add_argument("--model-id", default=SimulatorConfig.model_id)
    simulate.add_argument("--max-input-tokens", type=int, default=SimulatorConfig.max_input_tokens)
    simulate.add_argument("--max-total-tokens", type=int, default=SimulatorConfig.max_total_tokens)
    simulate.add_argument(
        "--rps",
        type=float,
        default=SimulatorConfig.requests_per_second,
        help="simulated requests per second (default: %(default)s)",
    )
    simulate.add_argument("--seed", type=int, default=None, help="random seed (reproducible runs)")
    return parser


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
    async with CollectorClient(args.server) as client:
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


async def _health(args: argparse.Namespace) -> int:
    async with CollectorClient(args.server) as client:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tgi-collector`` command; returns the exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: one line per scrape is noise for an SRE's terminal.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if args.command == "serve":
            config = ServerConfig(
                listen=args.listen,
                grace_seconds=args.grace,
                allow_link_local=args.allow_link_local,
                default_watch_interval_seconds=args.default_watch_interval,
                min_watch_interval_seconds=args.min_watch_interval,
                max_subscribers=args.max_subscribers,
                max_targets_per_watch=args.max_targets_per_watch,
                stall_timeout_seconds=args.stall_timeout,
            )
            asyncio.run(serve(config))
            return 0
        if args.command == "collect":
            return asyncio.run(_collect(args))
        if args.command == "parse":
            return _parse_file(args)
        if args.command == "health":
            return asyncio.run(_health(args))
        if args.command in ("watch", "demo") and args.log_level == "INFO":
            # The live table owns the terminal: routine INFO lines would tear through it
            # (retries are shown on the table). --log-level DEBUG shows everything.
            logger.setLevel(logging.WARNING)
        if args.command == "watch":
            return _run_live_command(_watch(args))
        if args.command == "demo":
            return _run_live_command(
                run_demo(listen=args.listen, interval=args.interval, count=args.count)
            )
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
        print("tgi-collector: target is not allowed by the scrape policy", file=sys.stderr)
        return 1
    except CollectorError as exc:
        print(f"tgi-collector: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tgi-collector: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
