"""Descriptors and manifests. A Manifest keeps its raw bytes beside the parsed value:
digests are computed over the raw bytes, and they are pushed onward unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from regsync import boundedjson
from regsync.errors import ManifestError
from regsync.oci import mediatypes
from regsync.oci.digest import is_digest, sha256_digest
from regsync.oci.ref import shown


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else "")

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str = ""

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        if not isinstance(data, dict):
            raise ManifestError("descriptor is not an object")
        digest, size = data.get("digest"), data.get("size")
        if not isinstance(digest, str) or not is_digest(digest):
            raise ManifestError(f"descriptor has an invalid digest {_quoted(digest)}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"descriptor {digest} has an invalid size {_quoted(size)}")
        platform = None
        if isinstance(p := data.get("platform"), dict):
            platform = Platform(
                str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", ""))
            )
        urls = data.get("urls") or ()
        annotations = data.get("annotations") or {}
        return cls(
            media_type=_media_type(data, "mediaType", f"descriptor {digest}"),
            digest=digest,
            size=size,
            platform=platform,
            urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
            annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items()))
            if isinstance(annotations, dict)
            else (),
            artifact_type=_media_type(data, "artifactType", f"descriptor {digest}"),
        )

    @property
    def is_foreign(self) -> bool:
        """A layer hosted elsewhere (Windows base layers); not copied."""
        return bool(self.urls)


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes with the parsed fields regsync needs."""

    raw: bytes
    media_type: str
    digest: str
    children: tuple[Descriptor, ...] = ()  # for an index: the child manifests
    config: Descriptor | None = None  # for an image
    layers: tuple[Descriptor, ...] = ()  # for an image
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    artifact_type_field: str = ""  # the manifest's own `artifactType`, if any

    @property
    def artifact_type(self) -> str:
        """What an image manifest holds: its `artifactType`, else its config's media type
        (an image config for images; e.g. application/vnd.cncf.helm.config.v1+json)."""
        if self.artifact_type_field or self.config is None:
            return self.artifact_type_field
        return self.config.media_type

    @property
    def is_index(self) -> bool:
        return self.media_type in mediatypes.INDEXES

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config and layers, excluding foreign layers."""
        head = (self.config,) if self.config is not None else ()
        return head + tuple(layer for layer in self.layers if not layer.is_foreign)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))


def parse_manifest(raw: bytes, content_type: str = "", digest: str = "") -> Manifest:
    """Parse manifest bytes. The media type comes from the body, else the Content-Type."""
    if len(raw) > mediatypes.MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(raw)} bytes, over the 4 MiB limit")
    try:
        data = boundedjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object")
    media_type = data.get("mediaType") or content_type.split(";")[0].strip()
    if data.get("schemaVersion") == 1 or media_type in mediatypes.SCHEMA1:
        raise ManifestError("schema1 manifests are deprecated and not copied")
    if not media_type and "manifests" in data:
        media_type = mediatypes.OCI_INDEX
    elif not media_type and "layers" in data:
        media_type = mediatypes.OCI_MANIFEST
    if media_type not in mediatypes.MANIFESTS:
        raise ManifestError(f"unsupported manifest media type {shown(media_type)}")
    digest = digest or sha256_digest(raw)
    subject = Descriptor.from_json(data["subject"]) if "subject" in data else None
    raw_annotations = data.get("annotations")
    annotations: dict[str, str] = (
        {str(k): str(v) for k, v in raw_annotations.items()}
        if isinstance(raw_annotations, dict)
        else {}
    )
    if media_type in mediatypes.INDEXES:
        children = _descriptor_list(data, "manifests")
        return Manifest(
            raw, media_type, digest, children=children, subject=subject, annotations=annotations
        )
    if "config" not in data:
        raise ManifestError("image manifest has no config")
    return Manifest(
        raw,
        media_type,
        digest,
        config=Descriptor.from_json(data["config"]),
        layers=_descriptor_list(data, "layers"),
        subject=subject,
        annotations=annotations,
        artifact_type_field=_media_type(data, "artifactType", "manifest"),
    )


def _media_type(data: dict[str, Any], key: str, where: str) -> str:
    """A ``mediaType``/``artifactType`` field: "" when absent or empty (Garden Linux's
    publishing library writes ``"artifactType": ""`` in every index entry: it says nothing),
    else checked by the RFC 6838 grammar where it enters (it becomes a Content-Type, a
    filter's subject, a log line)."""
    value = data.get(key)
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not mediatypes.is_media_type(value):
        raise ManifestError(f"{where} has an invalid {key} {_quoted(value)}")
    return value


def _quoted(value: object) -> str:
    """A value from a manifest for an error: quoted, escaped, cut short."""
    return shown(value) if isinstance(value, str) else shown(repr(value)).strip("'")


def _descriptor_list(data: dict[str, Any], key: str) -> tuple[Descriptor, ...]:
    items = data.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ManifestError(f"manifest field {key!r} is not a list")
    return tuple(Descriptor.from_json(item) for item in items)
