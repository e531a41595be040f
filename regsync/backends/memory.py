"""An in-memory backend: dicts of blobs, manifests and tags, for fast unit tests.

It keeps the ``Backend`` contract as strictly as the registry and layout backends do (the
conformance suite runs against all of them): digests are verified on every write and read,
a manifest is refused while content it references is missing, deletes by digest drop every
tag on the digest and deletes by tag only that tag. ``calls`` records each method called with
its repository and reference, so a test can count operations without a socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

from regsync.backends.base import Backend
from regsync.errors import IntegrityError, ManifestError, NotFoundError, UnsupportedError
from regsync.oci.digest import DigestVerifier, is_digest, verify_bytes
from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import Listed

CHUNK = 64 * 1024


@dataclass
class _Repo:
    blobs: set[str] = field(default_factory=set)  # digests linked into this repository
    manifests: dict[str, Manifest] = field(default_factory=dict)  # digest -> manifest
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


class MemoryBackend:
    """Implements the Backend protocol in memory (per-repository blobs, like a registry).

    ``shares_blobs=True`` makes every blob visible in every repository, like a layout;
    ``deletes=False`` refuses deletes like a registry without ``storage.delete.enabled``.
    """

    def __init__(
        self, name: str = "memory", *, shares_blobs: bool = False, deletes: bool = True
    ) -> None:
        self.name = name
        self.shares_blobs = shares_blobs
        self.deletes = deletes
        self.blobs: dict[str, bytes] = {}  # digest -> bytes, stored once
        self.repos: dict[str, _Repo] = {}
        self.calls: list[tuple[str, str, str]] = []  # (method, repo, ref or digest)

    def __repr__(self) -> str:
        return f"MemoryBackend({self.name!r})"

    def _repo(self, repo: str) -> _Repo:
        return self.repos.setdefault(repo, _Repo())

    # -- listing -------------------------------------------------------------------------

    async def repositories(self) -> Listed:
        return Listed.repositories(sorted(r for r, content in self.repos.items() if content.tags))

    async def tags(self, repo: str) -> Listed:
        self.calls.append(("tags", repo, ""))
        if repo not in self.repos:
            return Listed((), missing=True)
        return Listed.tags(sorted(self.repos[repo].tags))

    # -- manifests ------------------------------------------------------------------------

    def _resolve(self, repo: str, ref: str) -> Manifest | None:
        content = self.repos.get(repo)
        if content is None:
            return None
        digest = ref if is_digest(ref) else content.tags.get(ref, "")
        return content.manifests.get(digest)

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        self.calls.append(("manifest_head", repo, ref))
        manifest = self._resolve(repo, ref)
        return None if manifest is None else manifest.descriptor

    async def manifest_get(self, repo: str, ref: str) -> Manifest:
        self.calls.append(("manifest_get", repo, ref))
        manifest = self._resolve(repo, ref)
        if manifest is None:
            raise NotFoundError(f"{self.name}: no manifest {repo}:{ref}", registry=self.name)
        verify_bytes(manifest.raw, manifest.digest)  # what is handed out is checked
        return manifest

    async def manifest_put(self, repo: str, ref: str, manifest: Manifest) -> None:
        self.calls.append(("manifest_put", repo, ref))
        try:
            verify_bytes(manifest.raw, manifest.digest)
        except IntegrityError as exc:
            raise IntegrityError(f"{self.name}/{repo}:{ref}: {exc}") from exc
        if is_digest(ref) and ref != manifest.digest:
            raise IntegrityError(f"{self.name}/{repo}: {manifest.digest} put as {ref}")
        content = self._repo(repo)
        missing = [b.digest for b in manifest.blobs if not self._holds(repo, b.digest)]
        missing += [c.digest for c in manifest.children if c.digest not in content.manifests]
        if missing:
            raise ManifestError(
                f"{self.name}/{repo}:{ref}: references missing content ({', '.join(missing[:3])})"
            )
        content.manifests[manifest.digest] = manifest
        if not is_digest(ref):
            content.tags[ref] = manifest.digest

    async def manifest_delete(self, repo: str, digest: str) -> None:
        self.calls.append(("manifest_delete", repo, digest))
        if not is_digest(digest):
            raise ValueError(f"manifest_delete takes a digest, not {digest!r}; use tag_delete")
        self._check_deletes()
        content = self.repos.get(repo)
        if content is None or content.manifests.pop(digest, None) is None:
            raise NotFoundError(f"{self.name}: no manifest {repo}@{digest}", registry=self.name)
        content.tags = {t: d for t, d in content.tags.items() if d != digest}

    async def tag_delete(self, repo: str, tag: str) -> None:
        self.calls.append(("tag_delete", repo, tag))
        if is_digest(tag):
            raise ValueError(f"tag_delete takes a tag, not the digest {tag}; use manifest_delete")
        self._check_deletes()
        content = self.repos.get(repo)
        if content is None or content.tags.pop(tag, None) is None:
            raise NotFoundError(f"{self.name}: no tag {repo}:{tag}", registry=self.name)

    def _check_deletes(self) -> None:
        if not self.deletes:
            raise UnsupportedError(
                f"{self.name}: deletes are disabled", registry=self.name, status=405
            )

    async def referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        self.calls.append(("referrers", repo, digest))
        return None  # no referrers API, like a layout or distribution 2.8

    # -- blobs ----------------------------------------------------------------------------

    def _holds(self, repo: str, digest: str) -> bool:
        if digest not in self.blobs:
            return False
        return self.shares_blobs or digest in self.repos.get(repo, _Repo()).blobs

    async def blob_head(self, repo: str, digest: str) -> bool:
        self.calls.append(("blob_head", repo, digest))
        return self._holds(repo, digest)

    async def blob_check(self, repo: str, desc: Descriptor) -> bool:
        self.calls.append(("blob_check", repo, desc.digest))
        return self._holds(repo, desc.digest) and len(self.blobs[desc.digest]) == desc.size

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        self.calls.append(("blob_read", repo, desc.digest))
        if not self._holds(repo, desc.digest):
            raise NotFoundError(f"{self.name}: no blob {desc.digest}", registry=self.name)
        data = self.blobs[desc.digest]
        verifier = DigestVerifier(desc.digest, desc.size)
        for start in range(0, max(len(data), 1), CHUNK):
            chunk = data[start : start + CHUNK]
            verifier.update(chunk)
            yield chunk
        verifier.verify()

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        self.calls.append(("blob_upload", repo, desc.digest))
        verifier = DigestVerifier(desc.digest, desc.size)
        data = bytearray()
        async for chunk in chunks:
            verifier.update(chunk)
            data += chunk
        verifier.verify()  # before the blob becomes visible
        self.blobs[desc.digest] = bytes(data)
        self._repo(repo).blobs.add(desc.digest)

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        self.calls.append(("blob_mount", repo, digest))
        if not self._holds(from_repo, digest):
            return False
        self._repo(repo).blobs.add(digest)
        return True

    def count(self, method: str) -> int:
        """How many times ``method`` was called."""
        return sum(1 for m, _, _ in self.calls if m == method)


def _check(backend: MemoryBackend) -> Backend:
    return backend  # the type checker proves MemoryBackend keeps the protocol
