"""Referrers against real registries (distribution 2.8: no referrers API, so the fallback tag):
cosign-style signature tags and OCI artifacts with `subject` travel with their images."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp import web

from regsync.config import parse_config
from regsync.runner import run
from tests.policy_helpers import planned
from tests.support import (
    FAST_RETRIES,
    OCI_INDEX,
    Artifact,
    Blob,
    Image,
    Index,
    Manifest,
    Registry,
    attach,
    mirror_config,
    only_rule,
    push,
    registries_yaml,
    regsync_json,
)
from tests.support.matrix import cosign_signature
from tests.support.scripted import ScriptedRegistry


def signature(subject: Manifest, seed: str) -> Manifest:
    """A cosign-style signature of ``subject``."""
    return cosign_signature(subject, seed, prefix="MEUCIQ")


def sig_tag(image: Manifest, suffix: str = ".sig") -> str:
    return image.digest.replace(":", "-") + suffix


def seed(src: Registry, tag: str) -> tuple[Manifest, Manifest, Manifest]:
    """An image, its cosign signature tag, and an SBOM artifact attached via `subject`."""
    image = Image.oci([Blob.random(700, seed=tag)])
    push(src, "diamol/app", tag, image)
    sig = signature(image, tag)
    push(src, "diamol/app", sig_tag(image), sig)
    sbom = Artifact.oci(image, payloads=[Blob(f'{{"sbom": "{tag}"}}'.encode())])
    attach(src, "diamol/app", sbom)
    return image, sig, sbom


def test_signatures_and_subject_artifacts_are_mirrored(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    image, sig, sbom = seed(source_registry, "1.0")
    fallback = sig_tag(image, "")
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", "referrers: true")

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, summary
    assert only_rule(summary)["tags"]["copied"] == 3  # the image, its .sig, its fallback index
    for ref in ("1.0", sig_tag(image), fallback):
        assert dest_registry.manifest("diamol/app", ref) == source_registry.manifest(
            "diamol/app", ref
        )
    assert dest_registry.manifest_digest("diamol/app", sbom.digest) == sbom.digest
    assert dest_registry.manifest("diamol/app", sbom.digest)[1] == sbom.raw
    assert all(dest_registry.blob_exists("diamol/app", b.digest) for b in sbom.blobs + sig.blobs)

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    r = only_rule(summary)
    assert code == 0
    assert r["tags"] == {"copied": 0, "up_to_date": 3, "pruned": 0, "failed": 0}
    assert r["source_manifest_gets"] == 0


def test_without_referrers_artifact_tags_stay_behind_and_explain_says_why(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    image, _, _ = seed(source_registry, "1.0")
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app")

    proc_code, plan, stderr = regsync_json("check", cfg, "--explain", env=FAST_RETRIES)

    assert proc_code == 1
    filtered = {f["tag"]: f["by"] for f in plan["plan"][0]["repos"][0]["filtered"]}
    assert filtered == {sig_tag(image): "artifact", sig_tag(image, ""): "artifact"}
    assert f"filtered   {sig_tag(image)} by artifact" in stderr
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    assert dest_registry.tags("diamol/app") == ["1.0"]


def test_destination_fallback_index_is_merged_without_duplicates(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    image, _, sbom = seed(source_registry, "1.0")
    push(dest_registry, "diamol/app", "1.0", image)
    local = Artifact.oci(image, "application/vnd.example.scan.v1+json", [Blob(b'{"ok": 1}')])
    attach(dest_registry, "diamol/app", local)  # the destination already lists its own artifact
    fallback = sig_tag(image, "")
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", "referrers: true")

    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0

    listed = [
        m["digest"]
        for m in json.loads(dest_registry.manifest("diamol/app", fallback)[1])["manifests"]
    ]
    assert listed == [local.digest, sbom.digest]
    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)
    assert code == 0 and only_rule(summary)["tags"]["copied"] == 0
    assert only_rule(summary)["source_manifest_gets"] == 0
    second = Artifact.oci(image, "application/vnd.example.vex.v1+json", [Blob(b'{"vex": 1}')])
    attach(source_registry, "diamol/app", second)

    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0

    listed = [
        m["digest"]
        for m in json.loads(dest_registry.manifest("diamol/app", fallback)[1])["manifests"]
    ]
    assert listed == [local.digest, sbom.digest, second.digest]


def test_signatures_follow_their_images_into_prune(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    kept, _, _ = seed(source_registry, "1.0")
    seed(source_registry, "1.1")
    gone, _, _ = seed(source_registry, "1.2")
    cfg = mirror_config(
        tmp_path, source_registry, dest_registry, "diamol/app", "referrers: true\nprune: true"
    )
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    assert len(dest_registry.tags("diamol/app")) == 9
    source_registry.delete_manifest("diamol/app", gone.digest)  # its signature tags linger there

    code, plan, _ = regsync_json("check", cfg, env=FAST_RETRIES)
    assert code == 1 and planned(plan, "prune") == sorted(["1.2", sig_tag(gone), sig_tag(gone, "")])

    code, summary, _ = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, summary
    assert only_rule(summary)["tags"]["pruned"] == 3
    left = dest_registry.tags("diamol/app")
    assert "1.2" not in left and sig_tag(gone) not in left and sig_tag(gone, "") not in left
    assert {"1.0", sig_tag(kept), sig_tag(kept, "")} <= set(left) and len(left) == 6


async def test_referrers_api_source_builds_the_fallback_at_a_destination_without_it(
    dest_registry: Registry,
) -> None:
    """A source with the OCI referrers API (scripted) and distribution 2.8 as destination."""
    image = Image.oci([Blob.random(600, seed="api")])
    artifacts = [
        Artifact.oci(image, "application/vnd.example.sbom.v1+json", [Blob(b'{"n": 1}')]),
        Artifact.oci(image, "application/vnd.example.sig.v1+json", [Blob(b'{"n": 2}')]),
    ]
    async with ScriptedRegistry() as src:
        src.add("diamol/app", "1.0", image)
        for artifact in artifacts:
            src.manifests[artifact.digest] = (artifact.media_type, artifact.raw)
            src.blobs.update({b.digest: b.data for b in artifact.blobs})

        async def referrers(request: web.Request, match: re.Match[str]) -> web.Response:
            listed = artifacts if match["digest"] == image.digest else []
            return web.json_response(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [
                        {**a.descriptor(), "artifactType": a.json["artifactType"]} for a in listed
                    ],
                },
                content_type=OCI_INDEX,
            )

        src.override(
            "GET", r"^/v2/diamol/app/referrers/(?P<digest>sha256:[a-f0-9]{64})$", referrers
        )
        config = parse_config(
            registries_yaml(dest_registry)
            + f'  "{src.host}": {{tls: http}}\nversion: 1\nrules:\n'
            + f"  - name: api\n    source: {src.host}/diamol/app\n"
            + f"    destination: {dest_registry.host}\n    referrers: true\n"
        )

        first = (await run(config, config.rules)).rules[0]
        second = (await run(config, config.rules)).rules[0]

    assert first.result == "success", first.errors
    assert first.copied == 2  # the image, and its referrers (listed in one fallback index)
    for artifact in artifacts:
        assert dest_registry.manifest("diamol/app", artifact.digest)[1] == artifact.raw
    fallback = json.loads(dest_registry.manifest("diamol/app", sig_tag(image, ""))[1])
    assert [m["digest"] for m in fallback["manifests"]] == [a.digest for a in artifacts]
    assert [m["artifactType"] for m in fallback["manifests"]] == [
        "application/vnd.example.sbom.v1+json",
        "application/vnd.example.sig.v1+json",
    ]
    assert second.result == "success" and second.copied == 0 and second.up_to_date == 2
    assert second.stats.source_manifest_gets == 0


def test_signatures_of_platform_subsets_are_pruned_with_their_images(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """With `platforms:` the destination tag is a subset (another digest) while signature tags
    name the source index: prune matches them through the subset's recorded source digest, so
    a deleted image's signatures go with it and a signature revoked at the source goes too."""

    def seed_index(tag: str) -> tuple[Manifest, Manifest]:
        index = Index.oci(
            [
                Image.oci([Blob.random(600, seed=f"{tag}/{p}")], platform=p)
                for p in ("linux/amd64", "linux/arm64")
            ]
        )
        push(source_registry, "diamol/app", tag, index)
        sig = signature(index, tag)
        push(source_registry, "diamol/app", sig_tag(index), sig)
        attach(source_registry, "diamol/app", Artifact.oci(index, payloads=[Blob(tag.encode())]))
        return index, sig

    kept, revoked = seed_index("1.0")
    other, _ = seed_index("1.1")
    gone, _ = seed_index("1.2")
    cfg = mirror_config(
        tmp_path,
        source_registry,
        dest_registry,
        "diamol/app",
        "platforms: [linux/amd64]\nreferrers: true\nprune: true",
    )
    assert regsync_json("once", cfg, env=FAST_RETRIES).code == 0
    assert len(dest_registry.tags("diamol/app")) == 9
    assert dest_registry.manifest_digest("diamol/app", "1.0") != kept.digest  # a subset
    source_registry.delete_manifest("diamol/app", gone.digest)  # its signature tags linger
    source_registry.delete_manifest("diamol/app", revoked.digest)  # the signature is revoked

    code, plan, _ = regsync_json("check", cfg, env=FAST_RETRIES)
    doomed = sorted(["1.2", sig_tag(gone), sig_tag(gone, ""), sig_tag(kept)])
    assert code == 1 and plan["ok"] is False and planned(plan, "prune") == doomed

    code, summary, stderr = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, stderr
    assert only_rule(summary)["tags"]["pruned"] == 4
    left = set(dest_registry.tags("diamol/app"))
    assert left == {"1.0", "1.1", sig_tag(kept, ""), sig_tag(other), sig_tag(other, "")}
    code, plan, _ = regsync_json("check", cfg, env=FAST_RETRIES)
    assert code == 0 and planned(plan, "prune") == [] and planned(plan, "copy") == []


def test_sigstore_bundles_with_a_media_type_parameter_are_mirrored(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """GitHub's attestations (`@sigstore/oci`) attach a Sigstore bundle whose layer
    mediaType and artifactType carry a parameter (`...bundle+json;version=0.2`), which
    RFC 6838 and RFC 9110 allow: the image, the bundle and its fallback index are mirrored
    with their digests, not refused as off the media-type grammar."""
    bundle_type = "application/vnd.dev.sigstore.bundle+json;version=0.2"
    image = Image.oci([Blob.random(700, seed="attested")])
    push(source_registry, "diamol/app", "1.0", image)
    bundle = Artifact.oci(image, bundle_type, [Blob(b'{"mediaType": "bundle"}')])
    attach(source_registry, "diamol/app", bundle)
    fallback = sig_tag(image, "")
    cfg = mirror_config(tmp_path, source_registry, dest_registry, "diamol/app", "referrers: true")

    code, summary, stderr = regsync_json("once", cfg, env=FAST_RETRIES)

    assert code == 0, stderr
    assert only_rule(summary)["tags"]["copied"] == 2  # the image and its fallback index
    for ref in ("1.0", fallback, bundle.digest):
        assert dest_registry.manifest("diamol/app", ref) == source_registry.manifest(
            "diamol/app", ref
        )
    (listed,) = json.loads(dest_registry.manifest("diamol/app", fallback)[1])["manifests"]
    assert listed["artifactType"] == bundle_type
