"""Seed a stopped docker-registry by writing its filesystem storage directly.

Pushing 50,000 tags through the API takes many minutes; writing the files distribution would
write takes seconds. The layout (distribution 2.8, filesystem driver, under
``<root>/docker/registry/v2``):

- ``blobs/sha256/<first 2 hex>/<hex>/data``: every blob and every manifest's bytes;
- ``repositories/<name>/_layers/sha256/<hex>/link``: the repository may serve that blob;
- ``repositories/<name>/_manifests/revisions/sha256/<hex>/link``: it holds that manifest;
- ``repositories/<name>/_manifests/tags/<tag>/current/link`` and
  ``.../tags/<tag>/index/sha256/<hex>/link``: the tag points at it.

Each link file holds the digest it names. Same arguments, same digests (the S4 catalogue's).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class StorageWriter:
    """Writes blobs, manifests and tags into one registry's storage root."""

    def __init__(self, root: Path) -> None:
        self.v2 = root / "docker" / "registry" / "v2"
        self._blobs: set[str] = set()

    def blob(self, data: bytes) -> str:
        digest = _digest(data)
        if digest not in self._blobs:
            hexd = digest.split(":", 1)[1]
            path = self.v2 / "blobs" / "sha256" / hexd[:2] / hexd / "data"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self._blobs.add(digest)
        return digest

    def _link(self, path: Path, digest: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "link").write_text(digest)

    def image(self, repo: str, tag: str, layer: bytes, label: str) -> str:
        """A one-layer Docker v2 image under ``repo:tag``; its config is unique per ``label``."""
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {"Labels": {"id": label}}},
            sort_keys=True,
        ).encode()
        layer_digest, config_digest = self.blob(layer), self.blob(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": DOCKER_CONFIG,
                    "size": len(config),
                    "digest": config_digest,
                },
                "layers": [{"mediaType": DOCKER_LAYER, "size": len(layer), "digest": layer_digest}],
            },
            indent=3,
        ).encode()
        digest = self.blob(manifest)
        base = self.v2 / "repositories" / repo
        for blob in (layer_digest, config_digest):
            self._link(base / "_layers" / "sha256" / blob.split(":", 1)[1], blob)
        hexd = digest.split(":", 1)[1]
        self._link(base / "_manifests" / "revisions" / "sha256" / hexd, digest)
        self._link(base / "_manifests" / "tags" / tag / "current", digest)
        self._link(base / "_manifests" / "tags" / tag / "index" / "sha256" / hexd, digest)
        return digest


def seed_tags(root: Path, namespace: str, repos: int, tags: int) -> int:
    """``namespace/app00..`` x ``tags`` tags (``1.<j>.0``) sharing one tiny layer; returns the
    number of tags written."""
    writer = StorageWriter(root)
    layer = hashlib.sha256(namespace.encode()).digest() * 32  # 1 KiB, deterministic
    for i in range(repos):
        repo = f"{namespace}/app{i:02d}"
        for j in range(tags):
            writer.image(repo, f"1.{j}.0", layer, f"{repo}:{j}")
    return repos * tags
