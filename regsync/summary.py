"""Rendering of a run's result: the JSON summary, the plan as JSON, and the readable report."""

from __future__ import annotations

import json
from typing import Any

from regsync.plan import Action, RepoPlan, TagAction
from regsync.result import CHECKED_ORPHANS, Orphans, RuleResult, RunResult

ORPHANS_SHOWN = 5  # orphaned repositories named in the summary, the note and /status


def rule_json(rule: RuleResult) -> dict[str, Any]:
    """One rule's counts as the JSON summary and the status page show them."""
    s = rule.stats
    return {
        "name": rule.name,
        "result": rule.result,
        "repos": rule.repos,
        "tags": {
            "copied": rule.copied,
            "up_to_date": rule.up_to_date,
            "pruned": rule.pruned,
            "failed": rule.failed,
        },
        "blobs": {
            "copied": s.blobs_copied,
            "mounted": s.blobs_mounted,
            "present": s.blobs_present,
        },
        "bytes_copied": s.bytes_copied,
        "manifests_pushed": s.manifests_pushed,
        "source_manifest_gets": s.source_manifest_gets,
        "platform_subsets": rule.platform_subsets,
        "left_differing": rule.left_differing,
        "backups": rule.backups,
        "skipped_media_types": rule.skipped_media_types,
        "errors": list(rule.errors),
        "undone": list(rule.undone),
        "orphaned_repositories": orphans_json(rule.orphans),
        "notes": list(rule.notes),
        "duration_seconds": round(rule.duration_seconds, 3),
    }


def run_json(run: RunResult, *, check: bool = False) -> dict[str, Any]:
    """The whole run as ``--json`` prints it (with the plan for `check` and dry runs)."""
    data: dict[str, Any] = {
        "rules": [rule_json(r) for r in run.rules],
        "ok": run.succeeded(check=check),
    }
    if check or run.dry_run:
        for rule, entry in zip(run.rules, data["rules"], strict=True):
            entry["drift"] = drift_json(rule)
        data["plan"] = [plan_json(r) for r in run.rules]
    return data


def orphans_json(orphans: Orphans | None) -> dict[str, Any] | None:
    """Destination repositories in scope the source no longer has: count, the first few and
    the candidates left unchecked (null when it cannot be known: one named repository, no
    destination catalog)."""
    if orphans is None:
        return None
    names = orphans.names
    return {
        "count": len(names),
        "names": list(names[:ORPHANS_SHOWN]),
        "unchecked": orphans.unchecked,
    }


def orphans_note(orphans: Orphans | None) -> list[str]:
    if orphans is None or not (orphans.names or orphans.unchecked):
        return []
    names = orphans.names
    more = f" and {len(names) - ORPHANS_SHOWN} more" if len(names) > ORPHANS_SHOWN else ""
    count = f"at least {len(names)}" if orphans.unchecked else str(len(names))
    unchecked = (
        f"; {orphans.unchecked} more candidates were not checked (at most {CHECKED_ORPHANS} a run)"
        if orphans.unchecked
        else ""
    )
    return [
        f"{count} destination repositories in scope are gone from the source: "
        f"{', '.join(names[:ORPHANS_SHOWN])}{more}{unchecked} (left as they are; "
        "prune_repositories: true deletes their tags)"
    ]


def drift_json(rule: RuleResult) -> dict[str, int]:
    """What the plan would change: the counts of its copy and prune actions."""
    return {
        "copy": sum(len(p.of(Action.COPY)) for p in rule.plans),
        "prune": sum(len(p.of(Action.PRUNE)) for p in rule.plans),
    }


def run_dumps(run: RunResult, *, check: bool = False) -> str:
    return json.dumps(run_json(run, check=check), indent=2)


def plan_json(rule: RuleResult) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "repos": [
            {
                "source": p.source_repo,
                "destination": p.dest_repo,
                "tags": [_action_json(a) for a in p.actions],
                "selected": list(p.selected),
                "filtered": [{"tag": f.tag, "by": f.by, "detail": f.detail} for f in p.filtered],
                "refusals": list(p.refusals),
            }
            for p in rule.plans
        ],
    }


def _action_json(a: TagAction) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tag": a.tag,
        "action": a.action.value,
        "source_digest": a.source_digest,
        "dest_digest": a.dest_digest,
    }
    if a.reason:
        out["reason"] = a.reason
    if a.subset:
        out["platforms"] = a.subset
    if a.artifact_of:
        out["artifact_of"] = a.artifact_of
    if a.backup:
        out["backup"] = a.backup
    if a.backup_clash:
        out["backup_refused"] = "the source has that tag"
    return out


def render_text(run: RunResult, *, check: bool = False, explain: bool = False) -> str:
    """The human report printed on stderr after a run."""
    lines = []
    planning = check or run.dry_run
    for r in run.rules:
        s = r.stats
        if planning:
            lines.append(_plan_headline(r))
        else:
            tags = f"tags copied {r.copied}, pruned {r.pruned}"
            if r.backups:
                tags += f", backups {r.backups}"
            if r.skipped_media_types:
                tags += f", skipped by media_types {r.skipped_media_types}"
            if r.left_differing:
                tags += f", left differing {r.left_differing} (--missing)"
            lines.append(
                f"rule {r.name}: {r.result} in {r.duration_seconds:.1f}s - {r.repos} repos, "
                f"{tags}, up to date {r.up_to_date}, failed {r.failed}; "
                f"blobs copied {s.blobs_copied}, mounted {s.blobs_mounted}, "
                f"present {s.blobs_present}; {_size(s.bytes_copied)} copied; "
                f"{s.source_manifest_gets} source manifest GETs"
            )
        for plan in r.plans:
            if explain:
                lines.extend(_explain(plan))
            elif planning:
                lines.extend(
                    f"  {a.action.value:<6} {plan.dest_repo}:{a.tag}"
                    + (f" ({a.reason})" if a.reason else "")
                    + (f", backup as {a.backup}" if a.backup else "")
                    + (" refused: the source has that tag" if a.backup_clash else "")
                    for a in plan.actions
                    if a.action is not Action.SKIP
                )
        if r.platform_subsets:
            lines.append(
                f"  note: {r.platform_subsets} tags hold a platform subset: their destination "
                "digest differs from the source's (recorded as io.regsync.source.digest)"
            )
        lines.extend(f"  note: {n}" for n in r.notes + orphans_note(r.orphans))
        lines.extend(f"  error: {e}" for e in r.errors)
        if r.undone:
            lines.append(
                f"  {r.undone.total} repositories or tags left undone by the error above "
                "(each listed under `undone` in --json, and in the log with -v)"
            )
    return "\n".join(lines)


def _plan_headline(r: RuleResult) -> str:
    """A plan's line (`check`, `--dry-run`): the drift, never "success" nor blob counts (a
    plan moves no blob); a rule that could not plan everything says so first."""
    drift = drift_json(r)
    state = (
        f"drift: would copy {drift['copy']}, would prune {drift['prune']}"
        if drift["copy"] or drift["prune"]
        else "in sync"
    )
    if r.result != "success":
        state = f"{r.result}, {state}"
    return (
        f"rule {r.name}: {state} - {r.repos} repos, up to date {r.up_to_date}, "
        f"failed {r.failed}; planned in {r.duration_seconds:.1f}s"
    )


def _explain(plan: RepoPlan) -> list[str]:
    """Every tag of one repository: selected (with its action) or the filter that dropped it."""
    lines = [f"  {plan.source_repo} -> {plan.dest_repo}"]
    for a in plan.actions:
        reason = f" ({a.reason})" if a.reason else ""
        lines.append(f"    {a.action.value:<10} {a.tag}{reason}")
    for f in plan.filtered:
        lines.append(f"    {'filtered':<10} {f.tag} by {f.by}: {f.detail}")
    lines.extend(f"    refused    {why}" for why in plan.refusals)
    return lines


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"  # pragma: no cover
