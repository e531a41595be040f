"""Results of a run: per-rule counts, the JSON summary, and the readable report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from regsync.copy import CopyStats
from regsync.plan import Action, RepoPlan, TagAction
from regsync.prune import PruneOutcome


@dataclass
class RuleResult:
    name: str
    source: str = ""
    destination: str = ""
    repos: int = 0
    copied: int = 0
    up_to_date: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0  # copies not started because the process is shutting down
    stats: CopyStats = field(default_factory=CopyStats)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth reading, not failures
    plans: list[RepoPlan] = field(default_factory=list)
    duration_seconds: float = 0.0
    rule_failed: bool = False  # the rule could not run at all (e.g. listing failed)

    @property
    def result(self) -> str:
        """success | partial | failed, as in regsync_sync_runs_total."""
        nothing_planned = self.errors and not self.plans  # no repository could be listed
        if (
            self.rule_failed
            or nothing_planned
            or (self.failed and not (self.copied or self.up_to_date))
        ):
            return "failed"
        return "partial" if self.failed or self.interrupted or self.errors else "success"

    @property
    def drift(self) -> int:
        """Tags a run would change (what `check` reports)."""
        return sum(len(p.of(Action.COPY)) + len(p.of(Action.PRUNE)) for p in self.plans)

    @property
    def platform_subsets(self) -> int:
        """Tags whose destination holds a platform subset (its digest differs by design)."""
        return sum(1 for p in self.plans for a in p.actions if a.subset)

    def record_prune(self, outcome: PruneOutcome) -> None:
        self.pruned += len(outcome.pruned)
        self.notes.extend(outcome.notes)
        self.errors.extend(outcome.errors)

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "name": self.name,
            "result": self.result,
            "repos": self.repos,
            "tags": {
                "copied": self.copied,
                "up_to_date": self.up_to_date,
                "pruned": self.pruned,
                "failed": self.failed,
            },
            "blobs": {
                "copied": s.blobs_copied,
                "mounted": s.blobs_mounted,
                "present": s.blobs_present,
            },
            "bytes_copied": s.bytes_copied,
            "manifests_pushed": s.manifests_pushed,
            "source_manifest_gets": s.source_manifest_gets,
            "platform_subsets": self.platform_subsets,
            "errors": list(self.errors),
            "notes": list(self.notes),
            "duration_seconds": round(self.duration_seconds, 3),
        }


@dataclass
class RunResult:
    rules: list[RuleResult]
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(r.result == "success" for r in self.rules)

    def succeeded(self, *, check: bool = False) -> bool:
        """What the exit code says (0: true): every rule succeeded, and for `check` no drift."""
        return self.ok and not (check and any(r.drift for r in self.rules))

    def to_json(self, *, check: bool = False) -> dict[str, Any]:
        ok = self.succeeded(check=check)
        data: dict[str, Any] = {"rules": [r.to_json() for r in self.rules], "ok": ok}
        if check or self.dry_run:
            data["plan"] = [plan_json(r) for r in self.rules]
        return data

    def dumps(self, *, check: bool = False) -> str:
        return json.dumps(self.to_json(check=check), indent=2)


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
    return out


def render_text(run: RunResult, *, check: bool = False, explain: bool = False) -> str:
    """The human report printed on stderr after a run."""
    lines = []
    planning = check or run.dry_run
    for r in run.rules:
        s = r.stats
        if planning:
            copy = sum(len(p.of(Action.COPY)) for p in r.plans)
            prune = sum(len(p.of(Action.PRUNE)) for p in r.plans)
            tags = f"tags would copy {copy}, would prune {prune}"
        else:
            tags = f"tags copied {r.copied}, pruned {r.pruned}"
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
                    for a in plan.actions
                    if a.action is not Action.SKIP
                )
        if r.platform_subsets:
            lines.append(
                f"  note: {r.platform_subsets} tags hold a platform subset: their destination "
                "digest differs from the source's (recorded as io.regsync.source.digest)"
            )
        lines.extend(f"  note: {n}" for n in r.notes)
        lines.extend(f"  error: {e}" for e in r.errors)
    return "\n".join(lines)


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
