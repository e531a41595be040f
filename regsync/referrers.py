"""Referrers: signatures, SBOMs and attestations travel with the images they describe.

With ``referrers: true`` each selected image brings along:

- cosign's tags ``sha256-<hex>.sig``, ``.att`` and ``.sbom``: plain tags, copied like images;
- the OCI referrers fallback tag ``sha256-<hex>`` (an index of the artifacts whose ``subject``
  is the image): its artifacts are copied by digest, then the index. When the destination's
  fallback index lists artifacts the source's does not, the two are merged (no duplicate
  digests) and the merged index records the source index digest (``io.regsync.source.digest``)
  so the next run sees it is up to date;
- when the source has the OCI referrers API, the artifacts it lists: copied by digest, and at a
  destination without the API listed in the fallback index, which regsync maintains.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from regsync.backends import Backend
from regsync.copy import CopyEngine
from regsync.oci import mediatypes
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from regsync.plan import Action, RepoPlan, TagAction
from regsync.platforms import SOURCE_DIGEST
from regsync.tagpolicy import ARTIFACT_TAG, artifact_subject, artifact_tags


def is_fallback_tag(tag: str) -> bool:
    match = ARTIFACT_TAG.fullmatch(tag)
    return match is not None and match["suffix"] is None


async def plan_api(
    source: Backend,
    dest: Backend,
    plan: RepoPlan,
    source_heads: Mapping[str, Descriptor],
    dest_tags: set[str],
) -> RepoPlan:
    """Add an action per image whose referrers only the source's referrers API lists.

    One probe per repository: a source without the API costs a single 404.
    """
    planned = {a.tag for a in plan.actions}
    images = sorted(
        {d.digest for t, d in source_heads.items() if artifact_subject(t) is None}
        - {artifact_subject(t) for t in planned if is_fallback_tag(t)}
    )
    extra = []
    for digest in images:
        found = await source.referrers(plan.source_repo, digest)
        if found is None:
            return plan  # no referrers API at the source: the fallback tags cover it
        if found:
            fallback = artifact_tags(digest)[0]
            done = await _dest_has(dest, plan.dest_repo, digest, found, fallback in dest_tags)
            action = Action.SKIP if done else Action.COPY
            why = f"{len(found)} referrers (referrers API)"
            extra.append(
                TagAction(fallback, action, digest, None, why, artifact_of=digest, via_api=True)
            )
    return replace(plan, actions=plan.actions + tuple(extra))


async def _dest_has(
    dest: Backend, repo: str, subject: str, wanted: list[Descriptor], has_fallback: bool
) -> bool:
    for desc in wanted:
        if await dest.manifest_head(repo, desc.digest) is None:
            return False
    if await dest.referrers(repo, subject) is not None:
        return True
    if not has_fallback:
        return False
    listed = {c.digest for c in (await dest.manifest_get(repo, artifact_tags(subject)[0])).children}
    return all(d.digest in listed for d in wanted)


async def copy_referrers(engine: CopyEngine, plan: RepoPlan, action: TagAction) -> None:
    """Copy a fallback tag (merging with the destination's) or API-listed referrers."""
    src, dst = plan.source_repo, plan.dest_repo
    if action.via_api:
        found = await engine.source.referrers(src, action.artifact_of) or []
        for desc in found:
            await copy_by_digest(engine, src, dst, desc.digest)
        if await engine.destination.referrers(dst, action.artifact_of) is None:
            await _merge_fallback(engine, dst, action.tag, found, source_digest=None)
        return
    assert action.source_digest is not None
    index = await engine.get_manifest(src, action.source_digest)
    current = await _current(engine.destination, dst, action.tag)
    source_digests = {c.digest for c in index.children}
    if current is None or {c.digest for c in current.children} <= source_digests:
        await engine.copy_content(src, dst, index)  # exact source bytes, digest preserved
        await engine.destination.manifest_put(dst, action.tag, index)
        engine.stats.manifests_pushed += 1
        return
    await engine.copy_content(src, dst, index)
    await _merge_fallback(engine, dst, action.tag, list(index.children), index.digest, current)


async def copy_by_digest(engine: CopyEngine, src: str, dst: str, digest: str) -> None:
    if await engine.destination.manifest_head(dst, digest) is not None:
        return
    manifest = await engine.get_manifest(src, digest)
    await engine.copy_content(src, dst, manifest)
    await engine.destination.manifest_put(dst, digest, manifest)
    engine.stats.manifests_pushed += 1


async def _current(dest: Backend, repo: str, tag: str) -> Manifest | None:
    if await dest.manifest_head(repo, tag) is None:
        return None
    return await dest.manifest_get(repo, tag)


async def _merge_fallback(
    engine: CopyEngine,
    repo: str,
    tag: str,
    adding: list[Descriptor],
    source_digest: str | None,
    current: Manifest | None = None,
) -> None:
    """Push the fallback index ``tag`` listing what it listed plus ``adding``, once each."""
    if current is None:
        current = await _current(engine.destination, repo, tag)
    merged = merge_index(current, adding, source_digest)
    if merged is not None:
        await engine.destination.manifest_put(repo, tag, merged)
        engine.stats.manifests_pushed += 1


def merge_index(
    current: Manifest | None, adding: list[Descriptor], source_digest: str | None
) -> Manifest | None:
    """The fallback index with ``adding`` appended (no duplicate digests); None: no change."""
    data: dict[str, Any] = (
        json.loads(current.raw)
        if current is not None
        else {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
    )
    entries: list[dict[str, Any]] = list(data.get("manifests") or [])
    listed = {e.get("digest") for e in entries}
    new = [_entry(d) for d in adding if d.digest not in listed]
    recorded = (data.get("annotations") or {}).get(SOURCE_DIGEST)
    if not new and (source_digest is None or recorded == source_digest):
        return None
    data["manifests"] = entries + new
    if source_digest is not None:
        data["annotations"] = {**(data.get("annotations") or {}), SOURCE_DIGEST: source_digest}
    return parse_manifest(json.dumps(data, indent=2).encode(), mediatypes.OCI_INDEX)


def _entry(desc: Descriptor) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "mediaType": desc.media_type,
        "digest": desc.digest,
        "size": desc.size,
    }
    if desc.artifact_type:
        entry["artifactType"] = desc.artifact_type
    if desc.annotations:
        entry["annotations"] = dict(desc.annotations)
    return entry
