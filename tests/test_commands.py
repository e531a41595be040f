"""The one-line commands (`copy`, `ls`, `digest`, `delete`) walked end to end against real
`docker-registry` processes on random ports: the classic exercise of listing a private
registry's tags, finding a digest and deleting by digest, without curl, skopeo or a config."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from regsync import aio, lookup
from regsync.backends.memory import MemoryBackend
from regsync.errors import RegistryError
from regsync.oci.manifest import Descriptor
from tests.support import (
    FAST_RETRIES,
    Blob,
    Image,
    Index,
    Registry,
    RegistryFactory,
    free_port,
    push,
    run_regsync,
    write_config,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog
from tests.support.servers import HubApi


def tls(*registries: Registry) -> list[str]:
    """``--tls HOST=http`` for each test registry (they speak plain HTTP)."""
    return [arg for reg in registries for arg in ("--tls", f"{reg.host}=http")]


def regsync(*args: str, registries: tuple[Registry, ...]) -> subprocess.CompletedProcess[str]:
    return run_regsync(*args, *tls(*registries))


def test_ls_digest_and_delete_walk_the_exercise(source_registry: Registry) -> None:
    """Push two tags sharing one digest and another repository; `ls` lists repositories (of
    the registry and of a glob) and tags with digests; `digest` answers with the pushed digest;
    `delete` of one shared tag keeps its sibling, and a digest delete removes the manifest."""
    reg = source_registry
    shared = push(reg, "team/app", "1", Image.oci([Blob.random(400, seed="shared")]))
    push(reg, "team/app", "1-alias", Image.oci([Blob.random(400, seed="shared")]))
    other = push(reg, "team/other", "v", Image.docker([Blob.random(300, seed="other")]))
    host = reg.host

    listed = regsync("ls", host, "--json", registries=(reg,))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"repositories": ["team/app", "team/other"]}
    glob = regsync("ls", f"{host}/team/*", registries=(reg,))
    assert glob.stdout.split() == ["team/app", "team/other"]
    tags = regsync("ls", f"{host}/team/app", "--digests", "--json", registries=(reg,))
    assert json.loads(tags.stdout) == {
        "repository": f"{host}/team/app",
        "tags": [
            {"name": "1", "digest": shared.digest},
            {"name": "1-alias", "digest": shared.digest},
        ],
    }
    plain = regsync("ls", f"{host}/team/app", "--digests", registries=(reg,))
    assert plain.stdout.splitlines() == [f"1\t{shared.digest}", f"1-alias\t{shared.digest}"]

    found = regsync("digest", f"{host}/team/app:1", registries=(reg,))
    assert (found.returncode, found.stdout.strip()) == (0, shared.digest)

    asked = regsync("delete", f"{host}/team/app:1", registries=(reg,))
    assert asked.returncode == 2 and "would delete tag" in asked.stderr and "--yes" in asked.stderr
    assert reg.tags("team/app") == ["1", "1-alias"]  # nothing deleted without --yes

    deleted = regsync("delete", f"{host}/team/app:1", "--yes", registries=(reg,))
    assert deleted.returncode == 0, deleted.stderr
    assert reg.tags("team/app") == ["1-alias"]
    assert reg.manifest_digest("team/app", "1-alias") == shared.digest  # the sibling survives

    gone = regsync("digest", f"{host}/team/app:1", registries=(reg,))
    assert gone.returncode == 1 and "team/app:1" in gone.stderr and not gone.stdout

    by_digest = regsync("delete", f"{host}/team/other@{other.digest}", "--yes", registries=(reg,))
    assert by_digest.returncode == 0, by_digest.stderr
    assert reg.manifest_digest("team/other", other.digest) is None
    assert reg.tags("team/other") == []


def test_copy_of_a_tag_a_repository_and_a_glob_between_registries(
    source_registry: Registry, dest_registry: Registry
) -> None:
    """`copy` with the specs of sync.yaml: one tag, one repository (under a destination
    path), a glob; the summary and exit code are `once`'s, and the digests the source's."""
    src, dst = source_registry, dest_registry
    one = push(src, "team/app", "1", Image.oci([Blob.random(500, seed="a1")]))
    two = push(src, "team/app", "2", Image.docker([Blob.random(500, seed="a2")]))
    web = push(src, "team/web", "v1", Image.oci([Blob.random(500, seed="w")]))
    pair = (src, dst)

    dry = regsync("copy", f"{src.host}/team/app:1", dst.host, "--dry-run", registries=pair)
    assert dry.returncode == 0, dry.stderr
    assert dst.tags("team/app") == []

    tag = regsync("copy", f"{src.host}/team/app:1", dst.host, "--json", registries=pair)
    assert tag.returncode == 0, tag.stderr
    summary = json.loads(tag.stdout)
    assert summary["ok"] is True
    assert summary["rules"][0]["tags"]["copied"] == 1
    assert dst.tags("team/app") == ["1"]
    assert dst.manifest_digest("team/app", "1") == one.digest

    repo = regsync("copy", f"{src.host}/team/app", f"{dst.host}/mirror", registries=pair)
    assert repo.returncode == 0, repo.stderr
    assert dst.tags("mirror/team/app") == ["1", "2"]
    assert dst.manifest_digest("mirror/team/app", "2") == two.digest

    glob = regsync(
        "copy", f"{src.host}/team/*", f"{dst.host}/all", "--exclude", "2", registries=pair
    )
    assert glob.returncode == 0, glob.stderr
    assert dst.tags("all/team/app") == ["1"]
    assert dst.manifest_digest("all/team/web", "v1") == web.digest


def test_copy_into_a_tar_bundle_and_ls_of_the_bundle(
    tmp_path: Path, source_registry: Registry
) -> None:
    """`copy` of a glob into `tar:FILE` writes a bundle `ls` lists, with the source digests."""
    src = source_registry
    one = push(src, "team/app", "1", Image.oci([Blob.random(500, seed="t1")]))
    web = push(src, "team/web", "v1", Image.docker([Blob.random(500, seed="t2")]))
    bundle = tmp_path / "team.tar"

    done = regsync("copy", f"{src.host}/team/*", f"tar:{bundle}", "--json", registries=(src,))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rules"][0]["tags"]["copied"] == 2
    listed = regsync("ls", f"tar:{bundle}", registries=())
    assert listed.stdout.split() == ["team/app", "team/web"]
    tags = regsync("ls", f"tar:{bundle}//team/web", "--digests", registries=())
    assert tags.stdout.splitlines() == [f"v1\t{web.digest}"]
    app = regsync("ls", f"tar:{bundle}//team/app", "--digests", "--json", registries=())
    assert json.loads(app.stdout)["tags"] == [{"name": "1", "digest": one.digest}]


def test_copy_prune_removes_what_the_source_lost_and_platforms_pick_a_subset(
    source_registry: Registry, dest_registry: Registry
) -> None:
    """`--prune` deletes the destination tag the source deleted (under the prune rails);
    `--platforms` copies only the listed platform of an index (the subset says so: its
    digest differs from the source's, as with `platforms:` in sync.yaml)."""
    src, dst = source_registry, dest_registry
    for tag in ("1", "2", "3"):
        push(src, "team/app", tag, Image.oci([Blob.random(300, seed=f"p{tag}")]))
    gone = src.manifest_digest("team/app", "3")
    pair = (src, dst)
    assert regsync("copy", f"{src.host}/team/app", dst.host, registries=pair).returncode == 0
    assert gone is not None
    src.delete_manifest("team/app", gone)
    kept = regsync("copy", f"{src.host}/team/app", dst.host, registries=pair)
    assert kept.returncode == 0 and dst.tags("team/app") == ["1", "2", "3"]  # no --prune
    pruned = regsync("copy", f"{src.host}/team/app", dst.host, "--prune", "--json", registries=pair)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["rules"][0]["tags"]["pruned"] == 1
    assert dst.tags("team/app") == ["1", "2"]

    layer = Blob.random(300, seed="multi")
    multi = Index.oci([Image.oci([layer]), Image.oci([layer], "linux/arm64")])
    push(src, "team/multi", "1", multi)
    subset = regsync(
        "copy", f"{src.host}/team/multi", dst.host, "--platforms", "linux/arm64", registries=pair
    )
    assert subset.returncode == 0, subset.stderr
    _, raw = dst.manifest("team/multi", "1")
    platforms = [m["platform"]["architecture"] for m in json.loads(raw)["manifests"]]
    assert platforms == ["arm64"]


def test_copy_registry_settings_come_from_a_config_without_rules(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`-c FILE` supplies `registries:` (here tls: http); the file needs no rules. Without
    it (and without --tls) the plain-HTTP registries cannot be reached: the copy fails, 1."""
    src, dst = source_registry, dest_registry
    pushed = push(src, "team/app", "1", Image.oci([Blob.random(300, seed="c")]))
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http}}
          "{dst.host}": {{tls: http}}
        """,
    )
    env = {"REGSYNC_RETRY_ATTEMPTS": "1"}
    done = run_regsync("copy", "-c", config, f"{src.host}/team/app", dst.host, env=env)
    assert done.returncode == 0, done.stderr
    assert dst.manifest_digest("team/app", "1") == pushed.digest
    failed = run_regsync("copy", f"{src.host}/team/app", f"{dst.host}/x", env=env)
    assert failed.returncode == 1
    assert dst.tags("x/team/app") == []


def test_copy_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """A bad spec, --tls or tag names what to fix in one line and touches no registry."""
    cases = [
        (["copy", "localhost:1/Team", "localhost:2"], "SOURCE"),
        (["copy", "localhost:1/team/app", "nohost"], "DESTINATION"),
        (["copy", "localhost:1/a", "localhost:2", "--tls", "localhost:1"], "--tls"),
        (["copy", "localhost:1/a:1", "localhost:2/b:2"], "keeps tag names"),
        (["delete", "localhost:1/team/app"], "give a tag"),
        (["digest", "localhost:1"], "names no repository"),
        (["delete", "tar:/x.tar//team/app:1", "--yes"], "registry reference"),
        (["ls", "localhost:1/Bad"], "invalid repository path"),
        (["copy", "localhost:1/a", "localhost:2", "--platforms", "linux"], "--platforms"),
        (["copy", "localhost:1/a", "localhost:2", "--tags", "(a"], "--tags/--exclude"),
        (["copy", "localhost:1/team/app:1", "localhost:1"], "onto itself"),  # whole rule
    ]
    for args, needle in cases:
        proc = run_regsync(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, proc.stderr)


def test_registry_errors_exit_1_with_one_line(registry_factory: RegistryFactory) -> None:
    """A registry that refuses deletes (405) or cannot be reached: exit 1, the tag stays."""
    reg = registry_factory(delete_enabled=False)
    pushed = push(reg, "team/app", "1", Image.oci([Blob.random(300, seed="keep")]))
    refused = regsync("delete", f"{reg.host}/team/app:1", "--yes", registries=(reg,))
    assert refused.returncode == 1 and "regsync delete:" in refused.stderr
    assert reg.manifest_digest("team/app", "1") == pushed.digest
    down = f"localhost:{free_port()}"
    proc = run_regsync("ls", f"{down}/team/app", "--tls", f"{down}=http", env=FAST_RETRIES)
    assert proc.returncode == 1 and "regsync ls:" in proc.stderr and not proc.stdout


def test_ls_of_a_repository_the_registry_lacks_fails_naming_it(
    source_registry: Registry,
) -> None:
    """A typo in `ls host/repo` is no empty answer: the registry's 404 is one line naming the
    repository, exit 1 (an existing repository without tags still lists nothing, exit 0)."""
    reg = source_registry
    pushed = push(reg, "team/app", "1", Image.oci([Blob.random(300, seed="ls")]))
    reg.expect("DELETE", f"/v2/team/app/manifests/{pushed.digest}", 202)
    empty = regsync("ls", f"{reg.host}/team/app", "--json", registries=(reg,))
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout)["tags"] == []
    for args in (["--json"], ["--digests"]):
        proc = regsync("ls", f"{reg.host}/team/nope", *args, registries=(reg,))
        assert proc.returncode == 1, proc.stderr
        assert f"regsync ls: not found: {reg.host}/team/nope: no such repository" in proc.stderr
        assert not proc.stdout


def test_ls_of_a_glob_matching_nothing_fails_naming_the_pattern(
    registry_factory: RegistryFactory,
) -> None:
    """README "Everyday commands": `ls host/nope/*` is one line naming the pattern, exit 1,
    as `once` fails a rule whose glob matches nothing; a bare host lists what it holds, and a
    registry that holds nothing is an answer (exit 0)."""
    reg = registry_factory()
    empty = regsync("ls", reg.host, "--json", registries=(reg,))
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == {"repositories": []}
    push(reg, "team/app", "1", Image.oci([Blob.random(300, seed="glob")]))
    for args in ([], ["--json"]):
        proc = regsync("ls", f"{reg.host}/nope/*", *args, registries=(reg,))
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("matches no repository") == 1
        assert f"regsync ls: {reg.host}/nope/* matches no repository" in proc.stderr
        assert not proc.stdout
    found = regsync("ls", f"{reg.host}/team/*", registries=(reg,))
    assert found.returncode == 0 and found.stdout.split() == ["team/app"]


def test_ls_digests_take_the_hub_tags_api_first_and_head_only_the_rest(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """A registry with a Docker Hub-style API (`hub_api:` in -c FILE): tag digests come from
    the tags API; only the entry without a digest (an old push) costs a manifest HEAD."""
    reg = registry_factory(extra_config=ACCESS_LOG)
    one = push(reg, "diamol/app", "1.0", Image.oci([Blob.random(300, seed="h1")]))
    old = push(reg, "diamol/app", "old", Image.docker([Blob.random(300, seed="h2")]))
    entries = [{"name": "1.0", "digest": one.digest, "media_type": one.media_type}, {"name": "old"}]
    hub = HubApi({"diamol": ["app"]}, tags={"diamol/app": entries})
    hub.start()
    try:
        config = write_config(
            tmp_path,
            f'version: 1\nregistries:\n  "{reg.host}": {{tls: http, hub_api: "{hub.url}"}}\n',
        )
        log = AccessLog(reg)
        log.mark()
        proc = run_regsync("ls", "-c", config, f"{reg.host}/diamol/app", "--digests", "--json")
    finally:
        hub.stop()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tags"] == [
        {"name": "1.0", "digest": one.digest},
        {"name": "old", "digest": old.digest},
    ]
    assert log.counts()["HEAD manifest"] == 1


class _Heads(MemoryBackend):
    """Answers every tag HEAD with a digest of its own; records the most tasks alive at once
    and can fail one tag."""

    def __init__(self, fail: str = "") -> None:
        super().__init__("reg")
        self.most_tasks = 0
        self.heads = 0
        self.fail = fail

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        self.heads += 1
        self.most_tasks = max(self.most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        if ref == self.fail:
            raise RegistryError("reg: HEAD -> 500", registry="reg", status=500)
        return Descriptor("application/vnd.oci.image.manifest.v1+json", f"sha256:{ref:0>64}", 1)


async def test_ls_digests_heads_through_a_bounded_pool_of_tasks() -> None:
    """`ls --digests` of a repository listing 2000 tags HEADs them with 16 worker tasks, not
    one task per tag (a listing from outside may hold up to a million names); the answer
    keeps every tag's own digest."""
    backend = _Heads()
    tags = [f"{i:x}" for i in range(2000)]

    found = await lookup._digests(backend, "team/app", tags)

    assert found == {tag: f"sha256:{tag:0>64}" for tag in tags}
    assert backend.heads == 2000
    assert backend.most_tasks <= lookup.HEAD_CONCURRENCY + 1  # the workers and this test
    assert lookup.HEAD_CONCURRENCY == 16  # README "Everyday commands": 16 at a time


async def test_a_failing_head_stops_the_pool_and_is_the_one_error() -> None:
    """The first failure is raised (as regsync's error, not a group) and no further HEAD
    starts: the pool does not run through the rest of a long listing."""
    backend = _Heads(fail="5")
    with pytest.raises(RegistryError, match="HEAD -> 500"):
        await lookup._digests(backend, "team/app", [str(i) for i in range(5000)])
    assert backend.heads < 100
    assert await aio.bounded_map(_double, [3, 1, 2], 2) == [6, 2, 4]
    assert await aio.bounded_map(_double, [], 4) == []


async def _double(n: int) -> int:
    await asyncio.sleep(0)
    return 2 * n
