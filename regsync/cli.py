"""The `regsync` entry point: parse the arguments, set up logging, load the config, hand the
command its rules and return its exit code.

Where the rest lives: the parser in `cliparser`, the sync commands (`once`, `check`, `verify`,
`serve`) in `synccommands`, the one-line commands (`copy`, `ls`, `digest`, `delete`) in
`commands`, what they print and the exit codes in `clioutput`, the settings read from the
environment in `clienv`, the process's start-up (collector, early SIGHUP) in `startup`.

Start-up: `--help`, `--version` and `validate` import only what they use. aiohttp (the
runner), prometheus-client (metrics), croniter (schedules) and rich (progress) load inside
the commands that need them; a guard test pins this down.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from regsync import commands as one_line
from regsync import synccommands
from regsync.clioutput import EXIT_OK, print_text, usage_error
from regsync.cliparser import build_parser
from regsync.logs import setup_logging
from regsync.startup import EarlyHangup, collector_paused


def main(argv: Sequence[str] | None = None) -> int:
    with collector_paused():  # until the command's imports are done (`startup.started`)
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    hangup = EarlyHangup()
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
        return one_line.main(args, synccommands.copy_rule)
    from regsync import shard as shards
    from regsync.config import load_config
    from regsync.errors import ConfigError
    from regsync.shard import Shard

    try:
        config = load_config(args.config)
        rules = config.select_rules(getattr(args, "rule", []))
        shard = shards.resolve(args.shard, os.environ) if "shard" in args else Shard()
    except (ConfigError, ValueError) as exc:
        return usage_error(args, str(exc))
    if args.command == "validate":
        print_text(f"{args.config}: valid, {len(config.rules)} rules", file=sys.stderr)
        return EXIT_OK
    if args.command == "verify":
        return synccommands.verify_rules(args, config, rules)
    if args.command == "serve":
        synccommands.no_created_series()
        return synccommands.serve_rules(args, config, shard, hangup)
    return synccommands.run_rules(args, config, rules, shard)
