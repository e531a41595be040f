"""Carry out one COPY action of a plan according to the rule's policy.

Images copy whole (exact bytes, digest preserved) unless the rule lists platforms and the
source is an index: then only those children are copied, under a subset index. An index the
source index nests is filtered the same way, level by level: kept, as its own subset pushed
by digest, when it holds any wanted platform; dropped when it holds none. Referrer fallback
tags merge with what the destination lists; signature tags copy like images.
"""

from __future__ import annotations

import dataclasses

from regsync import referrers
from regsync.copy import CopyEngine
from regsync.errors import ManifestError
from regsync.oci import mediatypes
from regsync.oci.manifest import Manifest
from regsync.plan import RepoPlan, TagAction
from regsync.platforms import PlatformFilter, filter_index, subset_index

MAX_INDEX_NESTING = 4  # indexes within indexes a platform filter follows (real images: 1)


async def copy_action(
    engine: CopyEngine, platforms: PlatformFilter | None, plan: RepoPlan, action: TagAction
) -> str:
    """Copy one tag; returns the digest the destination tag now points at."""
    assert action.source_digest is not None
    src, dst = plan.source_repo, plan.dest_repo
    if action.artifact_of and referrers.is_fallback_tag(action.tag):
        await referrers.copy_referrers(engine, plan, action)
        return action.source_digest
    if platforms is None or action.artifact_of:
        manifest = await engine.copy_tag(src, dst, action.tag, action.source_digest)
        return manifest.digest
    source = await engine.get_manifest(src, action.source_digest)
    if not source.is_index:
        await _put(engine, src, dst, action.tag, source, set())
        return source.digest
    made: set[str] = set()
    target = await _subset(engine, src, dst, source, platforms, made, 0)
    if target is None:
        target = subset_index(source, platforms)  # raises, naming the platforms it has
    await _put(engine, src, dst, action.tag, target, made)
    return target.digest


async def _subset(
    engine: CopyEngine,
    src: str,
    dst: str,
    index: Manifest,
    wanted: PlatformFilter,
    made: set[str],
    depth: int,
) -> Manifest | None:
    """``index`` filtered to ``wanted`` (None: nothing wanted); the subsets of the indexes it
    nests are put in the destination by digest first, and their digests added to ``made``."""
    nested: dict[str, Manifest | None] = {}
    for child in index.children:
        if child.media_type not in mediatypes.INDEXES:
            continue
        if depth >= MAX_INDEX_NESTING:
            raise ManifestError(f"indexes nested over {MAX_INDEX_NESTING} deep are not copied")
        inner = await engine.get_manifest(src, child.digest)
        subset = await _subset(engine, src, dst, inner, wanted, made, depth + 1)
        if subset is not None:
            await _put(engine, src, dst, subset.digest, subset, made)
            made.add(subset.digest)
        nested[child.digest] = subset
    return filter_index(index, wanted, nested)


async def _put(
    engine: CopyEngine, src: str, dst: str, ref: str, manifest: Manifest, made: set[str]
) -> None:
    """Copy what ``manifest`` references from the source (except the subsets regsync made,
    which the source never had and are in place already), then push it under ``ref``."""
    from_source = tuple(c for c in manifest.children if c.digest not in made)
    await engine.place_content(src, dst, dataclasses.replace(manifest, children=from_source))
    await engine.destination.manifest_put(dst, ref, manifest)
    engine.stats.manifests_pushed += 1
