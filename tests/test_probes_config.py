"""Probes of the command line and the config as an operator would try them: `--json` on a
config or usage error, and rules that would copy their own copies again every run.

These open no sockets: nothing here gets past loading the config.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.support import run_regsync, write_config

HOST = "127.0.0.1:5000"  # never contacted: nothing here gets past loading the config


def one_registry_config(tmp_path: Path, rules: str) -> Path:
    """``HOST`` over plain HTTP, then ``rules`` (the YAML list items of ``rules:``, dedented
    and re-indented) from line 5 of sync.yaml on."""
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ")
    return write_config(
        tmp_path, f'version: 1\nregistries:\n  "{HOST}": {{tls: http}}\nrules:\n{body}\n'
    )


@pytest.mark.parametrize("command", [["once"], ["check", "--explain"], ["verify"]])
@pytest.mark.parametrize("problem", ["missing", "directory", "invalid"])
def test_json_stdout_is_one_object_even_for_a_config_error(
    tmp_path: Path, command: list[str], problem: str
) -> None:
    """Scripts parse stdout whatever the exit code: a config error under --json is still one
    JSON object (``ok`` false, the error), next to the one line on stderr, and exit 2."""
    config = {
        "missing": tmp_path / "absent.yaml",
        "directory": tmp_path,
        "invalid": write_config(tmp_path, "version: 1\nrules: [{name: x, source: a/b}]\n"),
    }[problem]
    proc = run_regsync(*command, "-c", config, "--json")
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is False and data["rules"] == [], data
    assert proc.stderr.strip() == f"regsync: {data['error']}", proc.stderr
    assert config.name in data["error"], data


def test_json_stdout_for_a_bad_shard_and_metrics_file(tmp_path: Path) -> None:
    """A bad --shard is a usage error (exit 2, one JSON error object); a --metrics-file that
    cannot be written is logged, and the exit code and JSON stay the sync's (README)."""
    rule = "{name: x, source: 127.0.0.1:9/a, destination: 127.0.0.1:9/b}"
    config = write_config(tmp_path, f"version: 1\nrules: [{rule}]\n")
    bad_shard = run_regsync("once", "-c", config, "--json", "--shard", "3/2")
    bad_file = run_regsync(
        "once", "-c", config, "--json", "--metrics-file", tmp_path / "no" / "m.prom"
    )
    assert bad_shard.returncode == 2, bad_shard.stderr
    error = json.loads(bad_shard.stdout)["error"]
    assert bad_shard.stderr.strip() == f"regsync: {error}", bad_shard.stderr
    assert "shard" in error
    assert bad_file.returncode == 1, bad_file.stderr  # the sync's: nothing listens on :9
    summary = json.loads(bad_file.stdout)
    assert summary["ok"] is False and [r["name"] for r in summary["rules"]] == ["x"]
    assert "cannot write --metrics-file" in bad_file.stderr


@pytest.mark.parametrize(
    ("source", "destination", "example"),
    [
        ("**", "mirror", "mirror/x"),
        ("a/**", "a/m/{path}", "a/m/a/x"),
        ("team/**", "team", "team/team/x"),
    ],
)
def test_a_rule_whose_source_lists_its_own_copies_is_refused(
    tmp_path: Path, source: str, destination: str, example: str
) -> None:
    """`source: reg/**`, `destination: reg/mirror` on one registry: every run would copy the
    previous run's copies again one level deeper (mirror/mirror/...). Refused at load, exit 2,
    naming the rule's destination line and an example repository."""
    config = one_registry_config(
        tmp_path,
        f"""
        - name: loop
          source: {HOST}/{source}
          destination: {HOST}/{destination}
        """,
    )
    proc = run_regsync("validate", "-c", config)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("regsync: rules[0].destination (sync.yaml:7): "), line
    assert f"(e.g. {example})" in line, line


@pytest.mark.parametrize(
    ("source", "destination"),
    [("a/*", "a/m/{name}"), ("team/*", "team"), ("a/**", "b"), ("**", "oci:/tmp/x")],
)
def test_a_rule_writing_beside_its_source_is_accepted(
    tmp_path: Path, source: str, destination: str
) -> None:
    dest = destination if destination.startswith("oci:") else f"{HOST}/{destination}"
    config = one_registry_config(
        tmp_path, f'- {{name: ok, source: "{HOST}/{source}", destination: "{dest}"}}'
    )
    proc = run_regsync("validate", "-c", config)
    assert proc.returncode == 0, proc.stderr


def test_two_rules_listing_each_others_copies_are_refused_and_a_chain_is_not(
    tmp_path: Path,
) -> None:
    """`a/** -> b` and `b/** -> a` on one registry grow `a/b/a/b/...` between them; a chain
    (`c/** -> d`, `d/* -> e`: d's source never lists c's copies) is a normal staging set-up."""

    def config(*rules: str) -> Path:
        lines = [f"- {{name: r{i}, {r}}}" for i, r in enumerate(rules)]
        return one_registry_config(tmp_path, "\n".join(lines))

    loop = run_regsync(
        "validate",
        "-c",
        config(
            f"source: {HOST}/a/**, destination: {HOST}/b",
            f"source: {HOST}/b/**, destination: {HOST}/a",
        ),
    )
    assert loop.returncode == 2, loop.stderr
    (line,) = loop.stderr.strip().splitlines()
    assert line.startswith("regsync: rules[1].destination (sync.yaml:6): rule 'r1' writes"), line
    assert "(e.g. a/b/x)" in line, line
    chain = run_regsync(
        "validate",
        "-c",
        config(
            f"source: {HOST}/c/**, destination: {HOST}/d",
            f"source: {HOST}/d/*, destination: {HOST}/e",
        ),
    )
    assert chain.returncode == 0, chain.stderr
