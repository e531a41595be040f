"""Tag selection against a real registry: each filter alone, then all of them together, with
`check --explain` naming the filter that dropped each tag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from regsync.config import load_config
from regsync.runner import run
from tests.policy_helpers import image
from tests.support import FAST_RETRIES, Registry, mirror_config, regsync_json

TAGS = [
    "1.0",
    "1.5",
    "2.0",
    "2.0-alpine",
    "2.1",
    "2.2-rc1",
    "3.0",
    "v2.1.1",
    "nightly",
    "2.1-debug",
]


def selection(summary: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    (repo,) = summary["plan"][0]["repos"]
    return repo["selected"], {f["tag"]: f["by"] for f in repo["filtered"]}


@pytest.fixture
def seeded(source_registry: Registry) -> Registry:
    for tag in TAGS:
        image(source_registry, "diamol/app", tag)
    return source_registry


ALONE = {
    "{include: ['2\\..*']}": ["2.0", "2.0-alpine", "2.1", "2.1-debug", "2.2-rc1"],
    "{exclude: ['.*-.*', 'nightly']}": ["1.0", "1.5", "2.0", "2.1", "3.0", "v2.1.1"],
    "{semver: '>=1.5, <3'}": ["1.5", "2.0", "2.0-alpine", "2.1", "2.1-debug", "v2.1.1"],
    "{latest: 2}": ["2.2-rc1", "3.0"],
}


async def test_each_filter_alone(tmp_path: Path, seeded: Registry, dest_registry: Registry) -> None:
    """In-process `check` (plan only) per filter; the combined test below goes through the CLI."""
    for tags, selected in ALONE.items():
        cfg = load_config(
            mirror_config(tmp_path, seeded, dest_registry, "diamol/app", f"tags: {tags}")
        )

        result = await run(cfg, cfg.rules, plan_only=True)

        (plan,) = result.rules[0].plans
        assert list(plan.selected) == selected, tags
        assert sorted([*plan.selected, *(f.tag for f in plan.filtered)]) == sorted(TAGS)
        assert dest_registry.tags("diamol/app") == []


def test_filters_combined_in_order_and_explained(
    tmp_path: Path, seeded: Registry, dest_registry: Registry
) -> None:
    extra = r"""
    tags:
      include: ['v?\d.*']
      exclude: ['.*-debug']
      semver: '>=1.0, <3'
      latest: 2
    """
    cfg = mirror_config(tmp_path, seeded, dest_registry, "diamol/app", extra)

    code, plan, stderr = regsync_json("check", cfg, "--explain", env=FAST_RETRIES)

    assert code == 1
    chosen, filtered = selection(plan)
    assert chosen == ["2.1", "v2.1.1"]  # 2.1.1 and 2.1 are the two highest versions
    assert filtered == {
        "nightly": "include",
        "2.1-debug": "exclude",
        "2.2-rc1": "semver",
        "3.0": "semver",
        "1.0": "latest",
        "1.5": "latest",
        "2.0": "latest",
        "2.0-alpine": "latest",
    }
    assert "    filtered   2.2-rc1 by semver: 2.2rc1 is outside '>=1.0, <3'" in stderr
    assert "    filtered   1.0 by latest: not among the 2 highest versions" in stderr
    assert "    copy       v2.1.1 (missing)" in stderr

    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    assert dest_registry.tags("diamol/app") == ["2.1", "v2.1.1"]
