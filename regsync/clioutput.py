"""What the sync commands print: every line through `secrets` redaction, the `--json` summary
on stdout, a usage error as one line on stderr, and the exit codes (the README's table).

Exit codes: 0 in sync / success, 1 some tag failed (or drift, for check), 2 bad configuration
or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

from regsync.secrets import redact, redact_data

if TYPE_CHECKING:
    from regsync.result import RunResult
    from regsync.verify import VerifyResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def print_text(text: str, file: TextIO | None = None) -> None:
    """All the CLI prints (summaries, reports, errors) goes out here, secrets masked."""
    print(redact(text), file=file or sys.stdout)


def print_json(data: dict[str, Any]) -> None:
    """The --json summary on stdout: string values masked, the structure untouched."""
    print(json.dumps(redact_data(data), indent=2))


def usage_error(args: argparse.Namespace, message: str) -> int:
    """A config or usage error: one line on stderr and, under --json, still one JSON object
    on stdout (scripts parse stdout whatever the exit code)."""
    print_text(f"regsync: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json({"rules": [], "ok": False, "error": message})
    return EXIT_USAGE


def succeeded(result: RunResult, check: bool, verified: list[VerifyResult] | None) -> bool:
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
    """The run's summary: text on stderr (as log records under --log-format json), the JSON
    summary on stdout under --json; `once --verify`'s report after it."""
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
        print_text(render_text(result, check=check, explain=explain), file=sys.stderr)
    if verified is not None and not args.quiet:
        from regsync.verify import render_verify

        print_text(render_verify(verified), file=sys.stderr)
    if args.json:
        data = run_json(result, check=check)
        if verified is not None:
            ok = all(r.ok for r in verified)
            data["verify"] = {"rules": [r.to_json() for r in verified], "ok": ok}
        data["ok"] = succeeded(result, check, verified)
        print_json(data)
