"""The argument parser of the ``tgi-collector`` command: sub-commands, options, value checks.

What is here: :func:`build_parser` (every sub-command with its options, help texts and defaults)
and the ``type=`` checks that reject bad values at parse time (exit code 2, argparse's usage
error). Defaults come from the modules that own them (``SimulatorConfig``, the scrape defaults of
:mod:`tgi_collector.targets`), so they cannot drift. The flags of ``serve`` and ``check-config``
come from :func:`tgi_collector.config.add_flags`, one per setting; they default to None (not
given) so that only the flags given override the config file and the environment, and their
values are checked by :func:`tgi_collector.config.load_config`, like the file's.

Why it is separate: the parser is declarative and long, while :mod:`tgi_collector.cli` is about
running the commands; keeping the declaration apart keeps both readable.
"""

from __future__ import annotations

import argparse
import math

from tgi_collector._version import __version__
from tgi_collector.config import CONFIG_ENV, ENV_PREFIX, LOG_FORMATS, LOG_LEVELS, add_flags
from tgi_collector.demo import MIN_DEMO_INTERVAL_SECONDS
from tgi_collector.simulator import SimulatorConfig
from tgi_collector.targets import DEFAULT_TIMEOUT_SECONDS

__all__ = ["build_parser"]


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


_CONFIG_EPILOG = (
    f"Precedence: flag > environment variable > config file > default. Every setting has a"
    f" variable, {ENV_PREFIX} + its key path in capitals with dots as underscores"
    f" (watch.max_subscribers: {ENV_PREFIX}WATCH_MAX_SUBSCRIBERS); lists are comma-separated."
    f" `tgi-collector check-config FILE` shows the effective configuration."
)


def _add_config_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"TOML config file (default: ${CONFIG_ENV}, else none)",
    )


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    """How a client command reaches a collector that wants TLS or a token."""
    group = parser.add_argument_group("connection to the collector")
    group.add_argument(
        "--token-file",
        metavar="FILE",
        help="send the bearer token in FILE (its first line) with every call",
    )
    group.add_argument("--tls", action="store_true", help="use TLS with the system's CAs")
    group.add_argument(
        "--cacert", metavar="FILE", help="use TLS, trusting the CA certificate(s) in FILE"
    )
    group.add_argument("--cert", metavar="FILE", help="client certificate for mutual TLS")
    group.add_argument("--key", metavar="FILE", help="private key of --cert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgi-collector",
        description="Scrape Hugging Face TGI /metrics and serve typed snapshots over gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=LOG_LEVELS,
        help="log level (default: $TGI_COLLECTOR_LOG_LEVEL, [log] level of serve's config file,"
        " else INFO)",
    )
    parser.add_argument(
        "--log-format",
        default=None,
        type=str.lower,
        choices=LOG_FORMATS,
        help="log lines as text or as one JSON object each (default: $TGI_COLLECTOR_LOG_FORMAT,"
        " [log] format of serve's config file, else text)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the gRPC server until SIGTERM/SIGINT.",
        epilog=_CONFIG_EPILOG,
    )
    _add_config_file_option(serve_parser)
    add_flags(serve_parser)

    check_config = commands.add_parser(
        "check-config",
        help="validate a config file and print the effective configuration",
        description=(
            "Validate the configuration serve would use (the file, TGI_COLLECTOR_* variables and"
            " the flags given here) and print it with each value's source. Exit 0 when valid,"
            " 2 with the problems on stderr when not."
        ),
        epilog=_CONFIG_EPILOG,
    )
    check_config.add_argument(
        "file",
        nargs="?",
        default=None,
        metavar="FILE",
        help=f"TOML config file (default: ${CONFIG_ENV}, else none)",
    )
    check_config.add_argument(
        "--json", action="store_true", help="print JSON: each key's value, source and origin"
    )
    add_flags(check_config)

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
    _add_connection_args(health_parser)

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
    _add_connection_args(watch)

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
