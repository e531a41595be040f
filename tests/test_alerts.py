"""deploy/: the Prometheus alert rules (promtool check + unit tests) and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from regsync.metrics import Metrics
from tests.support import REPO_ROOT

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "regsync-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: `make system-deps` installs Debian's prometheus"
)
_METRIC = re.compile(r"\b((?:regsync|process)_[a-z_]+)")


def promtool(*args: str | Path, cwd: Path = PROMETHEUS) -> str:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def exported_names() -> set[str]:
    """Every sample name a daemon exports (after some work, so each family has samples)."""
    metrics = Metrics(process=True)
    metrics.rule_configured("r", 60)
    metrics.request_done("reg", "GET", "200", 0.1)
    metrics.ratelimit_seen("reg", 1, 2)
    metrics.registry_paused("reg", None)
    metrics.last_success.labels("r").set(1)
    metrics.out_of_sync.labels("r").set(0)
    metrics.duration.labels("r").observe(1)
    for outcome in ("copied", "up_to_date", "failed"):
        metrics.last_result.labels("r", "success").set(1)
        metrics.tags.labels("r", outcome).inc()
    text = metrics.render().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "regsync-alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


@needs_promtool
def test_alert_rules_are_valid() -> None:
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", "regsync-alerts.yml")


@needs_promtool
def test_alert_rules_unit_tests_pass() -> None:
    """Staleness (fires after 2 intervals + for, clears on success), never synced, failing
    runs, rate limit nearly spent, registry down."""
    out = promtool("test", "rules", "regsync-alerts.test.yml")
    assert "SUCCESS" in out and "FAILED" not in out


@needs_promtool
def test_example_prometheus_config_is_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, parses as a recording rule."""
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        promql = expr.replace("$__rate_interval", "5m")
        promql = re.sub(r"\$(job|instance|rule)\b", ".*", promql)
        rules.append({"record": f"regsync:dashboard_{i}", "expr": promql})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", path, cwd=tmp_path)


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_names()
    used = {m for expr in alert_exprs() + dashboard_exprs() for m in _METRIC.findall(expr)}
    assert used, "no metrics referenced"
    assert used <= exported, used - exported
    # The headline metrics are on the dashboard.
    board = " ".join(dashboard_exprs())
    for name in (
        "regsync_last_success_timestamp_seconds",
        "regsync_out_of_sync_tags",
        "regsync_bytes_copied_total",
        "regsync_registry_up",
        "regsync_ratelimit_remaining",
    ):
        assert name in board, name


def test_dashboard_is_importable_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "regsync" and board["title"] == "regsync"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "instance", "rule"} <= names
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
