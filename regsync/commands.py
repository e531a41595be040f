"""The one-line commands: `regsync copy | ls | digest | delete`, no sync.yaml needed.

`copy` builds a one-rule config in memory from its arguments (the specs of `sync.yaml`, checked
by the same models) and hands it to the runner `once` uses: same engine, summary and exit codes.
`ls`, `digest` and `delete` open the same run setup (`session.open_run`) and call the backend
contract directly (see `regsync.lookup`).

Registry settings (`tls`, credentials, CA files) come from `-c FILE` when given, else from
`$REGSYNC_CONFIG` when set (its `registries:`; rules are not needed), else from nothing: the
docker config's credentials and the defaults. `--tls HOST=MODE` overrides one host's `tls`.

Start-up: this module is imported by the CLI's parser, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from regsync.clioutput import EXIT_USAGE

if TYPE_CHECKING:
    from regsync.config import Config, Rule

ONE_LINE = ("copy", "ls", "digest", "delete")
COPY_RULE = "copy"  # the in-memory rule's name: summaries and the content index show it
TLS_MODES = ("verify", "insecure", "http")

RunFn = Callable[[argparse.Namespace, "Config", "list[Rule]"], int]


def add_parsers(commands: Any, logging_options: argparse.ArgumentParser) -> None:
    """The four commands, on the CLI's subparsers (``logging_options``: -v, -q, --log-format)."""
    settings = argparse.ArgumentParser(add_help=False, parents=[logging_options])
    settings.add_argument(
        "-c",
        "--config",
        default=os.environ.get("REGSYNC_CONFIG") or None,
        help="read registry settings (tls, credentials) from this sync.yaml "
        "(default: $REGSYNC_CONFIG if set, else the docker config's credentials)",
    )
    settings.add_argument(
        "--tls",
        action="append",
        default=[],
        metavar="HOST=MODE",
        help="verify | insecure | http for one registry host (repeatable)",
    )
    copy = commands.add_parser(
        "copy", parents=[settings], help="one-off copy between two specs, without a config"
    )
    copy.add_argument("source", metavar="SOURCE", help="host/repo[:tag], host/ns/*, oci:, tar:")
    copy.add_argument("destination", metavar="DESTINATION", help="host[/path], oci:DIR, tar:FILE")
    copy.add_argument("--tags", action="append", default=[], metavar="RE", help="include regex")
    copy.add_argument("--exclude", action="append", default=[], metavar="RE", help="exclude regex")
    copy.add_argument("--platforms", metavar="LIST", help="all, or e.g. linux/amd64,linux/arm64")
    copy.add_argument("--prune", action="store_true", help="delete tags the source lost")
    copy.add_argument("--dry-run", action="store_true", help="plan and report, change nothing")
    copy.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    copy.add_argument("--state-dir", metavar="DIR", help="directory of the content index")
    ls = commands.add_parser(
        "ls", parents=[settings], help="repositories of a registry or glob; tags of a repository"
    )
    ls.add_argument("spec", metavar="SPEC", help="host, host/ns/*, host/repo, oci:DIR, tar:FILE")
    ls.add_argument("--digests", action="store_true", help="each tag's digest (one HEAD each)")
    ls.add_argument("--json", action="store_true", help="print JSON on stdout")
    digest = commands.add_parser("digest", parents=[settings], help="a tag's digest (one HEAD)")
    digest.add_argument("ref", metavar="REF", help="host/repo:tag")
    delete = commands.add_parser(
        "delete", parents=[settings], help="delete a manifest by digest, or exactly one tag"
    )
    delete.add_argument("ref", metavar="REF", help="host/repo@sha256:... or host/repo:tag")
    delete.add_argument("--yes", action="store_true", help="really delete (else: say what)")


def main(args: argparse.Namespace, run: RunFn) -> int:
    """Run one of the four commands; ``run`` is the CLI's `once` path (for `copy`)."""
    from regsync.errors import ConfigError

    try:
        config = settings_config(args.config, args.tls)
        if args.command == "copy":
            config = copy_config(config, args)
            return run(args, config, list(config.rules))
    except (ConfigError, ValueError) as exc:
        return usage_error(args, str(exc))
    from regsync import lookup

    command = {"ls": lookup.ls, "digest": lookup.digest, "delete": lookup.delete}
    return command[args.command](args, config)


def usage_error(args: argparse.Namespace, message: str) -> int:
    """One line naming what to fix, exit 2 (and a JSON object under --json)."""
    from regsync.secrets import redact

    print(redact(f"regsync {args.command}: {message}"), file=sys.stderr)
    if getattr(args, "json", False):
        import json

        print(json.dumps({"rules": [], "ok": False, "error": redact(message)}))
    return EXIT_USAGE


def settings_config(path: str | None, tls: list[str]) -> Config:
    """The registries of ``path`` (rules optional) with the ``--tls`` overrides; no rules."""
    from regsync.config import Config, Defaults, RegistryConfig, load_config
    from regsync.config.fields import _host

    registries: dict[str, RegistryConfig] = {}
    if path:
        registries = dict(load_config(path, settings_only=True).registries)
    for item in tls:
        host, sep, mode = item.partition("=")
        if not sep or mode not in TLS_MODES:
            modes = "|".join(TLS_MODES)
            raise ValueError(f"--tls {item!r}: expected HOST=MODE, MODE one of {modes}")
        host = _host(host)
        current = registries.get(host) or RegistryConfig()
        registries[host] = current.model_copy(update={"tls": mode})
    return Config(version=1, registries=registries, defaults=Defaults(), rules=[])


def copy_config(settings: Config, args: argparse.Namespace) -> Config:
    """``settings`` with the one rule the copy's arguments describe, checked as in sync.yaml."""
    from pydantic import ValidationError

    from regsync.config.models import Defaults, _resolve_rule, _RuleSpec
    from regsync.config.problems import pydantic_message
    from regsync.errors import ConfigError

    source, tag = split_tag(args.source)
    destination, dest_tag = split_tag(args.destination)
    if dest_tag is not None and dest_tag != tag:
        raise ConfigError(
            f"DESTINATION {args.destination}: a copy keeps tag names; give the destination "
            "without a tag"
        )
    include = [re.escape(tag)] if tag is not None else (args.tags or [".*"])
    if tag is not None and args.tags:
        raise ConfigError("give either SOURCE:tag or --tags, not both")
    rule: dict[str, Any] = {
        "name": COPY_RULE,
        "source": source,
        "destination": destination,
        "tags": {"include": include, "exclude": args.exclude},
        "prune": args.prune,
    }
    if args.platforms:
        rule["platforms"] = "all" if args.platforms == "all" else args.platforms.split(",")
    try:
        spec = _RuleSpec.model_validate(rule)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = err["loc"]  # empty for a check of the whole rule (e.g. a copy onto itself)
        where = _ARGUMENT.get(str(loc[0]), "argument") if loc else "SOURCE/DESTINATION"
        raise ConfigError(
            f"{where}: {pydantic_message(err)}"
        ) from None  # pydantic's text quotes input
    resolved = _resolve_rule(spec, Defaults())
    return settings.model_copy(update={"rules": [resolved]})


_ARGUMENT = {
    "source": "SOURCE",
    "destination": "DESTINATION",
    "tags": "--tags/--exclude",
    "platforms": "--platforms",
    "prune": "--prune",
}


def split_tag(spec: str) -> tuple[str, str | None]:
    """``host/repo:tag`` -> (``host/repo``, tag); other specs (oci:, tar:, a glob) unchanged."""
    from regsync.oci.ref import is_host, is_tag

    if spec.startswith(("oci:", "tar:")) or "*" in spec:
        return spec, None
    head, slash, last = spec.rpartition("/")
    name, colon, tag = last.partition(":")
    if not colon or (not slash and is_host(name)):  # `registry.local:5000` is a host and port
        return spec, None
    if not is_tag(tag):
        raise ValueError(f"{spec}: invalid tag {tag!r}")
    return head + slash + name, tag
