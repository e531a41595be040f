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

This module plans (``plan_api``) and builds merged indexes (``merge_index``, pure); the copies
themselves are the executor's (``regsync.execute.copy_referrers``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from regsync.backends import Backend
from regsync.oci import mediatypes
from regsync.oci.artifacts import artifact_subject, artifact_tags, is_fallback_tag
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from regsync.plan import Action, RepoPlan, TagAction
from regsync.platforms import SOURCE_DIGEST
from regsync.referrerfilter import ReferrerMatch


async def plan_api(
    source: Backend,
    dest: Backend,
    plan: RepoPlan,
    source_heads: Mapping[str, Descriptor],
    dest_tags: set[str],
    keep: ReferrerMatch | None = None,
) -> RepoPlan:
    """Add an action per image whose referrers only the source's referrers API lists (those
    ``keep`` matches, when the rule filters referrers).

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
        found = keep.keep(found) if keep is not None else found
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
