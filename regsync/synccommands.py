"""The commands that run a config's rules: `once` and `check` (and `copy`'s one in-memory
rule, run exactly as `once` runs a config's), `verify` and `serve`.

Each gets the loaded config and its selected rules from `regsync.cli` and returns the exit
code. Start-up: the runner (aiohttp), prometheus-client, croniter and rich load inside the
command that needs them, never at the top (`tests/test_startup.py` guards it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from regsync import clienv
from regsync.clioutput import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    print_json,
    print_text,
    report,
    succeeded,
    usage_error,
)
from regsync.startup import EarlyHangup, started

if TYPE_CHECKING:
    from regsync.backends.registry.observer import RequestObserver
    from regsync.blobindex import BlobIndex
    from regsync.config import Config, Rule
    from regsync.events import RunEvents
    from regsync.metrics import Metrics
    from regsync.shard import Shard
    from regsync.verify import VerifyResult

# The logger's name is in every JSON log line ("logger"): it stays what operators filter on.
log = logging.getLogger("regsync.cli")
INTERRUPTED = 130  # the shell's code for SIGINT


def no_created_series() -> None:
    # `_created` series double every counter's lines and no dashboard here uses them.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]


def verify_rules(args: argparse.Namespace, config: Config, rules: list[Rule]) -> int:
    from regsync import aio
    from regsync.errors import ConfigError
    from regsync.verify import render_verify, verify

    started()
    try:
        results = aio.run(verify(config, rules, repair=args.repair))
    except ConfigError as exc:
        return usage_error(args, str(exc))
    except KeyboardInterrupt:
        return INTERRUPTED
    ok = all(r.ok for r in results)
    if not args.quiet:
        print_text(render_verify(results), file=sys.stderr)
    if args.json:
        print_json({"rules": [r.to_json() for r in results], "ok": ok})
    return EXIT_OK if ok else EXIT_FAILED


def serve_rules(args: argparse.Namespace, config: Config, shard: Shard, hangup: EarlyHangup) -> int:
    from regsync import aio
    from regsync.daemon import serve  # only this command needs it
    from regsync.eventhttp import load_api_token
    from regsync.server import parse_listen

    started()
    try:
        host, port = parse_listen(args.listen)
        token = load_api_token(args.api_token_file, os.environ)
    except ValueError as exc:
        return usage_error(args, str(exc))
    index = clienv.open_index(args)
    try:
        aio.run(
            serve(
                args.config,
                config,
                host,
                port,
                args.grace_period,
                shard,
                index=index,
                hangup_seen=lambda: hangup.seen,
                api_token=token,
            )
        )
    except OSError as exc:
        print_text(
            f"regsync: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr
        )
        return EXIT_USAGE
    finally:
        if index is not None:
            index.close()
    return EXIT_OK


def copy_rule(args: argparse.Namespace, config: Config, rules: list[Rule]) -> int:
    """`regsync copy`: its one in-memory rule, run exactly as `once` runs a config's."""
    from regsync.shard import Shard

    return run_rules(args, config, rules, Shard())


def run_rules(args: argparse.Namespace, config: Config, rules: list[Rule], shard: Shard) -> int:
    """`regsync once` and `check` (the runner; the summary, metrics and exit code after)."""
    from regsync import aio
    from regsync.backends.registry.observer import NullObserver
    from regsync.errors import ConfigError
    from regsync.runner import run

    started()
    check = args.command == "check"
    metrics_file = getattr(args, "metrics_file", None)
    gateway = getattr(args, "pushgateway", None)
    dry_run = getattr(args, "dry_run", False)
    # Metrics nobody exports would vanish with the process: only count when they go out.
    metrics = _run_metrics(rules, not dry_run, shard) if metrics_file or gateway else None
    observer: RequestObserver = metrics or NullObserver()
    try:
        progress = clienv.progress(args)
    except ConfigError as exc:
        return usage_error(args, str(exc))
    index = None if check or dry_run else clienv.open_index(args)
    state_dir = clienv.state_dir(args)  # delta bundles' series: check and --dry-run plan against it
    with progress as display, _closing(index):
        events = _events(metrics, display)
        try:
            result = aio.run(
                run(
                    config,
                    rules,
                    dry_run=dry_run,
                    plan_only=check,
                    missing_only=getattr(args, "missing", False),
                    events=events,
                    observer=observer,
                    shard=shard,
                    index=index,
                    full=getattr(args, "full", False),
                    state_dir=state_dir,
                )
            )
        except ConfigError as exc:
            return usage_error(args, str(exc))
        except KeyboardInterrupt:
            return INTERRUPTED
    try:
        then_verify = getattr(args, "verify", False) and not dry_run
        verified = _verify_after(config, rules, observer) if then_verify else None
    except KeyboardInterrupt:
        return INTERRUPTED
    report(result, args, check=check, verified=verified)
    if metrics is not None:
        export_metrics(metrics, metrics_file, gateway)
    return EXIT_OK if succeeded(result, check, verified) else EXIT_FAILED


def _events(*sinks: RunEvents | None) -> RunEvents:
    """The run's events to every sink there is (metrics, progress), or to none."""
    from regsync.events import FanOut, NoEvents

    present = [sink for sink in sinks if sink is not None]
    return FanOut(*present) if len(present) > 1 else (present or [NoEvents()])[0]


def _verify_after(
    config: Config, rules: list[Rule], observer: RequestObserver
) -> list[VerifyResult]:
    """`once --verify`: every destination tag in scope checked once the run is done."""
    from regsync import aio
    from regsync.verify import verify

    return aio.run(verify(config, rules, observer=observer))


def _run_metrics(rules: list[Rule], record_success: bool, shard: Shard) -> Metrics:
    from regsync.metrics import Metrics
    from regsync.schedule import Timing  # croniter: only when metrics are exported

    no_created_series()
    metrics = Metrics(record_success=record_success, shard=shard)
    now = time.time()
    for rule in rules:
        metrics.rule_configured(rule.name, Timing(rule.interval, rule.schedule).period(now))
    return metrics


def export_metrics(metrics: Metrics, path: str | None, gateway: str | None) -> None:
    """Write the textfile and push to the gateway; a failure is logged, the exit code is the
    sync's (the mirror is what it is whether or not its metrics got out)."""
    if path:
        try:
            metrics.write_textfile(path)
        except OSError as exc:
            log.error("cannot write --metrics-file %s: %s", path, exc.strerror or exc)
    if gateway:
        try:
            metrics.push(gateway)
        except OSError as exc:  # URLError is an OSError
            log.error("cannot push metrics to %s: %s", gateway, getattr(exc, "reason", exc))


@contextlib.contextmanager
def _closing(index: BlobIndex | None) -> Iterator[None]:
    """Commit what the run learned, even when it ended early."""
    try:
        yield
    finally:
        if index is not None:
            index.close()
