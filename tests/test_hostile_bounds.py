"""Nothing a hostile listing says grows without bound: refused names are counted, and only a
few are quoted per listing and per rule ("… and N more"); every list of a rule's result
(errors, notes) is capped the same way, so `--json`, the log and `/status` stay small."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp import web

from regsync.config import parse_config
from regsync.oci.ref import QUOTED, Listed
from regsync.result import MAX_LINES, Lines, RuleResult
from regsync.runner import run
from regsync.summary import rule_json
from tests.support import Blob, Image, mirror_rule, plain_yaml, regsync_json_async, write_config
from tests.support.scripted import ScriptedRegistry

REPOS = 4
BAD_PER_REPO = 20_000
GOOD = Image.docker([Blob.random(2000, seed="bounded")])


async def test_a_listing_of_many_refused_tag_names_costs_a_count_not_a_line_each(
    tmp_path: Path,
) -> None:
    """Four repositories each list 20,000 invalid tag names beside one good tag: the good
    tags copy, ten names are quoted for the whole rule, one line counts the rest, and the
    JSON summary and stderr stay small."""
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        for i in range(REPOS):
            src.add(f"team/app{i}", "1", GOOD)

        async def tags(request: web.Request, match: re.Match[str]) -> web.Response:
            bad = [f"-bad{j}" for j in range(BAD_PER_REPO)]  # a tag cannot start with "-"
            return web.json_response({"name": match["repo"], "tags": ["1", *bad]})

        src.override("GET", r"^/v2/(?P<repo>team/app\d)/tags/list$", tags)
        config = write_config(tmp_path, plain_yaml(src, dst, mirror_rule(src, dst, "team/*")))

        run = await regsync_json_async("once", config)

    assert run.code == 1, run.stderr[-2000:]
    rule = run.rule
    assert rule["tags"] == {"copied": REPOS, "up_to_date": 0, "pruned": 0, "failed": 0}
    quoted = [e for e in rule["errors"] if "not a valid tag name" in e]
    assert len(quoted) == QUOTED
    assert rule["errors"][-1] == (
        f"… and {REPOS * BAD_PER_REPO - QUOTED} more refused names (not valid names, skipped)"
    )
    assert len(rule["errors"]) == QUOTED + 1
    assert len(json.dumps(run.data)) < 20_000
    # Each quoted name: one warning as it is met, one line in the summary at the end.
    assert run.stderr.count("not a valid tag name") == 2 * QUOTED and len(run.stderr) < 20_000


def test_a_listing_keeps_a_few_refused_names_and_counts_the_rest() -> None:
    listed = Listed.tags(["ok", *[f"-x{i}" for i in range(1000)]])
    assert listed.names == ("ok",)
    assert len(listed.rejected) + listed.more_rejected == 1000 and len(listed.rejected) == QUOTED
    assert len(listed.skipped("tag")) == QUOTED and listed.unquoted == 1000 - QUOTED
    assert listed.report("tag")[-1] == f"… and {1000 - QUOTED} more refused tag names"


def test_every_list_of_a_rule_result_is_capped_with_a_count_of_the_rest() -> None:
    result = RuleResult("r")
    for i in range(10_000):
        result.errors.append(f"tag {i} failed")
    result.notes.extend(f"note {i}" for i in range(MAX_LINES + 5))
    shown = rule_json(result)
    assert len(shown["errors"]) == MAX_LINES + 1
    assert shown["errors"][-1] == f"… and {10_000 - MAX_LINES} more"
    assert shown["notes"][-1] == "… and 5 more"
    lines = Lines(limit=2)
    lines += ["a", "b", "c", "d"]
    assert lines == ["a", "b", "… and 2 more"] and lines.total == 4


def test_one_line_of_a_rule_result_is_cut_short_after_redaction() -> None:
    """An error quoting a source's text at length (megabytes) keeps its first characters; a
    secret across the cut is redacted first, so no part of it shows."""
    from regsync.result import MAX_LINE_CHARS
    from regsync.secrets import SECRETS

    secret = "s3cret-token-" + "q" * 40
    SECRETS.add(secret)
    lines = Lines()
    lines.append("x" * (MAX_LINE_CHARS - 20) + secret + "y" * 1_000_000)
    [line] = lines
    assert len(line) < MAX_LINE_CHARS + 40 and line.endswith(" characters)")
    assert "s3cret" not in line and "***" in line


async def test_an_index_naming_itself_as_its_child_is_one_tag_error() -> None:
    """The child's digest answers with the index again: its bytes do not match the digest,
    so the tag fails at once (no loop, nothing pushed)."""
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        child = "sha256:" + "1" * 64
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": child,
                        "size": 200,
                    }
                ],
            }
        ).encode()
        src.put_raw("team/app", "1", "application/vnd.oci.image.index.v1+json", raw)
        src.manifests[child] = ("application/vnd.oci.image.index.v1+json", raw)
        rule = mirror_rule(src, dst, "team/app")
        config = parse_config(plain_yaml(src, dst, rule))
        result = await run(config, config.rules)
    [outcome] = result.rules
    assert outcome.failed == 1 and "does not match its digest" in outcome.errors[0]
    assert dst.tags == {} and src.count("GET", "/manifests/") <= 3
