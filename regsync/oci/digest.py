"""Content digests: parsing, and verification while streaming."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from regsync.errors import IntegrityError

if TYPE_CHECKING:  # asyncio loads with the runner: `validate` and `--help` need none of it
    import asyncio

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


def parse_digest(text: str) -> str:
    """Validate a digest string (only sha256/sha512 are accepted)."""
    if not _DIGEST.fullmatch(text):
        raise ValueError(f"invalid digest {text!r}")
    return text


def is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class DigestVerifier:
    """Hashes bytes as they stream past and checks size and digest at the end."""

    def __init__(self, digest: str, size: int | None = None) -> None:
        algorithm, _, self._hex = parse_digest(digest).partition(":")
        self.digest = digest
        self.size = size
        self.received = 0
        self._hash = hashlib.new(algorithm)

    def update(self, chunk: bytes) -> None:
        self.count(chunk)
        self._hash.update(chunk)

    def count(self, chunk: bytes) -> None:
        """The size check alone (a stream hashing elsewhere still stops at the first byte
        too many)."""
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise IntegrityError(
                f"{self.digest}: received more than the expected {self.size} bytes"
            )

    def verify(self) -> None:
        if self.size is not None and self.received != self.size:
            raise IntegrityError(
                f"{self.digest}: received {self.received} bytes, expected {self.size}"
            )
        if self._hash.hexdigest() != self._hex:
            raise IntegrityError(f"{self.digest}: content does not match its digest")


def verify_bytes(data: bytes, digest: str, size: int | None = None) -> None:
    verifier = DigestVerifier(digest, size)
    verifier.update(data)
    verifier.verify()


# A thread hop costs ~50 us of CPU, hashing 256 KiB ~150 us: only a full read (a big layer
# arriving faster than it is sent on) is worth moving; a small blob's chunks hash inline.
OFFLOAD_MIN = 256 * 1024


class StreamVerifier(DigestVerifier):
    """Hashes big chunks (``OFFLOAD_MIN``, the registry client's full read) on a worker
    thread, one chunk behind the stream; smaller ones inline.

    hashlib drops the GIL for large buffers, so hashing chunk N overlaps the event loop sending
    it on and reading chunk N+1 (big layers: the hash was ~25% of the loop thread's time).
    Chunks are hashed in order: each waits for the one before. ``finish`` waits for the last
    and verifies, so nothing unverified is ever reported complete.
    """

    def __init__(self, digest: str, size: int | None = None) -> None:
        super().__init__(digest, size)
        self._pending: asyncio.Future[None] | None = None

    async def feed(self, chunk: bytes) -> None:
        self.count(chunk)
        if self._pending is not None:
            await self._pending
            self._pending = None
        if len(chunk) < OFFLOAD_MIN:
            self._hash.update(chunk)
        else:
            from asyncio import get_running_loop

            self._pending = get_running_loop().run_in_executor(None, self._hash.update, chunk)

    async def finish(self) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        self.verify()
