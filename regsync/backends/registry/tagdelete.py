"""Removing one tag from a registry without touching any other tag.

The distribution API deletes manifests by digest, which drops every tag on that digest. To
remove one tag whose digest other tags share:

1. ``DELETE /v2/<repo>/manifests/<tag>`` where the registry supports it (OCI distribution-spec
   1.1; distribution v3 and others). Remembered per registry once answered.
2. Else (distribution 2.8 answers 400 DIGEST_INVALID, others 404/405), and only where a delete
   by digest is known to work (a delete by digest succeeded this run, or a probe delete of a
   digest no registry holds came back 404 MANIFEST_UNKNOWN rather than 405 UNSUPPORTED), do
   what regclient's ``TagDelete`` does: point the tag at a unique placeholder manifest (same
   manifest family as the original, a tiny config naming the tag and the time, one empty
   layer), then delete the placeholder by digest. Nothing else points at the placeholder, so
   only this tag goes. If that delete fails, the tag's original manifest bytes are put back:
   a tag is never left on a placeholder.

Either way the tag counts as deleted only once a HEAD of it finds nothing.
"""

from __future__ import annotations

import gzip
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from regsync.errors import NotFoundError, RegistryError, RegsyncError, UnsupportedError
from regsync.oci import mediatypes
from regsync.oci.digest import is_digest, sha256_digest
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest

if TYPE_CHECKING:
    from regsync.backends.registry.client import RegistryClient

# A digest nothing can have (all zeros): deleting it tells "deletes work" (404 MANIFEST_UNKNOWN,
# distribution checks storage.delete.enabled first) from "deletes disabled" (405) harmlessly.
PROBE_DIGEST = "sha256:" + "0" * 64
# The empty layer: an empty tar archive (two 512-byte zero blocks), gzipped reproducibly.
_EMPTY_TAR = bytes(1024)
EMPTY_LAYER = gzip.compress(_EMPTY_TAR, mtime=0)
_OCI_FAMILY = frozenset({mediatypes.OCI_MANIFEST, mediatypes.OCI_INDEX})
_FAMILY_TYPES = {  # manifest family -> (manifest, config, layer) media types
    True: (
        mediatypes.OCI_MANIFEST,
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    False: (
        mediatypes.DOCKER_MANIFEST,
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
}


@dataclass
class DeleteSupport:
    """What one registry showed this run about deletes (None: not known yet)."""

    by_tag: bool | None = None
    by_digest: bool | None = None  # True once a delete by digest worked or the probe said so
    refused: bool = False  # a delete got 405 UNSUPPORTED: deletion is disabled


async def tag_delete(client: RegistryClient, repo: str, tag: str) -> None:
    """Remove ``repo:tag`` and nothing else (the Backend contract's ``tag_delete``)."""
    if is_digest(tag):
        raise ValueError(f"tag_delete takes a tag, not the digest {tag}; use manifest_delete")
    if client.deletes.by_tag is not False and await _delete_by_tag(client, repo, tag):
        client.deletes.by_tag = True
        if await client.manifest_head(repo, tag) is not None:
            raise RegistryError(
                f"{client.name}/{repo}:{tag}: the tag is still there after deleting it",
                registry=client.name,
            )
        return
    await _delete_through_placeholder(client, repo, tag)


async def _delete_by_tag(client: RegistryClient, repo: str, tag: str) -> bool:
    """True when the registry deleted the tag itself; False when it cannot delete by tag."""
    try:
        await client.delete_manifest_ref(repo, tag)
    except NotFoundError as exc:
        # MANIFEST_UNKNOWN may mean "no such tag": only a HEAD tells that from "no such API".
        if "MANIFEST_UNKNOWN" in exc.codes and await client.manifest_head(repo, tag) is None:
            raise
    except UnsupportedError:
        pass  # 405: no delete by tag here (maybe no deletes at all: the probe will say)
    except RegistryError as exc:
        if exc.status != 400:  # distribution 2.8: 400 DIGEST_INVALID for a tag
            raise
    else:
        return True
    client.deletes.by_tag = False
    return False


async def _delete_through_placeholder(client: RegistryClient, repo: str, tag: str) -> None:
    await _require_digest_deletes(client, repo, tag)
    original = await client.manifest_get(repo, tag)  # kept as raw bytes, to put back
    placeholder, blobs = build_placeholder(original.media_type, repo, tag)
    for desc, data in blobs:
        if not await client.blob_head(repo, desc.digest):
            await client.blob_upload(repo, desc, _once(data))
    # From the PUT on (it may have landed even if its answer got lost), any failure, a
    # cancellation included, puts the original back: a tag is never left on a placeholder.
    try:
        await client.manifest_put(repo, tag, placeholder)
        await client.manifest_delete(repo, placeholder.digest)
        left = await client.manifest_head(repo, tag)
        if left is not None:
            raise RegistryError(
                f"{client.name}/{repo}:{tag}: still tagged ({left.digest}) after deleting "
                "its placeholder",
                registry=client.name,
            )
    except BaseException as exc:
        await _restore(client, repo, tag, original, placeholder, exc)
        if isinstance(exc, RegsyncError):
            raise RegistryError(
                f"{client.name}/{repo}:{tag}: replacing the tag by a placeholder to delete it "
                f"failed ({exc}); the tag points at {original.digest} again",
                registry=client.name,
                status=getattr(exc, "status", 0),
            ) from exc
        raise


async def _require_digest_deletes(client: RegistryClient, repo: str, tag: str) -> None:
    known = client.deletes
    if known.by_digest is None and not known.refused:
        try:
            await client.manifest_delete(repo, PROBE_DIGEST)
        except NotFoundError as exc:
            # Any other 404 (no code, UNSUPPORTED) proves nothing: do not risk the placeholder.
            known.by_digest = "MANIFEST_UNKNOWN" in exc.codes
        except UnsupportedError:
            pass  # manifest_delete recorded the refusal
    if known.refused:
        raise UnsupportedError(
            f"{client.name} refuses deletes (405 UNSUPPORTED)", registry=client.name, status=405
        )
    if not known.by_digest:
        raise RegistryError(
            f"{client.name}/{repo}:{tag}: the registry deletes neither by tag nor (verifiably) "
            "by digest, so this tag cannot be removed without the tags sharing its digest",
            registry=client.name,
        )


async def _restore(
    client: RegistryClient,
    repo: str,
    tag: str,
    original: Manifest,
    placeholder: Manifest,
    cause: BaseException,
) -> None:
    try:
        await client.manifest_put(repo, tag, original)
    except RegsyncError as exc:
        raise RegistryError(
            f"{client.name}/{repo}:{tag}: deleting through a placeholder failed ({cause}) and "
            f"putting the original {original.digest} back failed too ({exc}); the tag may "
            f"point at the placeholder {placeholder.digest}: push {original.digest} to it",
            registry=client.name,
        ) from exc


def build_placeholder(
    original_type: str, repo: str, tag: str, now: datetime | None = None
) -> tuple[Manifest, list[tuple[Descriptor, bytes]]]:
    """A manifest unique to this deletion, in the original's family, and its two blobs."""
    oci = original_type in _OCI_FAMILY
    manifest_type, config_type, layer_type = _FAMILY_TYPES[oci]
    when = (now or datetime.now(UTC)).isoformat()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": when,
        "config": {
            "Labels": {
                "io.regsync.delete-tag": f"{repo}:{tag}",
                "io.regsync.delete-time": when,
                "io.regsync.nonce": secrets.token_hex(8),  # unique even within a microsecond
            }
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(_EMPTY_TAR)]},
        "history": [{"created": when, "created_by": "regsync prune: placeholder to delete a tag"}],
    }
    config_raw = json.dumps(config, sort_keys=True).encode()
    config_desc = Descriptor(config_type, sha256_digest(config_raw), len(config_raw))
    layer_desc = Descriptor(layer_type, sha256_digest(EMPTY_LAYER), len(EMPTY_LAYER))
    body: dict[str, object] = {"schemaVersion": 2, "mediaType": manifest_type}
    body["config"] = _descriptor_json(config_desc)
    body["layers"] = [_descriptor_json(layer_desc)]
    raw = json.dumps(body, indent=2).encode()
    blobs = [(layer_desc, EMPTY_LAYER), (config_desc, config_raw)]
    return parse_manifest(raw, manifest_type), blobs


def _descriptor_json(desc: Descriptor) -> dict[str, object]:
    return {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
