"""An OCI layout packed in one tar file (``oci-archive``): reading members in place, packing.

Reading never extracts. The archive's headers are scanned once (``tarfile`` reads a header and
seeks past the data) into a table of member name -> (data offset, size); a blob is then read
straight from that offset. Every member is untrusted: only the names an OCI layout has are kept
(``oci-layout``, ``index.json``, ``blobs/<algorithm>/<hex>`` with a valid digest, and regsync's
own ``regsync-bundle.json``), each only as a regular file; links, devices, FIFOs, unknown names
and absolute or dotted paths are refused (a name is a key in the table, never a path), a name
seen twice makes the archive unusable, and the member count, name length and the sizes of the
small files are bounded.

Packing writes a new tar (PAX, members owned by root, mtime 0: the same content gives the same
bytes) into a locked, dot-named temp file beside the final name, hashing as it goes, then
fsyncs and renames it into place (``layoutfs.TempFile``): a crash leaves the old file or none,
never half a bundle under the final name.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from regsync.backends.layoutfs import TempFile
from regsync.errors import LayoutError
from regsync.oci.digest import is_digest

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BUNDLE_FILE = "regsync-bundle.json"  # a delta bundle's own record (see backends.bundle)
MAX_MEMBERS = 1_000_000  # headers scanned, at most (a layout of a million blobs is huge)
MAX_NAME = 256
MAX_SKIPPED = 20  # reasons kept for members not taken (the rest are counted)
MAX_HEADER = 1024 * 1024  # a PAX / GNU long-name header, read whole by tarfile
_SMALL = frozenset({LAYOUT_FILE, INDEX_FILE, BUNDLE_FILE})
_DIRECTORIES = frozenset({"blobs", "blobs/sha256", "blobs/sha512"})
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    offset: int  # of the data, from the start of the file
    size: int


def blob_name(digest: str) -> str:
    algorithm, _, hexa = digest.partition(":")
    return f"blobs/{algorithm}/{hexa}"


def _digest_of(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    digest = f"{parts[1]}:{parts[2]}"
    return digest if is_digest(digest) else None


class _BoundedInfo(tarfile.TarInfo):
    """tarfile reads a PAX or GNU long-name header whole into memory before the caller sees
    the member: refuse one over MAX_HEADER first (a crafted bundle could claim gigabytes)."""

    def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._bound()
        info: tarfile.TarInfo = super()._proc_pax(tar)  # type: ignore[misc]  # private in typeshed
        return info

    def _proc_gnulong(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._bound()
        info: tarfile.TarInfo = super()._proc_gnulong(tar)  # type: ignore[misc]
        return info

    def _bound(self) -> None:
        if self.size > MAX_HEADER:
            raise tarfile.ReadError(f"refusing an extended header of {self.size} bytes")


class Archive:
    """The members of one tar file, scanned once; reads go straight to their offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, Member] = {}
        self.skipped: list[str] = []  # why members were not taken (for one log line each)
        self._skips = 0

    @classmethod
    def scan(cls, path: Path) -> Archive:
        """Read every header; LayoutError when it is no tar or breaks a rule above."""
        archive = cls(path)
        try:
            with tarfile.open(path, mode="r:", tarinfo=_BoundedInfo) as tar:
                count = 0
                while (info := tar.next()) is not None:
                    # tarfile keeps every header it read (not in typeshed): keep none
                    tar.members.clear()  # type: ignore[attr-defined]
                    count += 1
                    if count > MAX_MEMBERS:
                        raise LayoutError(f"tar:{path}: over {MAX_MEMBERS} members")
                    archive._take(info)
        except (OSError, tarfile.TarError) as exc:
            raise LayoutError(f"tar:{path}: cannot read the archive: {exc}") from exc
        return archive

    def _take(self, info: tarfile.TarInfo) -> None:
        name = info.name.removeprefix("./").rstrip("/") if len(info.name) <= MAX_NAME else ""
        if info.isdir() and name in _DIRECTORIES:
            return
        known = name in _SMALL or _digest_of(name) is not None
        if not known:
            self._skip(f"skipped member {info.name[:MAX_NAME]!r}: not part of a layout")
            return
        if not info.isreg() or info.issparse():
            self._skip(f"skipped member {name!r}: not a regular file")
            return
        if name in self.members:
            raise LayoutError(f"tar:{self.path}: member {name!r} appears twice")
        self.members[name] = Member(info.offset_data, info.size)

    def _skip(self, why: str) -> None:
        """Keep the first MAX_SKIPPED reasons, then one line counting the rest."""
        self._skips += 1
        if self._skips <= MAX_SKIPPED:
            self.skipped.append(why)
        else:
            self.skipped[MAX_SKIPPED:] = [f"skipped {self._skips - MAX_SKIPPED} more members"]

    def has(self, name: str) -> bool:
        return name in self.members

    @property
    def digests(self) -> list[str]:
        return [d for name in self.members if (d := _digest_of(name)) is not None]

    def read(self, name: str, limit: int) -> bytes | None:
        """A small member's bytes, None when it holds more than ``limit``; KeyError if absent."""
        member = self.members[name]
        if member.size > limit:
            return None
        with self._open(member) as handle:
            data = handle.read(member.size)
        if len(data) != member.size:
            raise LayoutError(f"tar:{self.path}: {name} is cut short")
        return data

    def chunks(self, name: str) -> Iterator[bytes]:
        """A member's bytes in chunks (a generator: the file stays open while it runs)."""
        member = self.members[name]
        with self._open(member) as handle:
            left = member.size
            while left > 0:
                chunk = handle.read(min(COPY_CHUNK, left))
                if not chunk:
                    raise LayoutError(f"tar:{self.path}: {name} is cut short")
                left -= len(chunk)
                yield chunk

    def _open(self, member: Member) -> BinaryIO:
        handle = self.path.open("rb")
        handle.seek(member.offset)
        return handle


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what passes through to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.target.write(data)
        self.sha256.update(data)
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written


@dataclass
class Packed:
    sha256: str  # of the whole file, "sha256:<hex>"
    size: int


def pack(
    path: Path,
    files: list[tuple[str, int, Iterator[bytes]]],
    before_rename: Callable[[], None] | None = None,
) -> Packed:
    """Write ``files`` (name, size, chunks) as a tar to ``path`` atomically; its sha256.
    ``before_rename`` may raise to abandon the pack at the last moment (``path`` unchanged)."""
    temp = TempFile(path.parent, [path.name], sweepable=False)
    try:
        sink = _Hashing(temp.handle)
        with tarfile.TarFile(
            fileobj=sink, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_CHUNK
        ) as tar:
            for name, size, chunks in files:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = size, 0o644, 0
                tar.addfile(info, _Reader(chunks))
        if before_rename is not None:
            before_rename()
        temp.commit()
        return Packed(f"sha256:{sink.sha256.hexdigest()}", sink.written)
    finally:
        temp.close()


class _Reader(io.RawIOBase):
    """Chunks as a readable file for ``tarfile.addfile`` (which reads exactly the size)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self._chunk:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk = memoryview(chunk)
            take = len(self._chunk) if n < 0 else n - len(out)
            out += self._chunk[:take]
            self._chunk = self._chunk[take:]
        return bytes(out)
