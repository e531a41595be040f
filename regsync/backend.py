"""The seam between the copy engine and where content lives (a registry, an OCI layout)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import Listed


class Backend(Protocol):
    """What the copy engine and planner need from a source or destination."""

    name: str

    # Listings: names off the distribution grammar come back in ``rejected``, never as names.
    async def repositories(self) -> Listed: ...

    async def tags(self, repo: str) -> Listed: ...

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None: ...

    async def manifest_get(self, repo: str, ref: str) -> Manifest: ...

    async def manifest_put(self, repo: str, ref: str, manifest: Manifest) -> None: ...

    async def manifest_delete(self, repo: str, digest: str) -> None: ...

    async def blob_head(self, repo: str, digest: str) -> bool: ...

    def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]: ...

    async def blob_upload(
        self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]
    ) -> None: ...

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool: ...
