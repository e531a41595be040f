"""A rule's referrer filter (``referrers: {artifact_types: [...], annotations: {k: v}}``).

Which signatures, SBOMs and attestations travel with the images: a referrer is copied when
its artifact type is listed (any, when none is) and it carries every listed annotation with
that value. Referrers listed by an index (the OCI referrers API, the ``sha256-<hex>`` fallback
tag) are matched by their descriptors, read when the copy reads that index anyway. cosign's
``.sig``/``.att``/``.sbom`` tags are manifests of their own: those to be copied are read while
planning (the GET their copy makes anyway, shared through the copy engine's cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from regsync.mediafilter import ManifestFetch, decide_each
from regsync.oci.artifacts import is_fallback_tag
from regsync.oci.manifest import Descriptor, Manifest
from regsync.plan import Action, TagAction
from regsync.tagpolicy import Filtered


@dataclass(frozen=True)
class ReferrerMatch:
    artifact_types: frozenset[str] = frozenset()  # empty: any
    annotations: Mapping[str, str] = field(default_factory=dict)

    def matches(self, artifact_type: str, annotations: Mapping[str, str]) -> bool:
        if self.artifact_types and artifact_type not in self.artifact_types:
            return False
        return all(annotations.get(k) == v for k, v in self.annotations.items())

    def descriptor(self, desc: Descriptor) -> bool:
        return self.matches(desc.artifact_type, dict(desc.annotations))

    def manifest(self, manifest: Manifest) -> bool:
        """cosign's tags carry no artifactType: their first layer's media type says what
        they are (``application/vnd.dev.cosign.simplesigning.v1+json`` for a signature)."""
        kind = manifest.artifact_type_field or (
            manifest.layers[0].media_type if manifest.layers else manifest.artifact_type
        )
        return self.matches(kind, manifest.annotations)

    def keep(self, found: list[Descriptor]) -> list[Descriptor]:
        return [d for d in found if self.descriptor(d)]


async def apply(
    match: ReferrerMatch, actions: tuple[TagAction, ...], repo: str, fetch: ManifestFetch
) -> tuple[tuple[TagAction, ...], tuple[Filtered, ...]]:
    """The actions left once cosign tags to be copied that ``match`` refuses are dropped."""
    cosign = [
        a
        for a in actions
        if a.action is Action.COPY
        and a.artifact_of
        and a.source_digest is not None
        and not is_fallback_tag(a.tag)
    ]
    matched = await decide_each(fetch, repo, cosign, match.manifest)
    refused = {t for t, ok in matched.items() if not ok}
    kept = tuple(a for a in actions if a.tag not in refused)
    skipped = tuple(Filtered(t, "referrers", "does not match the filter") for t in sorted(refused))
    return kept, skipped
