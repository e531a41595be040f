"""`check` and `once --dry-run` say what a plan would change, and nothing else (issue "tell the
truth", item 6): the text says `drift: would copy N, would prune M` or `in sync`, with no blob
counts; the JSON carries per rule `"drift": {"copy": N, "prune": M}`, equal to the counts of
the plan's actions. Against real `docker-registry` processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import Registry, mirror_config, regsync_json, run_regsync, seed_catalogue


def _plan_counts(data: dict[str, Any]) -> dict[str, int]:
    actions = [t["action"] for rule in data["plan"] for repo in rule["repos"] for t in repo["tags"]]
    return {"copy": actions.count("copy"), "prune": actions.count("prune")}


def test_check_text_and_json_agree_on_the_drift(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """README "Commands": `check` exits 1 with drift; its text and JSON give the same counts."""
    cat = seed_catalogue(source_registry, repos=2, tags=3, layers=1, layer_size=1000)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*", "prune: true")

    checked = regsync_json("check", config)

    assert checked.code == 1 and checked.data["ok"] is False
    assert checked.rule["drift"] == {"copy": 6, "prune": 0} == _plan_counts(checked.data)
    assert checked.rule["tags"]["copied"] == 0  # what was done: nothing, it is a plan
    text = run_regsync("check", "-c", config).stderr
    assert "rule mirror: drift: would copy 6, would prune 0 - 2 repos" in text, text
    assert "success" not in text and "blobs" not in text

    assert regsync_json("once", config).code == 0
    source_registry.delete_manifest("diamol/app00", cat.digest("diamol/app00", "1.0.0"))
    dry = regsync_json("once", config, "--dry-run")
    assert dry.code == 0
    assert dry.rule["drift"] == {"copy": 0, "prune": 1} == _plan_counts(dry.data)
    text = run_regsync("once", "-c", config, "--dry-run").stderr
    assert "rule mirror: drift: would copy 0, would prune 1" in text, text


def test_check_in_sync_says_so(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Right after a successful `once`, `check` exits 0, says `in sync`, drift is zero."""
    seed_catalogue(source_registry, repos=1, tags=2, layers=1, layer_size=1000)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")
    assert regsync_json("once", config).code == 0

    checked = regsync_json("check", config)

    assert checked.code == 0 and checked.data["ok"] is True
    assert checked.rule["drift"] == {"copy": 0, "prune": 0}
    text = run_regsync("check", "-c", config).stderr
    assert "rule mirror: in sync - 1 repos, up to date 2, failed 0" in text, text
    once = regsync_json("once", config)
    assert "drift" not in once.rule  # a run that did the work reports what it did
