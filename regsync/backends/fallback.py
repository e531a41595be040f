"""A source registry with read-only mirrors tried in order when it fails.

Reads (listing, manifest HEAD/GET, blob HEAD/GET) go to the first registry that is working,
with the same repository paths. A registry that fails with a connection error, a 5xx or a 429
is left for the rest of the run and the next one is used; the switch is logged once. A 404 or
an auth error is an answer, not a failure: it is returned as is. Writes go to the primary only
(mirrors are read-only).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.retry import fails_over
from regsync.errors import RegsyncError
from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import Listed

log = logging.getLogger(__name__)
T = TypeVar("T")


class FallbackBackend:
    """A primary registry plus mirrors; implements the Backend protocol."""

    shares_blobs = False

    def __init__(self, clients: Sequence[RegistryClient]) -> None:
        if not clients:
            raise ValueError("FallbackBackend needs at least one registry")
        self.clients = list(clients)
        self.primary = self.clients[0]
        self.name = self.primary.name
        self._current = 0  # index of the registry reads go to now
        self._paused_noted = False

    def __repr__(self) -> str:
        return f"FallbackBackend({', '.join(c.name for c in self.clients)})"

    @property
    def serving(self) -> str:
        """The registry reads currently go to."""
        return self.clients[self._current].name

    def _failed(self, index: int, exc: BaseException) -> None:
        if index != self._current:
            return  # another task already moved on
        self._current += 1
        if self._current < len(self.clients):
            log.warning(
                "registry %s failed (%s): reading from mirror %s",
                self.clients[index].name,
                _first_line(exc),
                self.clients[self._current].name,
            )

    async def _read(self, op: Callable[[RegistryClient], Awaitable[T]], skip: int = 0) -> T:
        last: BaseException | None = None
        index = min(self._current + skip, len(self.clients) - 1)
        while index < len(self.clients):
            try:
                return await op(self.clients[index])
            except RegsyncError as exc:
                if not fails_over(exc):
                    raise
                last = exc
                self._failed(index, exc)
                index = max(index + 1, self._current)
        assert last is not None
        raise last

    async def repositories(self) -> Listed:
        return await self._read(lambda c: c.repositories())

    async def tags(self, repo: str) -> Listed:
        return await self._read(lambda c: c.tags(repo))

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        return await self._read(lambda c: c.manifest_head(repo, ref))

    async def manifest_get(self, repo: str, ref: str) -> Manifest:
        # A pull-quota pause on the registry in use: pull from the next mirror meanwhile
        # rather than wait for the window to pass.
        paused = self.clients[self._current].transport.pulls.paused
        if paused and self._current + 1 < len(self.clients):
            if not self._paused_noted:
                self._paused_noted = True
                log.warning(
                    "registry %s: pulls paused for its quota: pulling from mirror %s meanwhile",
                    self.clients[self._current].name,
                    self.clients[self._current + 1].name,
                )
            return await self._read(lambda c: c.manifest_get(repo, ref), skip=1)
        return await self._read(lambda c: c.manifest_get(repo, ref))

    async def referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        return await self._read(lambda c: c.referrers(repo, digest))

    async def blob_head(self, repo: str, digest: str) -> bool:
        return await self._read(lambda c: c.blob_head(repo, digest))

    async def blob_check(self, repo: str, desc: Descriptor) -> bool:
        return await self._read(lambda c: c.blob_check(repo, desc))

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream from the first registry that starts sending; a failure mid-stream is final."""
        index = self._current
        while True:
            started = False
            try:
                async for chunk in self.clients[index].blob_read(repo, desc):
                    started = True
                    yield chunk
                return
            except RegsyncError as exc:
                if started or not fails_over(exc) or index + 1 >= len(self.clients):
                    raise
                self._failed(index, exc)
                index = max(index + 1, self._current)

    # Writes: the primary only.

    async def manifest_put(self, repo: str, ref: str, manifest: Manifest) -> None:
        await self.primary.manifest_put(repo, ref, manifest)

    async def manifest_delete(self, repo: str, digest: str) -> None:
        await self.primary.manifest_delete(repo, digest)

    async def tag_delete(self, repo: str, tag: str) -> None:
        await self.primary.tag_delete(repo, tag)

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        await self.primary.blob_upload(repo, desc, chunks)

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        return await self.primary.blob_mount(repo, digest, from_repo)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
