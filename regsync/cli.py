"""Command line: `regsync once | check | verify | serve | validate | copy | ls | digest | delete`.

Exit codes (the README's table): 0 in sync / success, 1 some tag failed (or drift, for check),
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from regsync import __version__
from regsync import commands as one_line
from regsync.logs import LOG_FORMATS, setup_logging
from regsync.secrets import redact, redact_data
from regsync.server import DEFAULT_LISTEN, LISTEN_ENV

# Start-up: `--help`, `--version` and `validate` import only what they use. aiohttp (the
# runner), prometheus-client (metrics), croniter (schedules) and rich (progress) load inside
# the commands that need them; a guard test pins this down.
if TYPE_CHECKING:
    from regsync.blobindex import BlobIndex
    from regsync.config import Config, Rule
    from regsync.metrics import Metrics
    from regsync.result import RunResult
    from regsync.shard import Shard
    from regsync.verify import VerifyResult

log = logging.getLogger("regsync.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SHARD_HELP = "handle only shard I of N of the repositories (default: $REGSYNC_SHARD, else all)"
STATE_HELP = (
    "directory of the content index that lets later runs mount instead of download"
    " (default: $REGSYNC_STATE_DIR, else $XDG_STATE_HOME/regsync or ~/.local/state/regsync)"
)


def _print(text: str, file: TextIO | None = None) -> None:
    """All the CLI prints (summaries, reports, errors) goes out here, secrets masked."""
    print(redact(text), file=file or sys.stdout)


def _print_json(data: dict[str, Any]) -> None:
    """The --json summary on stdout: string values masked, the structure untouched."""
    print(json.dumps(redact_data(data), indent=2))


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """A config or usage error: one line on stderr and, under --json, still one JSON object
    on stdout (scripts parse stdout whatever the exit code)."""
    _print(f"regsync: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _print_json({"rules": [], "ok": False, "error": message})
    return EXIT_USAGE


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
    selecting = argparse.ArgumentParser(add_help=False)
    selecting.add_argument(
        "--rule", action="append", default=[], metavar="NAME", help="only this rule (repeatable)"
    )
    selecting.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    logging_options = argparse.ArgumentParser(add_help=False)
    _logging_options(logging_options)
    common = argparse.ArgumentParser(add_help=False, parents=[common_config, logging_options])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    once = commands.add_parser(
        "once", parents=[common, selecting], help="run every (or the named) rule once"
    )
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
    serve = commands.add_parser(
        "serve", parents=[common], help="daemon: every rule on its schedule, HTTP endpoints"
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
    for stateful in (once, serve):
        stateful.add_argument("--state-dir", metavar="DIR", help=STATE_HELP)
    commands.add_parser("validate", parents=[common], help="load and check the config only")
    one_line.add_parsers(commands, logging_options)
    return parser


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="log lines: text or json"
    )


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up allocates ~10^5 objects that live as long as the process (modules, the pydantic
    # validators): collecting while they are made only walks them again and again. The cyclic
    # collector is off until the command's imports are done, then they are frozen out of its
    # reach (`_started`); whatever path ends the command turns it back on.
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _started() -> None:
    """The command's imports are done: freeze what start-up made, collect from here on."""
    gc.freeze()
    gc.enable()


class _EarlyHangup:
    """SIGHUP before the daemon's loop handles it: remembered, never fatal (`systemctl
    reload` right after a start must not kill the process)."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = True


def _main(argv: Sequence[str] | None) -> int:
    hangup = _EarlyHangup()
    serving = "serve" in (argv if argv is not None else sys.argv[1:])
    if serving:
        signal.signal(signal.SIGHUP, hangup)  # first thing: config loading takes a while
    parser = build_parser()
    args = parser.parse_args(argv)
    if serving and args.command != "serve":
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    # The daemon logs its runs at info level by default; one-shot commands print a summary.
    verbosity = args.verbose + (1 if args.command == "serve" else 0)
    setup_logging(-1 if args.quiet else verbosity, args.log_format)
    if args.command in one_line.ONE_LINE:
        return one_line.main(args, _copy)
    from regsync import shard as shards
    from regsync.config import load_config
    from regsync.errors import ConfigError
    from regsync.shard import Shard

    try:
        config = load_config(args.config)
        rules = config.select_rules(getattr(args, "rule", []))
        shard = shards.resolve(args.shard, os.environ) if "shard" in args else Shard()
    except (ConfigError, ValueError) as exc:
        return _usage_error(args, str(exc))
    if args.command == "validate":
        _print(f"{args.config}: valid, {len(config.rules)} rules", file=sys.stderr)
        return EXIT_OK
    if args.command == "verify":
        return _verify(args, config, rules)
    if args.command == "serve":
        _no_created_series()
        return _serve(args, config, shard, hangup)
    return _run(args, config, rules, shard)


def _no_created_series() -> None:
    # `_created` series double every counter's lines and no dashboard here uses them.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]


def open_index(args: argparse.Namespace) -> BlobIndex | None:
    """The persistent content index for commands that copy (a hint: None works too)."""
    from regsync.blobindex import BlobIndex

    return BlobIndex.open(_state_dir(args))


def _state_dir(args: argparse.Namespace) -> Path:
    """--state-dir, else $REGSYNC_STATE_DIR, else the XDG default."""
    from regsync.blobindex import default_state_dir

    given = getattr(args, "state_dir", None)
    return Path(given) if given else default_state_dir(os.environ)


def _verify(args: argparse.Namespace, config: Config, rules: list[Rule]) -> int:
    from regsync import aio
    from regsync.errors import ConfigError
    from regsync.verify import render_verify, verify

    _started()
    try:
        results = aio.run(verify(config, rules, repair=args.repair))
    except ConfigError as exc:
        return _usage_error(args, str(exc))
    except KeyboardInterrupt:
        return 130
    ok = all(r.ok for r in results)
    if not args.quiet:
        _print(render_verify(results), file=sys.stderr)
    if args.json:
        _print_json({"rules": [r.to_json() for r in results], "ok": ok})
    return EXIT_OK if ok else EXIT_FAILED


def _serve(args: argparse.Namespace, config: Config, shard: Shard, hangup: _EarlyHangup) -> int:
    from regsync import aio
    from regsync.daemon import serve  # only this command needs it
    from regsync.eventhttp import load_api_token
    from regsync.server import parse_listen

    _started()
    try:
        host, port = parse_listen(args.listen)
        token = load_api_token(args.api_token_file, os.environ)
    except ValueError as exc:
        return _usage_error(args, str(exc))
    index = open_index(args)
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
        _print(f"regsync: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if index is not None:
            index.close()
    return EXIT_OK


def _copy(args: argparse.Namespace, config: Config, rules: list[Rule]) -> int:
    """`regsync copy`: its one in-memory rule, run exactly as `once` runs a config's."""
    from regsync.shard import Shard

    return _run(args, config, rules, Shard())


def _run(args: argparse.Namespace, config: Config, rules: list[Rule], shard: Shard) -> int:
    from regsync import aio
    from regsync.backends.registry.observer import NullObserver, RequestObserver
    from regsync.errors import ConfigError
    from regsync.events import FanOut, NoEvents, RunEvents
    from regsync.runner import run

    _started()
    check = args.command == "check"
    metrics_file = getattr(args, "metrics_file", None)
    gateway = getattr(args, "pushgateway", None)
    dry_run = getattr(args, "dry_run", False)
    # Metrics nobody exports would vanish with the process: only count when they go out.
    metrics = _run_metrics(rules, not dry_run, shard) if metrics_file or gateway else None
    observer: RequestObserver = metrics or NullObserver()
    try:
        progress = _progress(args)
    except ConfigError as exc:
        return _usage_error(args, str(exc))
    index = None if check or dry_run else open_index(args)
    state_dir = _state_dir(args)  # delta bundles' series: check and --dry-run plan against it
    with progress as display, _closing(index):
        sinks = [sink for sink in (metrics, display) if sink is not None]
        events: RunEvents = FanOut(*sinks) if len(sinks) > 1 else (sinks or [NoEvents()])[0]
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
            return _usage_error(args, str(exc))
        except KeyboardInterrupt:
            return 130
    verified = None
    if getattr(args, "verify", False) and not dry_run:
        from regsync.verify import verify

        try:
            verified = aio.run(verify(config, rules, observer=observer))
        except KeyboardInterrupt:
            return 130
    report(result, args, check=check, verified=verified)
    if metrics is not None:
        export_metrics(metrics, metrics_file, gateway)
    return EXIT_OK if _succeeded(result, check, verified) else EXIT_FAILED


def _run_metrics(rules: list[Rule], record_success: bool, shard: Shard) -> Metrics:
    from regsync.metrics import Metrics
    from regsync.schedule import Timing  # croniter: only when metrics are exported

    _no_created_series()
    metrics = Metrics(record_success=record_success, shard=shard)
    now = time.time()
    for rule in rules:
        metrics.rule_configured(rule.name, Timing(rule.interval, rule.schedule).period(now))
    return metrics


def _succeeded(result: RunResult, check: bool, verified: list[VerifyResult] | None) -> bool:
    """The one answer behind both the exit code and the JSON summary's "ok"."""
    complete = verified is None or all(r.ok for r in verified)
    return result.succeeded(check=check) and complete


def report(
    result: RunResult,
    args: argparse.Namespace,
    *,
    check: bool,
    verified: list[VerifyResult] | None = None,
) -> None:
    from regsync.summary import render_text, rule_json, run_json

    if args.quiet:
        pass
    elif getattr(args, "log_format", "text") == "json":
        # Log shippers read stderr line by line: the summary goes out as log records too.
        summary = logging.getLogger("regsync.summary")
        summary.setLevel(logging.INFO)
        for rule in result.rules:
            fields = {k: v for k, v in rule_json(rule).items() if k != "name"}
            summary.info("rule %s: %s", rule.name, rule.result, extra={"rule": rule.name, **fields})
    else:
        explain = getattr(args, "explain", False)
        _print(render_text(result, check=check, explain=explain), file=sys.stderr)
    if verified is not None and not args.quiet:
        from regsync.verify import render_verify

        _print(render_verify(verified), file=sys.stderr)
    if args.json:
        data = run_json(result, check=check)
        if verified is not None:
            ok = all(r.ok for r in verified)
            data["verify"] = {"rules": [r.to_json() for r in verified], "ok": ok}
        data["ok"] = _succeeded(result, check, verified)
        _print_json(data)


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


def _progress(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """A live display for `once` on a terminal; elsewhere a progress log line per rule at most
    every 30 s (``REGSYNC_PROGRESS_INTERVAL``), at the default verbosity too. A bad interval
    is a ``ConfigError`` (checked wherever the run is, as the other environment settings)."""
    if args.command not in ("once", "copy"):
        return contextlib.nullcontext()
    from regsync.backends.registry.retry import env_number
    from regsync.progress import LOG_INTERVAL, ProgressLog

    interval = env_number(os.environ, "REGSYNC_PROGRESS_INTERVAL", LOG_INTERVAL)
    if args.quiet:
        return contextlib.nullcontext()
    if args.log_format != "text" or not sys.stderr.isatty():
        logger = logging.getLogger("regsync.progress")
        logger.setLevel(logging.INFO)  # shown without -v: it is the run's heartbeat
        return ProgressLog(interval, logger=logger)
    from regsync.progress import ProgressDisplay  # rich loads only for a terminal

    return ProgressDisplay()
