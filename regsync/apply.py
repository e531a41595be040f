"""Carry out one COPY action of a plan according to the rule's policy.

Images copy whole (exact bytes, digest preserved) unless the rule lists platforms and the
source is an index: then only those children are copied, under a subset index. Referrer
fallback tags merge with what the destination lists; signature tags copy like images.
"""

from __future__ import annotations

from regsync import referrers
from regsync.copy import CopyEngine
from regsync.plan import RepoPlan, TagAction
from regsync.platforms import PlatformFilter, subset_index


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
    target = subset_index(source, platforms) if source.is_index else source
    await engine.place_content(src, dst, target)
    await engine.destination.manifest_put(dst, action.tag, target)
    engine.stats.manifests_pushed += 1
    return target.digest
