"""Platform subsets: copy only the listed children of an index and push an index of just them.

The subset index is new bytes, so its digest differs from the source's (the one place regsync
does not preserve a digest, because the user asked for it). It records where it came from in
two annotations, so the next run can tell it is up to date from one destination GET, without
pulling anything from the source:

    io.regsync.source.digest   the source index digest the subset was made from
    io.regsync.platforms       the platforms it was filtered to, as configured (comma-joined)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from regsync.errors import ManifestError
from regsync.oci.manifest import Manifest, Platform, parse_manifest
from regsync.oci.ref import printable

SOURCE_DIGEST = "io.regsync.source.digest"
PLATFORMS = "io.regsync.platforms"
# buildx stores provenance/SBOM as index children of platform unknown/unknown that point at
# the image they describe; they stay when that image stays.
_REFERENCE_DIGEST = "vnd.docker.reference.digest"
_SHOWN, _SHOWN_CHARS = 10, 60  # platforms named in an error, characters of each


@dataclass(frozen=True)
class PlatformFilter:
    """Platforms as configured: ``linux/arm64`` matches every arm64 variant, ``.../v7`` only v7."""

    platforms: tuple[Platform, ...]

    @classmethod
    def parse(cls, names: Sequence[str]) -> PlatformFilter:
        return cls(tuple(Platform.parse(name) for name in names))

    @property
    def label(self) -> str:
        return ",".join(str(p) for p in self.platforms)

    def matches(self, platform: Platform) -> bool:
        return any(_matches(want, platform) for want in self.platforms)


def _matches(want: Platform, have: Platform) -> bool:
    if (want.os, want.architecture) != (have.os, have.architecture):
        return False
    if not want.variant:
        return True
    # arm64 images rarely spell their (only) variant out: v8 is the default.
    default = "v8" if have.architecture == "arm64" else ""
    return want.variant == (have.variant or default)


def recorded_origin(manifest: Manifest) -> tuple[str | None, str]:
    """(source digest, platforms) a subset index records; (None, "") for any other manifest."""
    return manifest.annotations.get(SOURCE_DIGEST), manifest.annotations.get(PLATFORMS, "")


def subset_index(
    index: Manifest, wanted: PlatformFilter, nested: Mapping[str, Manifest | None] | None = None
) -> Manifest:
    """The index holding only ``wanted`` children, annotated with its origin.

    Raises ManifestError when none of the index's children is a wanted platform.
    """
    subset = filter_index(index, wanted, nested or {})
    if subset is None:
        entries = json.loads(index.raw).get("manifests") or []
        offered = sorted({str(p) for e in entries if (p := _platform_of(e)) is not None})
        raise ManifestError(
            f"none of the platforms {wanted.label} is in this index (it has {_few(offered)})"
        )
    return subset


def _few(platforms: list[str]) -> str:
    """The platforms an index offers, for an error: from the source, so escaped, each cut
    short, and only the first ``_SHOWN`` of them (the rest counted)."""
    shown = ", ".join(printable(p)[:_SHOWN_CHARS] for p in platforms[:_SHOWN])
    more = f" and {len(platforms) - _SHOWN} more" if len(platforms) > _SHOWN else ""
    return (shown or "no platforms") + more


def filter_index(
    index: Manifest, wanted: PlatformFilter, nested: Mapping[str, Manifest | None]
) -> Manifest | None:
    """``index`` with only ``wanted`` children, or None when it has none.

    ``nested`` holds, by source digest, the subsets of the indexes this one nests (None: that
    index has no wanted platform): such a child is kept as its subset, or dropped.
    """
    data: dict[str, Any] = json.loads(index.raw)
    entries = [e for e in data.get("manifests") or [] if isinstance(e, dict)]
    kept: dict[int, dict[str, Any]] = {}  # position in the index -> entry to write
    for at, entry in enumerate(entries):
        if entry.get("digest") in nested:
            subset = nested[entry["digest"]]
            if subset is not None:
                kept[at] = {**entry, "digest": subset.digest, "size": len(subset.raw)}
        elif (p := _platform_of(entry)) is not None and wanted.matches(p):
            kept[at] = entry
    if not kept:
        return None
    images = {e["digest"] for e in kept.values()}
    for at, entry in enumerate(entries):
        if (entry.get("annotations") or {}).get(_REFERENCE_DIGEST) in images:
            kept.setdefault(at, entry)  # the attestation of a kept image
    data["manifests"] = [kept[at] for at in sorted(kept)]
    data["annotations"] = {
        **(data.get("annotations") or {}),
        SOURCE_DIGEST: index.digest,
        PLATFORMS: wanted.label,
    }
    raw = json.dumps(data, indent=2).encode()
    return parse_manifest(raw, index.media_type)


def _platform_of(entry: Any) -> Platform | None:
    p = entry.get("platform") if isinstance(entry, dict) else None
    if not isinstance(p, dict) or p.get("os") in (None, "unknown"):
        return None
    return Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
