"""Content digests: parsing, and verification while streaming."""

from __future__ import annotations

import hashlib
import re

from regsync.errors import IntegrityError

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
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise IntegrityError(
                f"{self.digest}: received more than the expected {self.size} bytes"
            )
        self._hash.update(chunk)

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
