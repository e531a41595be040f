"""Results of a run: per-rule counts, the JSON summary, and the readable report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from regsync.copy import CopyStats
from regsync.plan import Action, RepoPlan


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
    stats: CopyStats = field(default_factory=CopyStats)
    errors: list[str] = field(default_factory=list)
    plans: list[RepoPlan] = field(default_factory=list)
    duration_seconds: float = 0.0
    rule_failed: bool = False  # the rule could not run at all (e.g. listing failed)

    @property
    def result(self) -> str:
        """success | partial | failed, as in regsync_sync_runs_total."""
        if self.rule_failed or (self.failed and not (self.copied or self.up_to_date)):
            return "failed"
        return "partial" if self.failed or self.errors else "success"

    @property
    def drift(self) -> int:
        """Tags a run would change (what `check` reports)."""
        return sum(len(p.of(Action.COPY)) + len(p.of(Action.PRUNE)) for p in self.plans)

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
            "errors": list(self.errors),
            "duration_seconds": round(self.duration_seconds, 3),
        }


@dataclass
class RunResult:
    rules: list[RuleResult]
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(r.result == "success" for r in self.rules)

    def to_json(self, *, check: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"rules": [r.to_json() for r in self.rules], "ok": self.ok}
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
                "tags": [
                    {
                        "tag": a.tag,
                        "action": a.action.value,
                        "source_digest": a.source_digest,
                        "dest_digest": a.dest_digest,
                        **({"reason": a.reason} if a.reason else {}),
                    }
                    for a in p.actions
                ],
                "filtered": [{"tag": t, "by": why} for t, why in p.filtered],
            }
            for p in rule.plans
        ],
    }


def render_text(run: RunResult, *, check: bool = False) -> str:
    """The human report printed on stderr after a run."""
    lines = []
    for r in run.rules:
        s = r.stats
        verb = "would copy" if check or run.dry_run else "copied"
        lines.append(
            f"rule {r.name}: {r.result} in {r.duration_seconds:.1f}s - {r.repos} repos, "
            f"tags {verb} {r.drift if check or run.dry_run else r.copied}, "
            f"up to date {r.up_to_date}, pruned {r.pruned}, failed {r.failed}; "
            f"blobs copied {s.blobs_copied}, mounted {s.blobs_mounted}, "
            f"present {s.blobs_present}; {_size(s.bytes_copied)} copied; "
            f"{s.source_manifest_gets} source manifest GETs"
        )
        if check or run.dry_run:
            for plan in r.plans:
                for a in plan.actions:
                    if a.action is not Action.SKIP:
                        lines.append(
                            f"  {a.action.value:<6} {plan.dest_repo}:{a.tag}"
                            + (f" ({a.reason})" if a.reason else "")
                        )
        lines.extend(f"  error: {e}" for e in r.errors)
    return "\n".join(lines)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"  # pragma: no cover
