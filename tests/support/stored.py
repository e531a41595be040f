"""Put test images into a regsync ``Backend`` directly (memory, layout or registry), the way
the copy engine writes them: blobs first, then children, then the manifest itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

from regsync.backends import Backend
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest

from .images import Manifest as Built


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """``data`` as the byte stream ``blob_upload`` reads."""
    yield data


async def store(backend: Backend, repo: str, ref: str, built: Built) -> Manifest:
    """Every blob and child of ``built`` through the backend, then ``built`` under ``ref``."""
    for m in built.walk():
        for blob in m.blobs:
            desc = Descriptor("application/octet-stream", blob.digest, blob.size)
            await backend.blob_upload(repo, desc, one_chunk(blob.data))
        parsed = parse_manifest(m.raw, m.media_type)
        await backend.manifest_put(repo, ref if m is built else m.digest, parsed)
    return parse_manifest(built.raw, built.media_type)
