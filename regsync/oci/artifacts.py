"""The referrer tag grammar: which tag names belong to an image rather than being one.

cosign stores signatures, attestations and SBOMs under ``sha256-<hex>.sig|.att|.sbom``; the OCI
referrers fallback is an index tagged ``sha256-<hex>``. Pure: names in, names out.
"""

from __future__ import annotations

import re

# cosign: sha256-<hex>.sig / .att / .sbom; OCI referrers fallback: sha256-<hex>
ARTIFACT_TAG = re.compile(r"sha256-(?P<hex>[a-f0-9]{64})(?P<suffix>\.sig|\.att|\.sbom)?")


def artifact_subject(tag: str) -> str | None:
    """``sha256:<hex>`` for a referrer/signature tag, else None."""
    match = ARTIFACT_TAG.fullmatch(tag)
    return f"sha256:{match['hex']}" if match else None


def artifact_tags(digest: str) -> tuple[str, ...]:
    """The tags where referrers of ``digest`` may live: the fallback index and cosign's."""
    if not digest.startswith("sha256:"):
        return ()
    base = "sha256-" + digest.removeprefix("sha256:")
    return (base, base + ".sig", base + ".att", base + ".sbom")


def is_fallback_tag(tag: str) -> bool:
    """Whether ``tag`` is an OCI referrers fallback index tag (not a cosign one)."""
    match = ARTIFACT_TAG.fullmatch(tag)
    return match is not None and match["suffix"] is None
