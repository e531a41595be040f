"""A rule that mirrors nothing never reports success (issue: "tell the truth", item 1).

A glob matching no repository and a named repository the source does not have are rule
errors: one error line naming the pattern or repository, result `failed`, exit 1, `ok: false`,
and the last-success gauge does not advance. `allow_empty: true` makes them a success with a
warning. Against a real `docker-registry`.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import (
    Blob,
    Image,
    Registry,
    mirror_config,
    push,
    regsync_json,
    run_regsync,
    write_config,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog
from tests.support.registry import RegistryFactory


def _seed(src: Registry) -> None:
    push(src, "diamol/app", "1.0", Image.docker([Blob.random(2000, seed="app")]))


def test_glob_matching_no_repository_fails_the_rule_naming_the_pattern(
    tmp_path: Path, source_registry: Registry, registry_factory: RegistryFactory
) -> None:
    """README "Sources and destinations": a glob that matches nothing is the rule's error."""
    dst = registry_factory(extra_config=ACCESS_LOG)
    _seed(source_registry)
    config = mirror_config(tmp_path, source_registry, dst, "diamoll/*")
    writes = AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 1, run.stderr
    assert run.data["ok"] is False
    assert run.rule["result"] == "failed"
    assert run.rule["errors"] == [
        f"source {source_registry.host}/diamoll/* matches no repository; nothing was synced "
        "(set allow_empty: true on the rule if it may be empty on purpose)"
    ]
    assert run.stderr.count("matches no repository") == 2  # the log line and the summary line
    assert not [r for r in writes.requests() if r.method in ("PUT", "POST", "PATCH")]
    checked = regsync_json("check", config)
    assert checked.code == 1 and checked.rule["result"] == "failed"


def test_named_repository_the_source_lacks_fails_the_rule(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A rule naming one repository that answers tags/list 404 fails, naming it."""
    _seed(source_registry)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/nosuchrepo")

    run = regsync_json("once", config)

    assert run.code == 1, run.stderr
    assert run.data["ok"] is False
    assert run.rule["result"] == "failed"
    (error,) = run.rule["errors"]
    assert error.startswith(
        f"source repository {source_registry.host}/diamol/nosuchrepo does not exist"
    )
    assert run.rule["tags"] == {"copied": 0, "up_to_date": 0, "pruned": 0, "failed": 0}


def test_empty_source_does_not_advance_the_last_success_gauge(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """regsync_sync_runs_total counts the run as failed; no last-success timestamp is set."""
    _seed(source_registry)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamoll/*")
    prom = tmp_path / "regsync.prom"

    proc = run_regsync("once", "-c", config, "--metrics-file", prom)

    assert proc.returncode == 1, proc.stderr
    text = prom.read_text()
    assert 'regsync_sync_runs_total{result="failed",rule="mirror"} 1.0' in text
    assert 'regsync_last_success_timestamp_seconds{rule="mirror"}' not in text


def test_allow_empty_makes_an_empty_match_a_success_with_a_warning(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`allow_empty: true`: exit 0, result success, one warning naming the pattern."""
    _seed(source_registry)
    glob = mirror_config(tmp_path, source_registry, dest_registry, "diamoll/*", "allow_empty: true")
    (tmp_path / "named").mkdir()
    named = mirror_config(
        tmp_path / "named",
        source_registry,
        dest_registry,
        "diamol/nosuchrepo",
        "allow_empty: true",
    )

    for config, what in ((glob, "matches no repository"), (named, "does not exist")):
        run = regsync_json("once", config)
        assert run.code == 0, run.stderr
        assert run.data["ok"] is True and run.rule["result"] == "success"
        assert run.rule["errors"] == []
        assert run.stderr.count(what) == 1 and "WARNING" in run.stderr


def test_a_glob_that_matches_still_succeeds(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """The check counts matches, not tags copied: an up-to-date glob stays a success."""
    _seed(source_registry)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")
    assert regsync_json("once", config).code == 0
    again = regsync_json("once", config)
    assert again.code == 0 and again.rule["tags"]["up_to_date"] == 1


def test_allow_empty_must_be_a_boolean(tmp_path: Path) -> None:
    """`allow_empty` is checked at load like every key: key path and line, exit 2."""
    config = tmp_path / "sync.yaml"
    config.write_text(
        "version: 1\nrules:\n  - name: r\n    source: reg.example/team/*\n"
        "    destination: mirror.example\n    allow_empty: maybe\n"
    )
    proc = run_regsync("validate", "-c", config)
    assert proc.returncode == 2
    assert "rules[0].allow_empty (sync.yaml:6)" in proc.stderr


def test_a_layout_repository_the_source_lacks_is_named_with_the_layout(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`source: oci:DIR//repo` (or `tar:FILE//repo`) naming a repository the layout lacks: the
    error names that repository of the layout, not the layout alone (which exists)."""
    _seed(source_registry)
    tls = ("--tls", f"{source_registry.host}=http", "--tls", f"{dest_registry.host}=http")
    stores = (f"oci:{tmp_path / 'layout'}", f"tar:{tmp_path / 'bundle.tar'}")
    for store in stores:
        made = run_regsync("copy", f"{source_registry.host}/diamol/app", store, *tls)
        assert made.returncode == 0, made.stderr
    for source in (f"{store}//diamol/nosuchrepo" for store in stores):
        proc = run_regsync("copy", source, dest_registry.host, *tls)
        assert proc.returncode == 1, proc.stderr
        assert f"source repository {source} does not exist" in proc.stderr


def _verify_config(tmp_path: Path, src: Registry, dst_registry: Registry, dest: str) -> Path:
    return write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http}}
          "{dst_registry.host}": {{tls: http}}
        rules:
          - {{name: mirror, source: "{src.host}/diamol/*", destination: "{dest}"}}
        """,
    )


def test_verify_of_a_layout_or_bundle_that_does_not_exist_fails_naming_the_path(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """README "Verifying a mirror": a destination `oci:DIR`/`tar:FILE` that is not there
    (a typo, an unmounted disk) is one error naming it, exit 1 -- not "ok, 0 tags"."""
    _seed(source_registry)
    for dest in (f"oci:{tmp_path}/nolayout", f"tar:{tmp_path}/nobundle.tar"):
        run = regsync_json("verify", _verify_config(tmp_path, source_registry, dest_registry, dest))

        assert run.code == 1, run.stderr
        assert run.data["ok"] is False and run.rule["ok"] is False
        assert run.rule["errors"] == [
            f"destination {dest} does not exist; nothing was verified (check the path; "
            "`regsync once` creates it)"
        ]
        assert run.rule["tags_checked"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sync.yaml"]  # nothing created


def test_verify_of_a_registry_repository_that_does_not_exist_fails_naming_it(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A destination repository the registry does not have (404) while the source has tags
    in scope for it fails like a missing layout; with no tag in scope it is not an error
    (a copy would not have made the repository either)."""
    _seed(source_registry)
    config = _verify_config(tmp_path, source_registry, dest_registry, dest_registry.host)

    run = regsync_json("verify", config)

    assert run.code == 1, run.stderr
    assert run.rule["errors"] == [
        f"destination repository {dest_registry.host}/diamol/app does not exist "
        "(the source has 1 tags in scope for it); nothing of it was verified "
        "(`regsync once` copies it)"
    ]
    assert run.stderr.count("does not exist") == 1
    (tmp_path / "scoped").mkdir()
    nothing = mirror_config(
        tmp_path / "scoped", source_registry, dest_registry, "diamol/*", "tags: {include: [x]}"
    )
    scoped = regsync_json("verify", nothing)
    assert scoped.code == 0 and scoped.rule["ok"] is True and scoped.rule["errors"] == []
    (tmp_path / "typed").mkdir()  # media_types may skip every tag: only GETs could tell
    typed = mirror_config(
        tmp_path / "typed",
        source_registry,
        dest_registry,
        "diamol/*",
        "media_types: [application/vnd.oci.image.index.v1+json]",
    )
    skipped = regsync_json("verify", typed)
    assert skipped.code == 0 and skipped.rule["errors"] == []


def test_verify_of_a_layout_or_bundle_a_run_had_nothing_to_write_to_is_no_error(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A destination `oci:DIR`/`tar:FILE` that `once` did not create because the source has
    no tag in the rule's scope (nothing to write) is no error for verify, as for a registry
    repository: `once` exits 0 and verify after it exits 0, `ok`, 0 tags; nothing is created.
    With a tag in scope the missing path is still the error (the test above)."""
    _seed(source_registry)
    for n, dest in enumerate((f"oci:{tmp_path}/nolayout", f"tar:{tmp_path}/nobundle.tar")):
        (tmp_path / str(n)).mkdir()
        config = _verify_config(tmp_path / str(n), source_registry, dest_registry, dest)
        rule = f'destination: "{dest}"'
        config.write_text(config.read_text().replace(rule, f"{rule}, tags: {{include: [x]}}"))
        once = regsync_json("once", config)
        assert once.code == 0 and once.rule["tags"]["copied"] == 0, once.stderr

        run = regsync_json("verify", config)

        assert run.code == 0, run.stderr
        assert run.rule["ok"] is True and run.rule["errors"] == []
        assert run.rule["tags_checked"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]  # nothing created
