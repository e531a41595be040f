"""One blob streamed from a source backend into a destination backend, verified on the way.

The bytes pass through once: the destination's ``blob_upload`` reads the source's
``blob_read`` (which verifies digest and size while streaming, and resumes a broken stream
itself). What fails here is an upload, or a source that could not recover: the blob is sent
again whole, with a new upload session, at most :data:`TRANSFER_ATTEMPTS` times, each retry
counted by the run's observer. When the upload reports a source failure as its own, the
source's error is what the caller sees.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

from regsync.backends import Backend
from regsync.backends.registry.observer import RequestObserver
from regsync.backends.registry.retry import TRANSFER, RetryPolicy, retrying
from regsync.errors import RegsyncError
from regsync.oci.manifest import Descriptor

TRANSFER_ATTEMPTS = 3  # whole-blob tries (each with a fresh upload session), at most


async def transfer_blob(
    source: Backend,
    destination: Backend,
    src_repo: str,
    dst_repo: str,
    desc: Descriptor,
    *,
    retry: RetryPolicy,
    observer: RequestObserver,
    on_bytes: Callable[[int], None],
) -> int:
    """Stream ``desc`` from ``src_repo`` of the source to ``dst_repo`` of the destination;
    returns the bytes the attempt that succeeded sent (``on_bytes`` sees every attempt's)."""
    policy = dataclasses.replace(retry, attempts=min(TRANSFER_ATTEMPTS, retry.attempts))
    sent = 0
    async for attempt in retrying(policy, observer, destination.name, on=TRANSFER):
        with attempt:
            sent = 0

            def count(n: int) -> None:
                nonlocal sent
                sent += n
                on_bytes(n)

            tap = _Tap(source.blob_read(src_repo, desc), count)
            try:
                await destination.blob_upload(dst_repo, desc, tap)
            except RegsyncError as exc:
                # The upload reports a source failure as its own: surface the cause.
                if isinstance(tap.error, RegsyncError) and tap.error is not exc:
                    raise tap.error from exc
                raise
            finally:
                await tap.aclose()
    return sent


class _Tap:
    """Wraps a source stream: counts bytes and remembers the error that ended it.

    An iterator (not a generator), closed by its owner: a destination that stops reading
    (its disk is full) leaves the source's HTTP stream to be closed here, at once, rather
    than by the garbage collector at some later point."""

    def __init__(self, source: AsyncIterator[bytes], on_bytes: Callable[[int], None]) -> None:
        self._source = source
        self._on_bytes = on_bytes
        self.error: BaseException | None = None

    def __aiter__(self) -> _Tap:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await anext(self._source)
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self.error = exc
            raise
        self._on_bytes(len(chunk))
        return chunk

    async def aclose(self) -> None:
        close = getattr(self._source, "aclose", None)
        # Still being read by another task (an HTTP client's body writer, which the failed
        # upload cancels): closing it now raises RuntimeError over the upload's own error.
        if close is not None and not getattr(self._source, "ag_running", False):
            await close()
