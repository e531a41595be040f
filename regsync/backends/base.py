"""The seam between the copy engine and where content lives (a registry, an OCI layout).

Every backend (``RegistryClient``, ``FallbackBackend``, ``Layout``, ``Tarball``,
``MemoryBackend``) keeps the contract below; ``tests/test_backend_conformance.py`` runs one
suite against each of them.

Words used throughout:

- ``repo``: a repository path (``team/app``), already validated by the caller.
- ``ref``: a tag or a digest. A *digest* is ``sha256:<64 hex>`` (or sha512); anything else is
  a *tag*. Methods that take only one of the two say so and raise ``ValueError`` for the other:
  mixing them up is a programming error, never a registry's answer.
- Errors are ``RegsyncError`` subclasses (``regsync.errors``): ``NotFoundError`` for content that
  does not exist, ``UnsupportedError`` for an operation the backend refuses (deletes disabled),
  ``IntegrityError`` for bytes that do not match their digest, ``ManifestError`` for a manifest
  regsync cannot use, ``LayoutError``/``RegistryError``/``TransportError`` for the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import Listed


class Backend(Protocol):
    """What the copy engine, the planner and prune need from a source or destination."""

    name: str
    """Shown in messages: the registry host, or ``oci:<dir>``."""

    shares_blobs: bool
    """True when a blob stored once is visible in every repository (an OCI layout): a blob
    HEAD answered for one repository holds for all, so the engine keeps such answers even for
    a repository that was empty. False for registries (blobs are linked per repository)."""

    async def repositories(self) -> Listed:
        """Every repository the backend holds, sorted or not; may be large but is bounded.

        Names off the distribution grammar come back in ``rejected``, never in ``names``.

        Raises ``RegistryError`` when the registry cannot list (no or closed catalog), and
        ``LayoutError`` when a layout directory is not a layout.
        """
        ...

    async def tags(self, repo: str) -> Listed:
        """Every tag of ``repo``; an unknown or empty repository has none (no error).

        Tags off the grammar come back in ``rejected``, never in ``names``; ``missing`` says
        the repository does not exist (a registry's 404, a layout without it).
        """
        ...

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        """The descriptor (media type, digest) a tag or digest resolves to in ``repo``.

        None when it does not exist: absence is an answer here, not an error. ``size`` is
        informative only. Other failures raise.
        """
        ...

    async def manifest_get(self, repo: str, ref: str) -> Manifest:
        """The manifest's exact bytes for a tag or digest, parsed.

        The backend verifies the bytes: against ``ref`` when it is a digest, else against the
        digest the backend announces for the tag (``IntegrityError``/``ManifestError`` on a
        mismatch). Raises ``NotFoundError`` when the tag or digest does not exist.
        """
        ...

    async def manifest_put(self, repo: str, ref: str, manifest: Manifest) -> None:
        """Store ``manifest.raw`` unchanged under a tag, or by digest when ``ref`` is a digest.

        The backend checks first that ``manifest.raw`` hashes to ``manifest.digest``
        (``IntegrityError``, nothing written). Every blob and child manifest it references must
        already be in ``repo`` (else ``ManifestError`` or a registry's 400
        MANIFEST_BLOB_UNKNOWN). A tag that pointed elsewhere now points here; other tags are
        untouched.
        """
        ...

    async def manifest_delete(self, repo: str, digest: str) -> None:
        """Delete the manifest ``digest`` from ``repo``: EVERY tag pointing at it goes too.

        ``digest`` must be a digest (``ValueError`` for a tag; use ``tag_delete``). Raises
        ``NotFoundError`` when ``repo`` has no such manifest and ``UnsupportedError`` when the
        backend refuses deletes (distribution without ``storage.delete.enabled``: 405). Blobs
        stay; only a registry's garbage collector reclaims them (a layout keeps the manifest
        blob, so a HEAD by digest may still find it there).
        """
        ...

    async def tag_delete(self, repo: str, tag: str) -> None:
        """Remove exactly the tag ``tag`` from ``repo``; every other tag keeps its digest, even
        one sharing this tag's digest.

        ``tag`` must be a tag (``ValueError`` for a digest). Returns only once the tag is gone;
        raises ``NotFoundError`` when the tag does not exist, ``UnsupportedError`` when the
        backend refuses deletes, and another ``RegsyncError`` when it cannot remove the tag
        alone (then the tag still points at its original digest). How is the backend's
        business: a registry without a tag delete gets a unique placeholder manifest under
        the tag, deleted by digest (see ``regsync.backends.registry.tagdelete``).
        """
        ...

    async def referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        """The manifests whose ``subject`` is the manifest ``digest``, from an OCI referrers API.

        None when the backend has no referrers API (a layout; a registry answering 404): the
        caller then reads the ``sha256-<hex>`` fallback tag instead. An empty list when the API
        exists and lists nothing. The descriptors are the API's word (the caller fetches and
        verifies each manifest by digest); ``digest`` must be a digest (``ValueError``
        otherwise, where the backend checks).
        """
        ...

    async def blob_head(self, repo: str, digest: str) -> bool:
        """Whether ``repo`` holds the blob ``digest`` (with ``shares_blobs``: any repository)."""
        ...

    async def blob_check(self, repo: str, desc: Descriptor) -> bool:
        """Whether ``repo`` itself shows it holds exactly ``desc``: its digest and its size.

        The proof the copy engine asks of a *source* before reusing content it did not read
        (a mount, a blob already at the destination): a registry answers a HEAD in ``repo``
        (200, ``Content-Length`` equal to ``desc.size``, ``Docker-Content-Digest`` equal to
        the digest when sent), a layout holds the file with that size. False otherwise.
        """
        ...

    def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream the blob's bytes, verifying size and digest as they pass.

        A mismatch raises ``IntegrityError`` when the stream ends, so a consumer trusts the
        bytes only once iteration finished without error (uploads verify again on their side).
        Raises ``NotFoundError`` when the blob does not exist (at the first iteration).
        """
        ...

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """Store a blob streamed from ``chunks`` (which may raise: nothing is stored then).

        The bytes are verified against ``desc.digest`` and ``desc.size`` before the blob
        becomes visible: a mismatch raises (``IntegrityError`` where the backend hashes itself,
        ``RegistryError`` 400 DIGEST_INVALID where the registry does) and stores nothing.
        """
        ...

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        """Make ``from_repo``'s blob ``digest`` part of ``repo`` without sending its bytes.

        True when ``repo`` now holds the blob; False when the backend would not mount (the
        blob is missing in ``from_repo``, or the registry opened an upload instead): the
        caller then uploads it.
        """
        ...
