"""Big deterministic layers that never sit whole in memory.

A layer is ``size`` bytes from a seeded PRNG, produced in 1 MiB pieces: one pass hashes it (the
digest must be known before the upload's final PUT), a second pass streams it to the registry
in a single PUT whose body is the generator (http.client sends it as it is produced).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from tests.support import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Blob, Manifest
from tests.support.client import RegistryClient
from tests.support.images import push_blob, push_manifest

PIECE = 1024 * 1024


@dataclass(frozen=True)
class BigBlob:
    size: int
    seed: str

    def pieces(self) -> Iterator[bytes]:
        rng = random.Random(f"big:{self.seed}")
        left = self.size
        while left > 0:
            n = min(PIECE, left)
            left -= n
            yield rng.randbytes(n)

    def digest(self) -> str:
        h = hashlib.sha256()
        for piece in self.pieces():
            h.update(piece)
        return "sha256:" + h.hexdigest()


def push_big_blob(reg: RegistryClient, repo: str, blob: BigBlob, digest: str) -> None:
    """POST an upload session, then one streamed PUT with the digest."""
    if reg.blob_exists(repo, digest):
        return
    start = reg.expect("POST", f"/v2/{repo}/blobs/uploads/", 202)
    location = urllib.parse.urljoin(reg.url + "/", start.header("Location") or "")
    parts = urllib.parse.urlsplit(location)
    query = [*urllib.parse.parse_qsl(parts.query, keep_blank_values=True), ("digest", digest)]
    target = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    split = urllib.parse.urlsplit(target)
    conn = http.client.HTTPConnection(split.netloc, timeout=300)
    try:
        conn.request(
            "PUT",
            f"{split.path}?{split.query}",
            body=blob.pieces(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
        )
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise RuntimeError(f"PUT big blob to {repo}: {resp.status}")
    finally:
        conn.close()


def push_big_image(reg: RegistryClient, repo: str, tag: str, sizes: list[int], seed: str) -> str:
    """A Docker v2 image whose layers are streamed ``BigBlob``s; returns the manifest digest."""
    layers = [BigBlob(size, f"{seed}/{i}") for i, size in enumerate(sizes)]
    digests = [layer.digest() for layer in layers]
    config = Blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": digests},
            },
            sort_keys=True,
        ).encode()
    )
    push_blob(reg, repo, config)
    for layer, digest in zip(layers, digests, strict=True):
        push_big_blob(reg, repo, layer, digest)
    body = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(DOCKER_CONFIG),
        "layers": [
            {"mediaType": DOCKER_LAYER, "digest": d, "size": layer.size}
            for layer, d in zip(layers, digests, strict=True)
        ],
    }
    manifest = Manifest(DOCKER_MANIFEST, json.dumps(body, indent=3).encode())
    push_manifest(reg, repo, tag, manifest)
    return manifest.digest
