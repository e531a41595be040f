"""Sync options from regclient's regsync, against real `docker-registry` pairs: `once --missing`,
`backup`, `media_types`, referrer filters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiohttp import web

from regsync.config import parse_config
from regsync.runner import run
from tests.support import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Artifact,
    Blob,
    Image,
    Index,
    Manifest,
    Registry,
    RegistryFactory,
    attach,
    mirror_config,
    push,
    registries_yaml,
    regsync_json,
    run_regsync,
)
from tests.support.matrix import COSIGN_PAYLOAD, cosign_signature, sig_tag
from tests.support.scripted import ScriptedRegistry

pytestmark = pytest.mark.integration


def _image(seed: str) -> Manifest:
    return Image.docker([Blob.random(1500, seed=seed)])


def test_once_missing_copies_absent_tags_and_leaves_differing_ones(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    pushed = {t: push(src, "team/app", t, _image(f"src-{t}")) for t in ("1", "2", "3")}
    push(dst, "team/app", "1", _image("src-1"))
    pinned = push(dst, "team/app", "2", _image("pinned-2"))
    push(dst, "team/app", "gone", _image("dest-only"))
    config = mirror_config(tmp_path, src, dst, "team/app", "prune: true")

    first = regsync_json("once", config, "--missing")
    assert first.code == 0, first.stderr
    r = first.rule
    assert r["tags"] == {"copied": 1, "up_to_date": 1, "pruned": 0, "failed": 0}, r
    assert r["left_differing"] == 1
    assert any("left as is (--missing): 2" in note for note in r["notes"]), r["notes"]
    assert dst.manifest_digest("team/app", "3") == pushed["3"].digest
    assert dst.manifest_digest("team/app", "2") == pinned.digest  # not overwritten
    assert dst.manifest_digest("team/app", "gone") is not None  # --missing never prunes

    drift = regsync_json("check", config)
    assert drift.code == 1  # the differing tag is still drift for a plain check
    plain = regsync_json("once", config)
    assert plain.code == 0, plain.stderr
    assert dst.manifest_digest("team/app", "2") == pushed["2"].digest
    assert dst.manifest_digest("team/app", "gone") is None


def test_backup_keeps_the_overwritten_image_and_is_counted_in_summary_and_metric(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    old = push(dst, "team/app", "latest", _image("old"))
    new = push(src, "team/app", "latest", _image("new"))
    push(src, "team/app", "fresh", _image("fresh"))
    config = mirror_config(tmp_path, src, dst, "team/app", "backup: 'backup-{tag}'")

    check = run_regsync("check", "-c", config)
    assert check.returncode == 1
    assert "latest (destination has sha256:" in check.stderr
    assert "backup as backup-latest" in check.stderr
    assert "backup-fresh" not in check.stderr  # a tag the destination lacks has nothing to keep

    metrics = tmp_path / "once.prom"
    once = regsync_json("once", config, "--metrics-file", metrics)
    assert once.code == 0, once.stderr
    assert once.rule["backups"] == 1 and once.rule["manifests_pushed"] == 3, once.rule
    assert 'regsync_backups_total{rule="mirror"} 1.0' in metrics.read_text()
    assert dst.manifest_digest("team/app", "backup-latest") == old.digest
    assert dst.manifest_digest("team/app", "latest") == new.digest
    assert sorted(dst.tags("team/app")) == ["backup-latest", "fresh", "latest"]

    again = regsync_json("once", config)  # unchanged: no backup made
    assert again.code == 0 and again.rule["backups"] == 0, again.rule


def test_a_backup_name_that_is_no_tag_fails_the_tag_and_leaves_it_as_it_was(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    long_tag = "t" * 125  # + "-prev" is 130 characters: over the 128 a tag may have
    kept = push(dst, "team/app", long_tag, _image("kept"))
    push(src, "team/app", long_tag, _image("newer"))
    config = mirror_config(tmp_path, src, dst, "team/app", "backup: '{tag}-prev'")

    once = regsync_json("once", config)
    assert once.code == 1
    assert once.rule["tags"]["failed"] == 1 and once.rule["backups"] == 0, once.rule
    assert any("is not a valid tag" in e for e in once.rule["errors"]), once.rule["errors"]
    assert dst.manifest_digest("team/app", long_tag) == kept.digest


def test_a_backup_name_the_source_also_has_fails_the_tag_and_overwrites_neither(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """`{tag}-prev` for `1` is `1-prev`, which the source has too: backing up there would
    overwrite a tag the rule mirrors (and the content index would still call it up to date).
    The copy of `1` fails, naming the clash; both destination tags stay as they were."""
    src, dst = registry_factory(), registry_factory()
    kept = push(dst, "team/app", "1", _image("kept"))
    mirrored = push(src, "team/app", "1-prev", _image("mirrored"))
    push(dst, "team/app", "1-prev", _image("mirrored"))
    push(src, "team/app", "1", _image("newer"))
    config = mirror_config(tmp_path, src, dst, "team/app", "backup: '{tag}-prev'")

    check = run_regsync("check", "-c", config)
    assert "backup as 1-prev refused: the source has that tag" in check.stderr, check.stderr
    once = regsync_json("once", config)
    assert once.code == 1
    assert once.rule["tags"]["failed"] == 1 and once.rule["backups"] == 0, once.rule
    assert any("the source has that tag" in e for e in once.rule["errors"]), once.rule
    assert dst.manifest_digest("team/app", "1") == kept.digest
    assert dst.manifest_digest("team/app", "1-prev") == mirrored.digest


def _helm_chart(seed: str) -> Manifest:
    """A Helm chart as `helm push` stores it: an OCI image manifest with Helm's config type."""
    config = Blob(f'{{"name": "{seed}", "version": "0.1.0"}}'.encode())
    chart = Blob.random(800, seed=seed)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor("application/vnd.cncf.helm.config.v1+json"),
        "layers": [chart.descriptor("application/vnd.cncf.helm.chart.content.v1.tar+gzip")],
    }
    return Manifest(OCI_MANIFEST, json.dumps(body).encode(), (config, chart))


INDEX_TYPES = "[application/vnd.oci.image.index.v1+json, " + DOCKER_LIST + "]"
IMAGE_TYPES = (
    "[application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    f"{DOCKER_LIST}, {DOCKER_MANIFEST}, application/vnd.oci.image.config.v1+json, "
    "application/vnd.docker.container.image.v1+json]"
)


def test_media_types_skips_manifest_types_not_listed_without_reading_them(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    index = Index.oci([Image.oci([Blob.random(900, seed="mt-amd")]), _image("mt-arm")])
    push(src, "team/app", "multi", index)
    push(src, "team/app", "single", _image("mt-single"))
    config = mirror_config(tmp_path, src, dst, "team/app", f"media_types: {INDEX_TYPES}")

    check = regsync_json("check", config)
    (repo,) = check.data["plan"][0]["repos"]
    assert [t["tag"] for t in repo["tags"]] == ["multi"]
    assert repo["filtered"] == [
        {
            "tag": "single",
            "by": "media_types",
            "detail": f"media type {DOCKER_MANIFEST} is not in media_types",
        }
    ]
    once = regsync_json("once", config)
    assert once.code == 0, once.stderr
    r = once.rule
    assert r["tags"] == {"copied": 1, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["skipped_media_types"] == 1 and r["source_manifest_gets"] == 3, r  # index + 2
    assert any("1 tags skipped by media_types: single (media type" in n for n in r["notes"])
    assert sorted(dst.tags("team/app")) == ["multi"]


def test_media_types_with_image_config_types_skips_helm_charts(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    image = push(src, "charts/app", "1.0", _image("mt-image"))
    push(src, "charts/app", "chart-0.1.0", _helm_chart("mt-chart"))
    config = mirror_config(tmp_path, src, dst, "charts/app", f"media_types: {IMAGE_TYPES}")

    once = regsync_json("once", config)
    assert once.code == 0, once.stderr
    r = once.rule
    assert r["tags"] == {"copied": 1, "up_to_date": 0, "pruned": 0, "failed": 0}, r
    assert r["skipped_media_types"] == 1, r
    # One GET per manifest read: the image's, shared by the filter and its copy, and the chart's.
    assert r["source_manifest_gets"] == 2, r
    assert dst.tags("charts/app") == ["1.0"]
    assert dst.manifest_digest("charts/app", "1.0") == image.digest
    helm = "artifact type application/vnd.cncf.helm.config.v1+json is not in media_types"
    assert any(helm in note for note in r["notes"]), r["notes"]

    plain = mirror_config(tmp_path, src, dst, "charts/app", name="all")
    everything = regsync_json("once", plain)  # without media_types the chart is copied
    assert everything.code == 0 and everything.rule["tags"]["copied"] == 1, everything.rule


SBOM = "application/vnd.example.sbom.v1+json"
SCAN = "application/vnd.example.scan.v1+json"


def _signed_image(src: Registry, repo: str) -> tuple[Manifest, Manifest, Manifest, Manifest]:
    """An image with a cosign `.sig` tag and two referrers in its fallback index: an SBOM and
    a scan report annotated `org.example/kind: scan`."""
    image = _image(f"{repo}/image")
    push(src, repo, "1.0", image)
    sig = cosign_signature(image, "s1")
    push(src, repo, sig_tag(image), sig)
    sbom = Artifact.oci(image, SBOM, [Blob(b'{"sbom": 1}')])
    scan = Artifact.oci(image, SCAN, [Blob(b'{"scan": 1}')], {"org.example/kind": "scan"})
    attach(src, repo, sbom)
    attach(src, repo, scan)
    return image, sig, sbom, scan


def _fallback_lists(dst: Registry, repo: str, image: Manifest) -> list[str]:
    raw = dst.manifest(repo, sig_tag(image, ""))[1]
    return [m["digest"] for m in json.loads(raw)["manifests"]]


def test_referrer_filter_by_artifact_type_copies_only_sboms(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    image, _, sbom, scan = _signed_image(src, "team/app")
    extra = f"referrers: {{artifact_types: [{SBOM}]}}"
    config = mirror_config(tmp_path, src, dst, "team/app", extra)

    once = regsync_json("once", config)
    assert once.code == 0, once.stderr
    assert once.rule["tags"]["copied"] == 2, once.rule  # the image and the fallback index
    assert sorted(dst.tags("team/app")) == sorted(["1.0", sig_tag(image, "")])  # no .sig
    assert _fallback_lists(dst, "team/app", image) == [sbom.digest]
    assert dst.manifest_digest("team/app", sbom.digest) == sbom.digest
    assert dst.manifest_digest("team/app", scan.digest) is None

    check = regsync_json("check", config)
    assert check.code == 0, check.stderr  # the filtered index is up to date, not drift
    (repo,) = check.data["plan"][0]["repos"]
    by = {f["tag"]: f["by"] for f in repo["filtered"]}
    assert by[sig_tag(image)] == "referrers", by
    again = regsync_json("once", config)
    assert again.code == 0 and again.rule["tags"]["copied"] == 0, again.rule
    assert again.rule["tags"]["up_to_date"] == 2, again.rule


def test_referrer_filter_by_an_artifact_type_with_a_parameter(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """README "Signatures and SBOMs": `artifact_types` may name a type with a parameter
    (GitHub's attestations: `application/vnd.dev.sigstore.bundle+json;version=0.2`); only
    referrers of exactly that type are copied."""
    src, dst = registry_factory(), registry_factory()
    image, _, sbom, scan = _signed_image(src, "team/app")
    bundle_type = "application/vnd.dev.sigstore.bundle+json;version=0.2"
    bundle = Artifact.oci(image, bundle_type, [Blob(b'{"bundle": 1}')])
    attach(src, "team/app", bundle)
    extra = f'referrers: {{artifact_types: ["{bundle_type}"]}}'
    config = mirror_config(tmp_path, src, dst, "team/app", extra)

    once = regsync_json("once", config)

    assert once.code == 0, once.stderr
    assert _fallback_lists(dst, "team/app", image) == [bundle.digest]
    assert dst.manifest_digest("team/app", bundle.digest) == bundle.digest
    assert dst.manifest_digest("team/app", sbom.digest) is None
    assert dst.manifest_digest("team/app", scan.digest) is None


def test_referrer_filter_by_annotation_and_cosign_signatures(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    image, sig, sbom, scan = _signed_image(src, "team/app")
    config = mirror_config(
        tmp_path, src, dst, "team/app", "referrers: {annotations: {org.example/kind: scan}}"
    )
    assert regsync_json("once", config).code == 0
    assert _fallback_lists(dst, "team/app", image) == [scan.digest]
    assert dst.manifest_digest("team/app", sig_tag(image)) is None
    assert dst.manifest_digest("team/app", sbom.digest) is None

    signatures = f"referrers: {{artifact_types: [{COSIGN_PAYLOAD}]}}"
    config = mirror_config(tmp_path, src, dst, "team/app", signatures, dest="/sigs")
    assert regsync_json("once", config).code == 0
    assert dst.manifest("sigs/team/app", sig_tag(image)) == src.manifest("team/app", sig_tag(image))
    assert dst.manifest_digest("sigs/team/app", sig.digest) == sig.digest
    assert _fallback_lists(dst, "sigs/team/app", image) == []


async def test_referrer_filter_applies_to_what_a_referrers_api_lists(
    dest_registry: Registry,
) -> None:
    """A source with the OCI referrers API (scripted), distribution 2.8 as destination: only
    the listed artifact type is copied and listed in the fallback index regsync maintains."""
    image = Image.oci([Blob.random(600, seed="api-filter")])
    sbom = Artifact.oci(image, SBOM, [Blob(b'{"n": 1}')])
    scan = Artifact.oci(image, SCAN, [Blob(b'{"n": 2}')])
    async with ScriptedRegistry() as src:
        src.add("team/app", "1.0", image)
        for artifact in (sbom, scan):
            src.manifests[artifact.digest] = (artifact.media_type, artifact.raw)
            src.blobs.update({b.digest: b.data for b in artifact.blobs})

        async def referrers(request: web.Request, match: re.Match[str]) -> web.Response:
            listed = (sbom, scan) if match["digest"] == image.digest else ()
            entries = [{**a.descriptor(), "artifactType": a.json["artifactType"]} for a in listed]
            body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            return web.json_response(body, content_type=OCI_INDEX)

        src.override("GET", r"^/v2/team/app/referrers/(?P<digest>sha256:[a-f0-9]{64})$", referrers)
        config = parse_config(
            registries_yaml(dest_registry)
            + f'  "{src.host}": {{tls: http}}\nversion: 1\nrules:\n'
            + f"  - name: api\n    source: {src.host}/team/app\n"
            + f"    destination: {dest_registry.host}\n"
            + f"    referrers: {{artifact_types: [{SCAN}]}}\n",
            env={},
        )
        first = (await run(config, config.rules)).rules[0]
        second = (await run(config, config.rules)).rules[0]
    assert first.result == "success", first.errors
    assert dest_registry.manifest("team/app", scan.digest)[1] == scan.raw
    assert dest_registry.manifest_digest("team/app", sbom.digest) is None
    assert _fallback_lists(dest_registry, "team/app", image) == [scan.digest]
    assert second.result == "success" and second.copied == 0 and second.up_to_date == 2


async def test_a_manifest_media_types_cannot_read_fails_that_tag_alone() -> None:
    """With artifact types listed, a tag whose manifest GET answers wrong bytes does not stop
    the repository's planning: the other tag is copied, that one fails with its reason."""
    good, bad = _image("mt-good"), _image("mt-bad")
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "good", good)
        src.add("team/app", "bad", bad)

        async def wrong_bytes(request: web.Request, match: re.Match[str]) -> web.Response | None:
            if request.method != "GET":
                return None
            return web.Response(body=b"{}", headers={"Docker-Content-Digest": bad.digest})

        src.override("GET", rf"^/v2/team/app/manifests/(bad|{bad.digest})$", wrong_bytes)
        config = parse_config(
            f"""
version: 1
registries:
  "{src.host}": {{tls: http}}
  "{dst.host}": {{tls: http}}
rules:
  - name: r
    source: {src.host}/team/app
    destination: {dst.host}
    media_types: {IMAGE_TYPES}
""",
            env={},
        )
        (rule,) = (await run(config, config.rules)).rules
    assert rule.copied == 1 and rule.failed == 1, rule.errors
    assert dst.tags["team/app"] == {"good": good.digest}
    assert any(e.startswith("team/app:bad: ") for e in rule.errors), rule.errors


def test_a_backup_tag_the_tag_filters_match_is_in_the_prune_scope(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """As documented: with the default `include: ['.*']` and prune, the source has no
    `latest-prev`, so the run after the backup prunes it; filters that leave it out keep it."""
    src, dst = registry_factory(), registry_factory()
    push(dst, "team/app", "latest", _image("prune-old"))
    push(src, "team/app", "latest", _image("prune-new"))
    extra = "backup: '{tag}-prev'\nprune: {max_fraction: 1}"
    config = mirror_config(tmp_path, src, dst, "team/app", extra)
    first = regsync_json("once", config)
    assert first.code == 0 and first.rule["backups"] == 1, first.rule
    assert sorted(dst.tags("team/app")) == ["latest", "latest-prev"]
    second = regsync_json("once", config)
    assert second.code == 0 and second.rule["tags"]["pruned"] == 1, second.rule
    assert dst.tags("team/app") == ["latest"]
