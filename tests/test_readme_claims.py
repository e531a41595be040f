"""The README's tables are claims: each row is checked here against the code, so a metric,
option or JSON field the README names cannot silently go missing (or appear unlisted).

- the metrics tables ("Metrics and monitoring"): every row's name, type and labels are a metric
  regsync exports, and every metric regsync declares has a row;
- the commands table ("Commands"): every option a row shows is one its command accepts;
- the JSON summary ("Commands"): every field of the example, and each field the text below it
  names, is in what `once --json` prints, and `check --json` adds `drift` and `plan`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from regsync import metrics as metrics_module
from tests.support import REPO_ROOT, Registry, mirror_config, regsync_json, seed_catalogue

README = (REPO_ROOT / "README.md").read_text()
_METRIC_ROW = re.compile(r"^\| `(regsync_[a-z_]+)` \| (counter|gauge|histogram) \| ([a-z, ]+) \|")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _readme_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    rows = {}
    for line in _section("Metrics and monitoring").splitlines():
        match = _METRIC_ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            rows[name] = (kind, frozenset(label.strip() for label in labels.split(",")))
    return rows


def _declared() -> dict[str, tuple[str, frozenset[str]]]:
    """Every Family regsync declares, named as exported (counters get `_total`)."""
    found = {}
    instance = metrics_module.Metrics()
    for attr in vars(instance).values():
        kind = getattr(attr, "_type", None)
        name = getattr(attr, "_name", None)
        if kind in ("counter", "gauge", "histogram") and name:
            exported = f"{name}_total" if kind == "counter" else name
            found[exported] = (kind, frozenset(attr._labelnames))
    return found


def test_every_metric_row_is_exported_with_its_type_and_labels() -> None:
    """README "Metrics and monitoring": each table row is exactly a declared metric."""
    readme, declared = _readme_metrics(), _declared()
    assert len(readme) >= 20
    for name, (kind, labels) in readme.items():
        assert name in declared, f"README lists {name}, regsync has no such metric"
        assert declared[name] == (kind, labels), (name, declared[name], (kind, labels))
    unlisted = set(declared) - set(readme)
    assert not unlisted, f"metrics missing from the README tables: {sorted(unlisted)}"


_COMMAND_ROW = re.compile(r"^\| `regsync (\w+) ([^`]*)` \|")


@pytest.mark.parametrize(
    "command,options",
    [
        (m.group(1), re.findall(r"--[a-z-]+", m.group(2)))
        for m in map(_COMMAND_ROW.match, _section("Commands").splitlines())
        if m
    ],
)
def test_every_option_in_the_commands_table_is_accepted(command: str, options: list[str]) -> None:
    """README "Commands": the options each row shows are in the command's --help."""
    proc = subprocess.run(
        [sys.executable, "-m", "regsync", command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for option in options:
        assert option in proc.stdout, (command, option)


def _example_rule_keys() -> set[str]:
    block = _section("Commands").split("```json", 1)[1].split("```", 1)[0]
    return set(re.findall(r'"([a-z_]+)":', block)) - {"rules", "ok"}


def test_json_summary_fields_are_what_once_and_check_print(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """README "Commands": the example's fields, `undone`, `orphaned_repositories`, `notes`,
    `platform_subsets`; `check --json` adds per-rule `drift` and the `plan`."""
    seed_catalogue(source_registry, repos=1, tags=1, layers=1, layer_size=1000)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")
    once = regsync_json("once", config)
    assert once.code == 0 and set(once.data) == {"rules", "ok"}
    named = {"undone", "orphaned_repositories", "notes", "platform_subsets"}
    nested = {"copied", "up_to_date", "pruned", "failed", "mounted", "present"}
    keys = set(once.rule) | set(once.rule["tags"]) | set(once.rule["blobs"])
    assert _example_rule_keys() | named <= keys | nested, _example_rule_keys() - keys
    assert set(once.rule["tags"]) == {"copied", "up_to_date", "pruned", "failed"}
    assert set(once.rule["blobs"]) == {"copied", "mounted", "present"}
    checked = regsync_json("check", config)
    assert {"drift"} <= set(checked.rule) and "plan" in checked.data
