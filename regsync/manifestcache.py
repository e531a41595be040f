"""The source manifests a rule's copy engine keeps parsed: least recently used out first,
within a budget of what they cost in memory.

A manifest is kept only once fetched (a failure is fetched again), by (source repository,
digest); one whose cost alone is over the budget is never kept. The cost is estimated from
what a parsed manifest holds beyond its raw bytes (:func:`manifest_cost`), so an index of
thousands of small descriptors counts for what it takes, not for its bytes.
"""

from __future__ import annotations

from collections import OrderedDict

from regsync.oci.manifest import Manifest

MANIFEST_CACHE_BYTES = 32 * 1024 * 1024  # parsed source manifests kept per rule (LRU)
# What a parsed manifest costs beyond its raw bytes: the Manifest and each Descriptor with its
# strings (measured with tracemalloc: ~0.5 KiB a descriptor, ~1 KiB the manifest itself).
DESCRIPTOR_COST, MANIFEST_COST = 512, 1024

Key = tuple[str, str]  # (source repository, digest)


def manifest_cost(manifest: Manifest) -> int:
    """Bytes a cached manifest holds: raw bytes, the parsed value and its descriptors."""
    descriptors = len(manifest.children) + len(manifest.layers) + 1
    return len(manifest.raw) + MANIFEST_COST + DESCRIPTOR_COST * descriptors


class ManifestCache:
    """Parsed manifests by (source repository, digest), within MANIFEST_CACHE_BYTES."""

    def __init__(self) -> None:
        self._manifests: OrderedDict[Key, Manifest] = OrderedDict()
        self.cached_bytes = 0

    def __contains__(self, key: Key) -> bool:
        return key in self._manifests

    def get(self, key: Key) -> Manifest | None:
        """The manifest kept for ``key`` (now the most recently used), or None."""
        manifest = self._manifests.get(key)
        if manifest is not None:
            self._manifests.move_to_end(key)
        return manifest

    def remember(self, key: Key, manifest: Manifest) -> None:
        """Keep ``manifest``, dropping the least recently used ones its cost needs."""
        cost = manifest_cost(manifest)
        if key in self._manifests or cost > MANIFEST_CACHE_BYTES:
            return
        while self._manifests and self.cached_bytes + cost > MANIFEST_CACHE_BYTES:
            _, dropped = self._manifests.popitem(last=False)
            self.cached_bytes -= manifest_cost(dropped)
        self.cached_bytes += cost
        self._manifests[key] = manifest
