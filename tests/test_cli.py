"""The command line as a user meets it: exit codes, messages, credentials, no half work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import (
    Blob,
    Image,
    Registry,
    RegistryFactory,
    dead_port,
    mirror_config,
    push,
    registries_yaml,
    regsync_json,
    run_regsync,
    write_config,
)


def test_htpasswd_credentials_from_the_environment(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry
) -> None:
    source = registry_factory(htpasswd={"mirror": "pw-from-env"})
    pushed = push(source, "team/app", "1.0", Image.docker([Blob.random(2000, seed=1)]))
    config = write_config(
        tmp_path,
        f"""
        registries:
          "{source.host}":
            tls: http
            credentials: {{username: mirror, password: "${{SRC_PASSWORD}}"}}
          "{dest_registry.host}": {{tls: http}}
        version: 1
        rules:
          - name: private
            source: {source.host}/team/*
            destination: {dest_registry.host}
        """,
    )

    ok = run_regsync("once", "-c", config, "--json", env={"SRC_PASSWORD": "pw-from-env"})
    assert ok.returncode == 0, ok.stderr
    assert dest_registry.manifest_digest("team/app", "1.0") == pushed.digest

    bad = run_regsync("once", "-c", config, "--json", "-vv", env={"SRC_PASSWORD": "wrong-pw"})
    assert bad.returncode == 1
    (rule,) = json.loads(bad.stdout)["rules"]
    assert rule["result"] == "failed"
    assert rule["errors"] == [
        f"source {source.host} refused the configured credentials: check the username and "
        f"password for {source.host}, or its docker config entry"
    ]
    assert "wrong-pw" not in bad.stderr + bad.stdout


def test_unreachable_source_fails_the_rule_with_one_line(
    tmp_path: Path, dest_registry: Registry
) -> None:
    host = f"127.0.0.1:{dead_port()}"
    config = write_config(
        tmp_path,
        f"""
        registries:
          "{host}": {{tls: http}}
          "{dest_registry.host}": {{tls: http}}
        version: 1
        rules:
          - {{name: down, source: "{host}/team/*", destination: "{dest_registry.host}"}}
        """,
    )
    proc = run_regsync("once", "-c", config, "--json")
    assert proc.returncode == 1
    (rule,) = json.loads(proc.stdout)["rules"]
    assert rule["result"] == "failed"
    assert len(rule["errors"]) == 1 and host in rule["errors"][0]
    assert "Traceback" not in proc.stderr


def test_config_errors_exit_2_before_any_request(tmp_path: Path, source_registry: Registry) -> None:
    config = write_config(
        tmp_path,
        registries_yaml(source_registry)
        + f"""
version: 1
rules:
  - name: bad
    source: {source_registry.host}/team/*
    destination: {source_registry.host}/copy
    tags: {{include: ['1.(']}}
""",
    )
    proc = run_regsync("once", "-c", config)
    assert proc.returncode == 2
    assert "rules[0].tags.include[0] (sync.yaml:10): invalid regex" in proc.stderr
    assert source_registry.catalog() == []  # nothing was created, and no request needed


def test_unknown_rule_name_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
        version: 1
        rules:
          - {name: one, source: "r.example/a/*", destination: "m.example:5000"}
        """,
    )
    proc = run_regsync("once", "-c", config, "--rule", "two")
    assert proc.returncode == 2
    assert "two" in proc.stderr and "one" in proc.stderr
    assert run_regsync("validate", "-c", config).returncode == 0


def test_a_blob_many_copies_need_is_sent_once(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Concurrent copies of tags and repos sharing a base send its bytes exactly once."""
    base = Blob.random(300_000, seed="base")
    own = {}
    for repo in ("team/a", "team/b", "team/c"):
        for tag in ("1", "2"):
            own[(repo, tag)] = push(
                source_registry, repo, tag, Image.docker([base, Blob.random(1000, seed=repo + tag)])
            )
    config = write_config(
        tmp_path,
        registries_yaml(source_registry, dest_registry)
        + f"""
version: 1
rules:
  - {{name: team, source: "{source_registry.host}/team/*", destination: "{dest_registry.host}"}}
""",
    )
    proc = run_regsync("once", "-c", config, "--json")
    assert proc.returncode == 0, proc.stderr
    (rule,) = json.loads(proc.stdout)["rules"]
    distinct: dict[str, int] = {}
    for pushed in own.values():
        distinct.update(pushed.blobs)
    per_repo = {
        repo: {d for (r, _), p in own.items() if r == repo for d in p.blobs}
        for repo in ("team/a", "team/b", "team/c")
    }
    assert rule["bytes_copied"] == sum(distinct.values())
    assert rule["blobs"]["copied"] == len(distinct)
    # The base lives in 3 repos: copied into one, mounted into the two others.
    assert rule["blobs"]["mounted"] == 2
    assert rule["blobs"]["copied"] + rule["blobs"]["mounted"] + rule["blobs"]["present"] == sum(
        len(p.blobs) for p in own.values()
    )
    assert sum(len(b) for b in per_repo.values()) == len(distinct) + 2


async def test_an_unexpected_error_fails_one_tag_not_the_run(
    tmp_path: Path,
    source_registry: Registry,
    dest_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug hit while copying one tag is reported on that tag; the other tags still land."""
    from regsync import reposync, runner
    from regsync.config import load_config

    for tag in ("good", "bad"):
        push(source_registry, "team/app", tag, Image.docker([Blob.random(500, seed=tag)]))
    config = load_config(
        write_config(
            tmp_path,
            registries_yaml(source_registry, dest_registry)
            + f"""
version: 1
rules:
  - {{name: team, source: "{source_registry.host}/team/*", destination: "{dest_registry.host}"}}
""",
        )
    )
    real = reposync.copy_action

    async def flaky(engine, platforms, plan, action, *rest):  # type: ignore[no-untyped-def]
        if action.tag == "bad":
            raise KeyError("boom")
        return await real(engine, platforms, plan, action, *rest)

    monkeypatch.setattr(reposync, "copy_action", flaky)
    result = await runner.run(config, config.rules)

    (rule,) = result.rules
    assert (rule.copied, rule.failed, rule.result) == (1, 1, "partial")
    assert rule.errors == ["team/app:bad: internal error: KeyError('boom')"]
    assert dest_registry.tags("team/app") == ["good"]


def test_json_ok_agrees_with_the_exit_code_for_check_once_and_verify(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`"ok"` is what the exit code says: false for check with drift, true once in sync; false
    for `once --verify` when the verify finds a tag incomplete."""
    pushed = push(source_registry, "ok/app", "1", Image.docker([Blob.random(1500, seed="ok")]))
    config = mirror_config(tmp_path, source_registry, dest_registry, "ok/app")

    drift = regsync_json("check", config)
    copied = regsync_json("once", config)
    settled = regsync_json("check", config)
    layer = json.loads(dest_registry.manifest("ok/app", "1")[1])["layers"][0]["digest"]
    hexa = layer.split(":")[1]
    blobs = dest_registry.storage / "docker/registry/v2/blobs/sha256"
    (blobs / hexa[:2] / hexa / "data").unlink()  # lost behind the registry's back
    broken = regsync_json("once", config, "--verify")

    assert (drift.code, drift.data["ok"]) == (1, False), drift.stderr
    assert (copied.code, copied.data["ok"]) == (0, True), copied.stderr
    assert dest_registry.manifest_digest("ok/app", "1") == pushed.digest
    assert (settled.code, settled.data["ok"]) == (0, True), settled.stderr
    assert broken.code == 1 and broken.data["rules"][0]["tags"]["copied"] == 0
    assert broken.data["verify"]["ok"] is False and broken.data["ok"] is False
