"""A blob into a registry: monolithic streamed upload, chunked upload, cross-repository mount.

Each upload session is cancelled when it fails (best effort: the registry expires abandoned
sessions itself); a ``Location`` the registry names is checked before it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from yarl import URL

from regsync.backends.registry.auth import repo_scope
from regsync.backends.registry.pace import destination_time, too_slow
from regsync.errors import (
    InvalidNameError,
    RegistryError,
    RegsyncError,
    TransportError,
    UnsupportedError,
)
from regsync.oci.manifest import Descriptor
from regsync.oci.ref import is_repository, shown

if TYPE_CHECKING:
    from regsync.backends.registry.client import RegistryClient

CHUNK_SIZE = 16 * 1024 * 1024  # PATCH size for chunked uploads


async def blob_upload(
    client: RegistryClient, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]
) -> None:
    """Monolithic streamed upload: POST a session, PUT the body with the digest.

    A registry that refuses a streamed PUT (405/413/501) switches this client to chunked
    uploads; the error raised is retryable so the copy engine re-reads the source.
    """
    if client.chunked_uploads:
        return await blob_upload_chunked(client, repo, desc, chunks, CHUNK_SIZE)
    location = await _upload_start(client, repo)
    try:
        await _upload_put(client, repo, location, desc, chunks)
    except RegistryError as exc:
        await _upload_cancel(client, repo, location)
        if exc.status not in (405, 413, 501):
            raise
        client.chunked_uploads = True
        raise TransportError(
            f"{client.name}: streamed upload refused ({exc.status}); switching to chunked",
            registry=client.name,
        ) from exc
    except BaseException:
        await _upload_cancel(client, repo, location)
        raise


async def blob_upload_chunked(
    client: RegistryClient,
    repo: str,
    desc: Descriptor,
    chunks: AsyncIterable[bytes],
    chunk_size: int,
) -> None:
    """Chunked upload (PATCH per chunk) for registries refusing a streamed PUT."""
    location = await _upload_start(client, repo)
    scopes = (repo_scope(repo, "pull", "push"),)
    try:
        offset = 0
        async for block in _rechunk(chunks, chunk_size):
            resp = await client.transport.request(
                "PATCH",
                location,
                scopes=scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(block) - 1}",
                },
                data=block,
                ok=(202,),
            )
            offset += len(block)
            location = _location(client, resp.url, resp.headers.get("Location", ""))
        await _upload_put(client, repo, location, desc, None)
    except BaseException:
        await _upload_cancel(client, repo, location)
        raise


async def blob_mount(client: RegistryClient, repo: str, digest: str, from_repo: str) -> bool:
    """Cross-repository mount; False when the registry would not mount."""
    if not is_repository(from_repo, client.name):
        raise InvalidNameError(f"{client.name}: refusing the repository name {shown(from_repo)}")
    mount: dict[str, str | int] = {"mount": digest}
    mount["from"] = client.transport.repository(from_repo)  # as the server names it
    url = client.api_url(repo, "blobs/uploads/", query=mount)
    resp = await client.transport.request(
        "POST",
        url,
        scopes=(repo_scope(repo, "pull", "push"), repo_scope(from_repo, "pull")),
        ok=(201, 202),
    )
    if resp.status == 201:
        return True
    # 202: the registry opened an upload session instead; close it.
    await _upload_cancel(
        client, repo, _location(client, resp.url, resp.headers.get("Location", ""))
    )
    return False


async def _upload_start(client: RegistryClient, repo: str) -> URL:
    client.writable()
    try:
        resp = await client.transport.request(
            "POST",
            client.api_url(repo, "blobs/uploads/"),
            scopes=(repo_scope(repo, "pull", "push"),),
            ok=(202,),
        )
    except UnsupportedError as exc:
        raise client.refused_write(exc) from exc
    return _location(client, resp.url, resp.headers.get("Location", ""))


async def _upload_put(
    client: RegistryClient,
    repo: str,
    location: URL,
    desc: Descriptor,
    chunks: AsyncIterable[bytes] | None,
) -> None:
    # distribution puts `_state` in the Location query: merge digest= into it.
    separator = "&" if location.raw_query_string else "?"
    url = URL(f"{location}{separator}digest={quote(desc.digest)}", encoded=True)
    headers = {"Content-Type": "application/octet-stream"}
    headers["Content-Length"] = str(desc.size if chunks is not None else 0)
    await client.transport.prepare((repo_scope(repo, "pull", "push"),))
    # The source's pace is checked as it is read; this bounds a destination that stops
    # reading the upload (no read timeout covers writing), on the destination's time only.
    deadline = client.transport.timeouts.for_body(desc.size if chunks is not None else 0)
    try:
        async with (
            asyncio.timeout(deadline) as limit,
            client.transport.open(
                "PUT",
                url,
                scopes=(repo_scope(repo, "pull", "push"),),
                headers=headers,
                data=destination_time(chunks, limit) if chunks is not None else b"",
                ok=(201, 204),
            ),
        ):
            pass
    except TimeoutError:
        raise too_slow(client.name, f"PUT {url.raw_path}", deadline or 0) from None


async def _upload_cancel(client: RegistryClient, repo: str, location: URL) -> None:
    # Best effort: the registry expires abandoned sessions itself.
    with contextlib.suppress(RegsyncError):
        await client.transport.request(
            "DELETE", location, scopes=(repo_scope(repo, "pull", "push"),), ok=(204, 200, 202)
        )


def _location(client: RegistryClient, request_url: URL, location: str) -> URL:
    if not location:
        raise RegistryError(f"{client.name}: upload response has no Location header")
    resolved = request_url.join(URL(location, encoded=True))
    if resolved.scheme not in ("http", "https") or not resolved.host:
        raise RegistryError(f"{client.name}: upload Location {location!r} is not usable")
    return resolved


async def _rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
