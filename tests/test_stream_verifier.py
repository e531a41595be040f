"""StreamVerifier: big chunks hash on a worker thread, in order, and the result is the same."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from regsync.errors import IntegrityError
from regsync.oci.digest import OFFLOAD_MIN, StreamVerifier, parse_digest, verify_bytes

CHUNKS = [random.Random(i).randbytes(n) for i, n in enumerate([OFFLOAD_MIN * 3, 10, 70_000] * 4)]
DATA = b"".join(CHUNKS)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


async def feed_all(verifier: StreamVerifier) -> None:
    for chunk in CHUNKS:
        await verifier.feed(chunk)
    await verifier.finish()


def test_offloaded_hash_matches_the_bytes_in_order() -> None:
    asyncio.run(feed_all(StreamVerifier(DIGEST, len(DATA))))
    reordered = "sha256:" + hashlib.sha256(b"".join(reversed(CHUNKS))).hexdigest()
    with pytest.raises(IntegrityError, match="does not match"):
        asyncio.run(feed_all(StreamVerifier(reordered, len(DATA))))


def test_one_byte_too_many_stops_the_stream_at_once() -> None:
    verifier = StreamVerifier(DIGEST, len(CHUNKS[0]) - 1)
    with pytest.raises(IntegrityError, match="more than"):
        asyncio.run(verifier.feed(CHUNKS[0]))


def test_verify_bytes_checks_the_size_and_the_digest_and_names_the_digest() -> None:
    data = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    verify_bytes(data, digest, len(data))
    verify_bytes(data, digest)  # no size known: the digest alone
    with pytest.raises(IntegrityError) as caught:
        verify_bytes(data + b"!", digest)
    assert str(caught.value) == f"{digest}: content does not match its digest"
    with pytest.raises(IntegrityError) as caught:
        verify_bytes(data, digest, len(data) + 1)
    assert str(caught.value) == f"{digest}: received {len(data)} bytes, expected {len(data) + 1}"
    with pytest.raises(IntegrityError) as caught:
        verify_bytes(data, digest, len(data) - 1)
    assert str(caught.value) == f"{digest}: received more than the expected {len(data) - 1} bytes"


def test_a_malformed_digest_is_refused_naming_it() -> None:
    with pytest.raises(ValueError) as caught:
        parse_digest("sha256:XYZ")
    assert str(caught.value) == "invalid digest 'sha256:XYZ'"
    with pytest.raises(ValueError, match="invalid digest 'md5:"):
        verify_bytes(b"", "md5:" + "0" * 32)


def test_only_full_reads_hop_to_a_thread_smaller_chunks_hash_inline() -> None:
    """A thread hop costs more CPU than hashing a small blob's chunks: those hash inline; a
    big layer's full 256 KiB reads go to the worker thread."""
    from concurrent.futures import ThreadPoolExecutor

    class Counting(ThreadPoolExecutor):
        submitted = 0

        def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            Counting.submitted += 1
            return super().submit(*args, **kwargs)

    small = [random.Random(i).randbytes(200_000) for i in range(3)]
    data = b"".join([*small, CHUNKS[0]])

    async def feed() -> None:
        asyncio.get_running_loop().set_default_executor(Counting(1))
        verifier = StreamVerifier("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        for chunk in small:
            await verifier.feed(chunk)
        assert Counting.submitted == 0
        await verifier.feed(CHUNKS[0])  # OFFLOAD_MIN * 3
        await verifier.finish()

    asyncio.run(feed())
    assert OFFLOAD_MIN == 256 * 1024 and Counting.submitted == 1
