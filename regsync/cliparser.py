"""Command line: `regsync once | check | verify | serve | validate | copy | ls | digest | delete`.

The argument parser of every command: options, defaults (some read from the environment when
the parser is built: `$REGSYNC_CONFIG`, `$REGSYNC_LISTEN`) and help text. The one-line commands
add theirs from `regsync.commands`. Start-up: `--help` builds this parser, so it imports
nothing heavy.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from regsync import __version__
from regsync import commands as one_line
from regsync.logs import LOG_FORMATS
from regsync.server import DEFAULT_LISTEN, LISTEN_ENV

SHARD_HELP = "handle only shard I of N of the repositories (default: $REGSYNC_SHARD, else all)"
STATE_HELP = (
    "directory of the content index that lets later runs mount instead of download"
    " (default: $REGSYNC_STATE_DIR, else $XDG_STATE_HOME/regsync or ~/.local/state/regsync)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regsync", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"regsync {__version__}")
    common_config = argparse.ArgumentParser(add_help=False)
    common_config.add_argument(
        "-c",
        "--config",
        default=os.environ.get("REGSYNC_CONFIG", "sync.yaml"),
        help="config file (default: $REGSYNC_CONFIG, else ./sync.yaml)",
    )
    logging_options = argparse.ArgumentParser(add_help=False)
    _logging_options(logging_options)
    common = argparse.ArgumentParser(add_help=False, parents=[common_config, logging_options])
    selecting = argparse.ArgumentParser(add_help=False)
    selecting.add_argument(
        "--rule", action="append", default=[], metavar="NAME", help="only this rule (repeatable)"
    )
    selecting.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_once(commands, [common, selecting])
    _add_check(commands, [common, selecting])
    verify = commands.add_parser(
        "verify",
        parents=[common, selecting],
        help="check every destination tag's manifests and blobs exist",
    )
    verify.add_argument(
        "--repair", action="store_true", help="copy incomplete tags again from the source"
    )
    _add_serve(commands, [common])
    commands.add_parser("validate", parents=[common], help="load and check the config only")
    one_line.add_parsers(commands, logging_options)
    return parser


def _add_once(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    once = commands.add_parser("once", parents=parents, help="run every (or the named) rule once")
    once.add_argument("--dry-run", action="store_true", help="plan and report, change nothing")
    once.add_argument(
        "--full",
        action="store_true",
        help="a full check now: HEAD every tag instead of trusting the digests recorded",
    )
    once.add_argument(
        "--missing",
        action="store_true",
        help="copy only tags the destination lacks; leave differing tags (reported), no prune",
    )
    once.add_argument(
        "--verify",
        action="store_true",
        help="then check every destination tag in scope is complete (as `regsync verify`)",
    )
    once.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write the run's metrics to PATH (node-exporter textfile format, atomically)",
    )
    once.add_argument(
        "--pushgateway", metavar="URL", help="push the run's metrics to this Prometheus Pushgateway"
    )
    once.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    once.add_argument("--state-dir", metavar="DIR", help=STATE_HELP)


def _add_check(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check", parents=parents, help="plan only: print the drift, change nothing"
    )
    check.add_argument(
        "--explain",
        action="store_true",
        help="per repository: every tag selected (with its action) or the filter that dropped it",
    )
    check.add_argument("--shard", metavar="I/N", help=SHARD_HELP)


def _add_serve(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve", parents=parents, help="daemon: every rule on its schedule, HTTP endpoints"
    )
    serve.add_argument(
        "--listen",
        default=os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"/metrics, /healthz, /readyz, /status (default ${LISTEN_ENV}, else {DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long runs in progress may finish their copies (default 30)",
    )
    serve.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    serve.add_argument(
        "--api-token-file",
        metavar="FILE",
        help="bearer token for POST /v1/rules/RULE/run (default: $REGSYNC_API_TOKEN; "
        "neither: the endpoint is disabled)",
    )
    serve.add_argument("--state-dir", metavar="DIR", help=STATE_HELP)


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="log lines: text or json"
    )
