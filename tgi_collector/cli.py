"""The ``tgi-collector`` command line (also ``python -m tgi_collector``).

Sub-commands: ``serve`` (the gRPC server), ``collect URL`` (one scrape, no server needed),
``parse FILE`` (check an exposition) and ``simulate`` (a TGI look-alike to point it at).
Exit codes: 0 success, 1 the target is down or the file does not parse, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

import grpc
from google.protobuf import json_format

from tgi_collector import convert
from tgi_collector._format import format_exposition, format_snapshot
from tgi_collector._version import __version__
from tgi_collector.client import CollectorClient
from tgi_collector.demo import run_demo
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

    demo = commands.add_parser(
        "demo",
        help="simulator + server + client in one command",
        description="Start a simulated TGI and a collector, then Collect through gRPC.",
    )
    demo.add_argument("--listen", default="127.0.0.1:50051", help="default: %(default)s")
    demo.add_argument("--interval", type=float, default=2.0, help="seconds between Collect calls")
    demo.add_argument("--count", type=int, default=None, help="stop after this many calls")

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
            )
            asyncio.run(serve(config))
            return 0
        if args.command == "collect":
            return asyncio.run(_collect(args))
        if args.command == "parse":
            return _parse_file(args)
        if args.command == "health":
            return asyncio.run(_health(args))
        if args.command == "demo":
            asyncio.run(run_demo(listen=args.listen, interval=args.interval, count=args.count))
            return 0
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
