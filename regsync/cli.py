"""Command line: `regsync once | check | verify | validate`.

Exit codes (DESIGN.md): 0 in sync / success, 1 some tag failed (or drift, for check),
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from regsync import __version__
from regsync import shard as shards
from regsync.config import Config, Rule, load_config
from regsync.errors import ConfigError
from regsync.logs import setup_logging
from regsync.runner import run
from regsync.shard import Shard
from regsync.summary import RunResult, render_text
from regsync.verify import render_verify, verify

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SHARD_HELP = "handle only shard I of N of the repositories (default: $REGSYNC_SHARD, else all)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regsync", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"regsync {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=os.environ.get("REGSYNC_CONFIG", "sync.yaml"),
        help="config file (default: $REGSYNC_CONFIG, else ./sync.yaml)",
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    common.add_argument("-q", "--quiet", action="store_true", help="errors only")
    selecting = argparse.ArgumentParser(add_help=False)
    selecting.add_argument(
        "--rule", action="append", default=[], metavar="NAME", help="only this rule (repeatable)"
    )
    selecting.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    once = commands.add_parser(
        "once", parents=[common, selecting], help="run every (or the named) rule once"
    )
    once.add_argument("--dry-run", action="store_true", help="plan and report, change nothing")
    check = commands.add_parser(
        "check", parents=[common, selecting], help="plan only: print the drift, change nothing"
    )
    check.add_argument(
        "--explain",
        action="store_true",
        help="per repository: every tag selected (with its action) or the filter that dropped it",
    )
    for sharded in (once, check):
        sharded.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    verify_cmd = commands.add_parser(
        "verify",
        parents=[common, selecting],
        help="check every destination tag's manifests and blobs exist",
    )
    verify_cmd.add_argument(
        "--repair", action="store_true", help="copy incomplete tags again from the source"
    )
    commands.add_parser("validate", parents=[common], help="load and check the config only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        config = load_config(args.config)
        rules = config.select_rules(getattr(args, "rule", []))
        shard = shards.resolve(args.shard, os.environ) if "shard" in args else Shard()
    except (ConfigError, ValueError) as exc:
        print(f"regsync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "validate":
        print(f"{args.config}: valid, {len(config.rules)} rules", file=sys.stderr)
        return EXIT_OK
    if args.command == "verify":
        return _verify(args, config, rules)
    return _run(args, config, rules, shard)


def _verify(args: argparse.Namespace, config: Config, rules: list[Rule]) -> int:
    try:
        results = asyncio.run(verify(config, rules, repair=args.repair))
    except ConfigError as exc:
        print(f"regsync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    ok = all(r.ok for r in results)
    if not args.quiet:
        print(render_verify(results), file=sys.stderr)
    if args.json:
        print(json.dumps({"rules": [r.to_json() for r in results], "ok": ok}, indent=2))
    return EXIT_OK if ok else EXIT_FAILED


def _run(args: argparse.Namespace, config: Config, rules: list[Rule], shard: Shard) -> int:
    check = args.command == "check"
    dry_run = getattr(args, "dry_run", False)
    try:
        result = asyncio.run(run(config, rules, dry_run=dry_run, plan_only=check, shard=shard))
    except ConfigError as exc:
        print(f"regsync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    report(result, args, check=check)
    if check:
        return EXIT_OK if result.ok and not any(r.drift for r in result.rules) else EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED


def report(result: RunResult, args: argparse.Namespace, *, check: bool) -> None:
    if not args.quiet:
        explain = getattr(args, "explain", False)
        print(render_text(result, check=check, explain=explain), file=sys.stderr)
    if args.json:
        print(result.dumps(check=check))
