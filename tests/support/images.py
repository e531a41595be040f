"""Deterministic test images, built and pushed independently of regsync's code.

    base = Blob.random(100_000, seed="base")
    amd64 = Image.oci([base, Blob.random(50_000, seed=1)], platform="linux/amd64")
    arm64 = Image.oci([base, Blob.random(50_000, seed=2)], platform="linux/arm64/v8")
    pushed = push(registry, "diamol/app", "1.0", Index.oci([amd64, arm64]))
    pushed.digest == registry.manifest_digest("diamol/app", "1.0")

Every manifest keeps the exact bytes it is pushed as (``.raw``); digests are over those bytes.
``Blob.random`` layers are plain random bytes of an exact size (registries do not look inside);
``Blob.tar_gz`` makes real gzipped tarballs for tools that do (skopeo copy, docker pull).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .client import RegistryClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_CREATED = "2024-01-01T00:00:00Z"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes (a layer, a config, an artifact payload).

    ``diff_id`` is the digest of the uncompressed layer, for the image config; it defaults to
    ``digest`` (random "layers" are not compressed at all).
    """

    data: bytes = field(repr=False)
    uncompressed_digest: str | None = None

    @classmethod
    def random(cls, size: int, seed: int | str = 0) -> Blob:
        """Exactly ``size`` pseudo-random bytes, the same for the same seed.

        Not a real tar.gz: tools that look inside layers (``skopeo copy`` without
        ``--preserve-digests``) would recompress them and change digests. Use ``tar_gz``
        for those.
        """
        return cls(random.Random(f"blob:{seed}").randbytes(size))

    @classmethod
    def tar_gz(cls, size: int, seed: int | str = 0, name: str = "data.bin") -> Blob:
        """A real, reproducible gzipped tarball holding one file of ``size`` random bytes."""
        payload = random.Random(f"blob:{seed}").randbytes(size)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 0, 0o644
            tar.addfile(info, io.BytesIO(payload))
        raw_tar = buf.getvalue()
        return cls(gzip.compress(raw_tar, compresslevel=1, mtime=0), sha256(raw_tar))

    @classmethod
    def empty(cls) -> Blob:
        """The zero-length blob (``sha256:e3b0...``), as an empty layer."""
        return cls(b"")

    @classmethod
    def empty_tar_gz(cls) -> Blob:
        """A gzipped empty tarball: the empty layer docker writes, which tools can unpack."""
        raw_tar = b"\0" * 1024
        return cls(gzip.compress(raw_tar, mtime=0), sha256(raw_tar))

    @cached_property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def diff_id(self) -> str:
        return self.uncompressed_digest or self.digest

    def descriptor(self, media_type: str, **extra: Any) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": self.digest, "size": self.size, **extra}


def parse_platform(text: str) -> dict[str, str]:
    """``"linux/arm64/v8"`` -> ``{"os": "linux", "architecture": "arm64", "variant": "v8"}``."""
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"platform {text!r}: want os/arch[/variant]")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


@dataclass(frozen=True)
class Manifest:
    """Any manifest: its exact bytes, its media type, the blobs and manifests it points at."""

    media_type: str
    raw: bytes = field(repr=False)
    blobs: tuple[Blob, ...] = ()
    children: tuple[Manifest, ...] = ()
    platform: str | None = None

    @cached_property
    def digest(self) -> str:
        return sha256(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    def descriptor(self, *, with_platform: bool = False) -> dict[str, Any]:
        desc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if with_platform and self.platform:
            desc["platform"] = parse_platform(self.platform)
        return desc

    def walk(self) -> Iterator[Manifest]:
        """Children depth-first, then this manifest: the order they must be pushed in."""
        for child in self.children:
            yield from child.walk()
        yield self

    def all_blobs(self) -> dict[str, int]:
        """Digest -> size of every blob in the graph."""
        return {b.digest: b.size for m in self.walk() for b in m.blobs}


def _image(
    kind: str, layers: Sequence[Blob], platform: str, labels: dict[str, str] | None
) -> tuple[Blob, dict[str, Any]]:
    cfg: dict[str, Any] = {
        **{k: v for k, v in parse_platform(platform).items()},
        "created": _CREATED,
        "config": {"Labels": dict(labels or {}), "Env": [f"REGSYNC_TEST_KIND={kind}"]},
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layers]},
    }
    return Blob(json.dumps(cfg, sort_keys=True).encode()), cfg


class Image:
    """Single-platform image manifests."""

    @staticmethod
    def docker(
        layers: Sequence[Blob],
        platform: str = "linux/amd64",
        labels: dict[str, str] | None = None,
    ) -> Manifest:
        """A Docker v2 schema 2 manifest (3-space indent, as docker writes them)."""
        config, _ = _image("docker", layers, platform, labels)
        body = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(DOCKER_CONFIG),
            "layers": [b.descriptor(DOCKER_LAYER) for b in layers],
        }
        raw = json.dumps(body, indent=3).encode()
        return Manifest(DOCKER_MANIFEST, raw, (config, *layers), platform=platform)

    @staticmethod
    def oci(
        layers: Sequence[Blob],
        platform: str = "linux/amd64",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Manifest:
        """An OCI image manifest (compact JSON)."""
        config, _ = _image("oci", layers, platform, labels)
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [b.descriptor(OCI_LAYER) for b in layers],
        }
        if annotations:
            body["annotations"] = annotations
        raw = json.dumps(body, separators=(",", ":")).encode()
        return Manifest(OCI_MANIFEST, raw, (config, *layers), platform=platform)


class Index:
    """Multi-platform manifests."""

    @staticmethod
    def oci(manifests: Sequence[Manifest], annotations: dict[str, str] | None = None) -> Manifest:
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [m.descriptor(with_platform=True) for m in manifests],
        }
        if annotations:
            body["annotations"] = annotations
        raw = json.dumps(body, indent=2).encode()
        return Manifest(OCI_INDEX, raw, children=tuple(manifests))

    @staticmethod
    def docker_list(manifests: Sequence[Manifest]) -> Manifest:
        if any(m.media_type != DOCKER_MANIFEST for m in manifests):
            raise ValueError("a Docker manifest list holds Docker v2 manifests only")
        body = {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [m.descriptor(with_platform=True) for m in manifests],
        }
        raw = json.dumps(body, indent=3).encode()
        return Manifest(DOCKER_LIST, raw, children=tuple(manifests))


class Artifact:
    """OCI artifacts (signatures, SBOMs) that refer to another manifest via ``subject``."""

    EMPTY_CONFIG = Blob(b"{}")

    @staticmethod
    def oci(
        subject: Manifest,
        artifact_type: str = "application/vnd.example.sbom.v1+json",
        payloads: Sequence[Blob] = (),
        annotations: dict[str, str] | None = None,
    ) -> Manifest:
        """An OCI 1.1 artifact manifest: empty config, ``artifactType``, ``subject``.

        The subject itself is *not* a child: it is not pushed along with the artifact.
        """
        config = Artifact.EMPTY_CONFIG
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.descriptor(OCI_EMPTY),
            "layers": [b.descriptor(artifact_type) for b in payloads],
            "subject": subject.descriptor(),
        }
        if annotations:
            body["annotations"] = annotations
        raw = json.dumps(body, separators=(",", ":")).encode()
        return Manifest(OCI_MANIFEST, raw, (config, *payloads))


# -- pushing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    """What ``push`` put in a repo: the top manifest, every manifest and blob under it."""

    repo: str
    tag: str | None
    digest: str
    media_type: str
    manifests: tuple[str, ...]  # digests, children first, top last
    blobs: dict[str, int]  # digest -> size

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}" if self.tag else f"{self.repo}@{self.digest}"


def push_blob(target: RegistryClient, repo: str, blob: Blob) -> bool:
    """Monolithic upload unless the repo has it already; True if bytes were sent."""
    if target.blob_exists(repo, blob.digest):
        return False
    start = target.expect("POST", f"/v2/{repo}/blobs/uploads/", 202)
    location = urllib.parse.urljoin(target.url + "/", start.header("Location"))
    target.expect(
        "PUT",
        _with_query(location, digest=blob.digest),
        201,
        data=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    )
    return True


def _with_query(url: str, **params: str) -> str:
    """Merge params into the URL's query (dist's Location already carries ``_state``)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def push_manifest(target: RegistryClient, repo: str, ref: str, manifest: Manifest) -> None:
    """PUT the exact bytes; checks the registry computed the same digest."""
    resp = target.expect(
        "PUT",
        f"/v2/{repo}/manifests/{ref}",
        201,
        data=manifest.raw,
        headers={"Content-Type": manifest.media_type},
    )
    got = resp.header("Docker-Content-Digest")
    if got != manifest.digest:
        raise AssertionError(f"{repo}:{ref}: registry digest {got} != {manifest.digest}")


def push(target: RegistryClient, repo: str, tag: str | None, manifest: Manifest) -> Pushed:
    """Push blobs, then child manifests by digest, then the top manifest by ``tag``.

    With ``tag=None`` the top manifest is pushed by digest only (e.g. an artifact).
    """
    for blob in _unique(b for m in manifest.walk() for b in m.blobs):
        push_blob(target, repo, blob)
    for child in manifest.walk():
        if child is not manifest:
            push_manifest(target, repo, child.digest, child)
    push_manifest(target, repo, tag or manifest.digest, manifest)
    return Pushed(
        repo=repo,
        tag=tag,
        digest=manifest.digest,
        media_type=manifest.media_type,
        manifests=tuple(dict.fromkeys(m.digest for m in manifest.walk())),
        blobs=manifest.all_blobs(),
    )


def attach(target: RegistryClient, repo: str, artifact: Manifest) -> Pushed:
    """Push an artifact by digest and list it in the ``sha256-<hex>`` referrers fallback tag.

    This is what OCI 1.1 clients do against registries without the referrers API (dist 2.8).
    """
    subject = artifact.json["subject"]
    pushed = push(target, repo, None, artifact)
    fallback = subject["digest"].replace(":", "-")
    body = artifact.json
    desc = {
        **artifact.descriptor(),
        "artifactType": body.get("artifactType", body["config"]["mediaType"]),
    }
    if body.get("annotations"):
        desc["annotations"] = body["annotations"]
    existing: list[dict[str, Any]] = []
    if target.manifest_digest(repo, fallback) is not None:
        existing = json.loads(target.manifest(repo, fallback)[1])["manifests"]
    if all(d["digest"] != desc["digest"] for d in existing):
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*existing, desc]}
        index = Manifest(OCI_INDEX, json.dumps(body, indent=2).encode())
        push_manifest(target, repo, fallback, index)
    return pushed


def _unique(blobs: Iterable[Blob]) -> list[Blob]:
    return list({b.digest: b for b in blobs}.values())
