"""The distribution API for one registry: listing, manifests and blobs.

Methods read noun-verb (``manifest_head``, ``blob_upload``) so related calls sort together.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from urllib.parse import quote

from yarl import URL

from regsync.backends.registry import tagdelete
from regsync.backends.registry.auth import CATALOG_SCOPE, repo_scope
from regsync.backends.registry.pace import destination_time, too_slow
from regsync.backends.registry.responses import next_page
from regsync.backends.registry.retry import retry_reason
from regsync.backends.registry.transport import Transport
from regsync.errors import (
    AuthError,
    CredentialsError,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    NotFoundError,
    ReadOnlyError,
    RegistryError,
    RegsyncError,
    TransportError,
    UnreachableError,
    UnsupportedError,
)
from regsync.oci import mediatypes
from regsync.oci.digest import StreamVerifier, is_digest, verify_bytes
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from regsync.oci.ref import QUOTED, Listed, is_reference, is_repository, is_tag, shown

_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_RANGE_START = re.compile(r"\s*bytes\s+([0-9]{1,19})-")  # few digits: int() refuses 4,300+
PAGE_SIZE = 1000  # distribution caps n at 1000
MAX_PAGES = 10_000  # a registry that pages forever is cut off, not followed
MAX_LISTING = 1_000_000
STREAM_CHUNK = 256 * 1024  # per read: same CPU as 1 MiB, ~9 MiB less peak RSS over 4 streams
CHUNK_SIZE = 16 * 1024 * 1024  # PATCH size for chunked uploads
# What may follow /v2/<repo>/<endpoint>/ in a URL, per endpoint (others take nothing).
_REFERENCE = {"manifests": is_reference, "blobs": is_digest, "referrers": is_digest}


class RegistryClient:
    """Talks to one registry. Implements the Backend protocol used by the copy engine."""

    shares_blobs = False  # blobs are linked per repository: a HEAD in one says nothing of another

    def __init__(self, transport: Transport, *, page_size: int = PAGE_SIZE) -> None:
        self.transport = transport
        self.name = transport.registry
        self.page_size = page_size
        # Set once a registry refuses a streamed monolithic PUT; later uploads go chunked.
        self.chunked_uploads = False
        self.deletes = tagdelete.DeleteSupport()  # learnt from the answers to deletes
        self._read_only: ReadOnlyError | None = None  # set by the first refused upload

    def __repr__(self) -> str:
        return f"RegistryClient({self.name})"

    # -- listing -------------------------------------------------------------------------

    async def ping(self) -> None:
        await self.transport.request("GET", self.transport.url("/v2/"), scopes=(), ok=(200,))

    async def repositories(self) -> Listed:
        """Every repository in the catalog (needs `registry:catalog:*`), checked by name."""
        try:
            url = self.transport.url("/v2/_catalog", {"n": self.page_size})
            every = await self._paged(url, "repositories", (CATALOG_SCOPE,), lambda n: True)
            return Listed.repositories(_below(list(every.names), self), self.name)
        except CredentialsError:
            raise  # bad credentials: that message is the clear one
        except (NotFoundError, UnsupportedError, AuthError) as exc:
            # Many registries (Docker Hub, GHCR, ECR, ...) have no catalog or keep it closed.
            raise RegistryError(
                f"{self.name} cannot list its repositories (catalog: {_short(exc, self.name)}):"
                f" name them in the rule instead of a glob, one source per repository",
                registry=self.name,
                status=exc.status,
            ) from exc

    async def tags(self, repo: str) -> Listed:
        """Every tag of a repository, checked by name; an empty or unknown one has none."""
        url = self._url(repo, "tags/list", query={"n": self.page_size})
        try:
            scopes = (repo_scope(repo, "pull"),)
            return await self._paged(url, "tags", scopes, is_tag, keep=QUOTED)
        except NotFoundError:
            return Listed((), missing=True)

    def _url(
        self, repo: str, endpoint: str, ref: str = "", query: dict[str, str | int] | None = None
    ) -> URL:
        """The one place an API URL is built from names: off the grammar, nothing is sent."""
        if not is_repository(repo, self.name):
            raise InvalidNameError(f"{self.name}: refusing the repository name {shown(repo)}")
        valid = _REFERENCE.get(endpoint)
        if (valid is None and ref) or (valid is not None and not valid(ref)):
            raise InvalidNameError(f"{self.name}/{repo}: refusing the reference {shown(ref)}")
        path = f"/v2/{repo}/{endpoint}/{ref}" if ref else f"/v2/{repo}/{endpoint}"
        return self.transport.url(path, query)

    async def _paged(
        self,
        first: URL,
        key: str,
        scopes: tuple[str, ...],
        valid: Callable[[str], bool],
        keep: int | None = None,
    ) -> Listed:
        """Every page of a listing, split by ``valid`` as each arrives, keeping at most
        ``keep`` refused names (a listing of refused names holds a count, not the names)."""
        url, path = first, first.path
        seen: set[str] = set()
        names: list[str] = []
        rejected: list[str] = []
        more = total = 0
        listed: set[str] = set()
        refused_pages: set[int] = set()  # refused parts of pages seen (for the loop check)
        while True:
            if str(url) in seen or len(seen) >= MAX_PAGES:
                raise RegistryError(f"{self.name}: {path} pagination loops or never ends")
            seen.add(str(url))
            resp = await self.transport.request("GET", url, scopes=scopes)
            data = resp.json()
            page = data.get(key) if isinstance(data, dict) else None
            if page is not None and not (
                isinstance(page, list) and all(isinstance(x, str) for x in page)
            ):
                raise RegistryError(f"{self.name}: {path} returned a malformed {key} list")
            total += len(page or [])
            if total > MAX_LISTING:
                raise RegistryError(f"{self.name}: {path} lists over {MAX_LISTING} entries")
            part = Listed.split(page or [], valid)
            known, known_refused = len(listed), len(refused_pages)
            listed.update(part.names)
            names.extend(part.names)
            room = len(part.rejected) if keep is None else max(keep - len(rejected), 0)
            rejected.extend(part.rejected[:room])
            more += len(part.rejected[room:])
            if part.rejected:
                refused_pages.add(hash(part.rejected))
            del data, page, part
            link = _LINK_NEXT.search(resp.headers.get("Link", ""))
            if link is None:
                return Listed(tuple(names), tuple(rejected), more_rejected=more)
            if len(listed) == known and len(refused_pages) == known_refused:
                # A next page after one that added nothing new: the URLs change but the
                # listing goes round in circles (or is empty forever). Stop, don't follow.
                raise RegistryError(f"{self.name}: {path} pagination repeats itself")
            url = next_page(resp.url, link.group(1), first, f"{self.name}: {path} pagination")

    # -- manifests ------------------------------------------------------------------------

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        """The descriptor a tag or digest resolves to, or None when it does not exist."""
        try:
            resp = await self.transport.request(
                "HEAD",
                self._url(repo, "manifests", ref),
                scopes=(repo_scope(repo, "pull"),),
                headers={"Accept": mediatypes.ACCEPT},
            )
        except NotFoundError:
            return None
        digest = resp.headers.get("Docker-Content-Digest", "")
        if not is_digest(digest):
            if not is_digest(ref):
                # No (usable) digest header: only the bytes can tell. Rare, and costs a GET.
                return (await self.manifest_get(repo, ref)).descriptor
            digest = ref
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        length = resp.headers.get("Content-Length", "")
        size = int(length) if length.isdigit() else 0  # only informative for a HEAD
        return Descriptor(media_type, digest, size)

    async def manifest_get(self, repo: str, ref: str) -> Manifest:
        """A manifest's exact bytes, verified against the digest asked for or announced."""
        await self.transport.pulls.wait()  # a GET is a pull: wait out a low-quota pause
        resp = await self.transport.request(
            "GET",
            self._url(repo, "manifests", ref),
            scopes=(repo_scope(repo, "pull"),),
            headers={"Accept": mediatypes.ACCEPT},
            max_body=mediatypes.MAX_MANIFEST_BYTES,
        )
        expected = ref if is_digest(ref) else resp.headers.get("Docker-Content-Digest", "")
        if expected:
            try:
                verify_bytes(resp.body, expected)
            except Exception as exc:
                raise ManifestError(f"{self.name}/{repo}:{ref}: {exc}") from exc
        try:
            return parse_manifest(resp.body, resp.headers.get("Content-Type", ""), digest=expected)
        except ManifestError as exc:
            raise ManifestError(f"{self.name}/{repo}:{ref}: {exc}") from exc

    async def manifest_put(self, repo: str, ref: str, manifest: Manifest) -> None:
        """Push the exact bytes; the registry must agree on the digest."""
        try:
            verify_bytes(manifest.raw, manifest.digest)
        except IntegrityError as exc:  # before sending: the registry would store the bytes
            raise IntegrityError(f"{self.name}/{repo}:{ref}: {exc}") from exc
        self._writable()
        try:
            resp = await self.transport.request(
                "PUT",
                self._url(repo, "manifests", ref),
                scopes=(repo_scope(repo, "pull", "push"),),
                headers={"Content-Type": manifest.media_type},
                data=manifest.raw,
                ok=(200, 201, 202),
            )
        except UnsupportedError as exc:
            raise self._refused_write(exc) from exc
        echoed = resp.headers.get("Docker-Content-Digest")
        if echoed and echoed != manifest.digest:
            raise ManifestError(
                f"{self.name}/{repo}:{ref}: registry stored {echoed}, expected {manifest.digest}"
            )

    async def manifest_delete(self, repo: str, digest: str) -> None:
        """Delete by digest: on distribution this removes every tag pointing at it."""
        if not is_digest(digest):
            raise ValueError(f"manifest_delete takes a digest, not {digest!r}; use tag_delete")
        try:
            await self.delete_manifest_ref(repo, digest)
        except UnsupportedError:
            self.deletes.refused = True
            raise
        self.deletes.by_digest = True

    async def tag_delete(self, repo: str, tag: str) -> None:
        """Remove exactly this tag (by tag, or through a placeholder: ``tagdelete``)."""
        await tagdelete.tag_delete(self, repo, tag)

    async def delete_manifest_ref(self, repo: str, ref: str) -> None:
        """One ``DELETE /v2/<repo>/manifests/<ref>`` (a tag or a digest), nothing more."""
        await self.transport.request(
            "DELETE",
            self._url(repo, "manifests", ref),
            scopes=(repo_scope(repo, "delete"),),
            ok=(200, 202),
        )

    async def referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        """Manifests whose ``subject`` is ``digest``, from the OCI referrers API.

        None when the registry has no such API (distribution 2.8 answers a plain 404): the
        caller then looks at the ``sha256-<hex>`` fallback tag instead.
        """
        try:
            resp = await self.transport.request(
                "GET",
                self._url(repo, "referrers", digest),
                scopes=(repo_scope(repo, "pull"),),
                headers={"Accept": mediatypes.OCI_INDEX},
                max_body=mediatypes.MAX_MANIFEST_BYTES,
            )
        except NotFoundError:
            return None
        try:
            return list(parse_manifest(resp.body, mediatypes.OCI_INDEX).children)
        except ManifestError as exc:
            raise ManifestError(f"{self.name}/{repo}: referrers of {digest}: {exc}") from exc

    # -- blobs ----------------------------------------------------------------------------

    async def blob_head(self, repo: str, digest: str) -> bool:
        try:
            await self.transport.request(
                "HEAD",
                self._url(repo, "blobs", digest),
                scopes=(repo_scope(repo, "pull"),),
                ok=(200, 307),  # 307: exists, served from object storage
            )
        except NotFoundError:
            return False
        return True

    async def blob_check(self, repo: str, desc: Descriptor) -> bool:
        """A HEAD in ``repo`` answering 200 with the blob's size (and digest, when stated).

        A redirect is followed (object storage answers with the size, not the digest)."""
        try:
            resp = await self.transport.request(
                "HEAD",
                self._url(repo, "blobs", desc.digest),
                scopes=(repo_scope(repo, "pull"),),
                ok=(200,),
            )
        except NotFoundError:
            return False
        stated = resp.headers.get("Docker-Content-Digest")
        return resp.headers.get("Content-Length") == str(desc.size) and stated in (
            None,
            desc.digest,
        )

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob's bytes, verifying size and digest; the last chunk is verified.

        A broken or short download resumes with ``Range: bytes=N-`` (up to the retry policy's
        attempts). A 206 continues where it stopped; a server that ignores Range answers 200
        with the whole blob, and the bytes already passed on are skipped. Either way the
        verifier sees exactly the bytes yielded, so what goes onward is checked end to end.
        """
        verifier = StreamVerifier(desc.digest, desc.size)
        url = self._url(repo, "blobs", desc.digest)
        policy, failures = self.transport.retry, 0
        while True:
            try:
                stream = self._blob_stream(repo, url, verifier.received)
                async with contextlib.aclosing(stream):
                    async for chunk in stream:
                        await verifier.feed(chunk)
                        yield chunk
                if verifier.received >= desc.size:
                    break
                raise TransportError(
                    f"{self.name}: GET {url.raw_path} ended after {verifier.received} of "
                    f"{desc.size} bytes",
                    registry=self.name,
                )
            except RegsyncError as exc:
                failures += 1
                if not policy.may_retry(exc, failures):
                    if isinstance(exc, UnreachableError) and not exc.down:
                        raise self.transport.gave_up(exc) from exc  # streams count too
                    raise
                self.transport.observer.request_retried(self.name, retry_reason(exc))
                await asyncio.sleep(policy.wait(exc, failures))  # raises past max_retry_after
        await verifier.finish()

    async def _blob_stream(self, repo: str, url: URL, offset: int) -> AsyncGenerator[bytes]:
        """One GET of a blob from ``offset`` on (the whole blob when the server ignores Range)."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        async with (
            self.transport.slot(),  # streams count against the registry's max_concurrency
            self.transport.open(
                "GET", url, scopes=(repo_scope(repo, "pull"),), headers=headers, ok=(200, 206)
            ) as resp,
        ):
            skip = offset
            if resp.status == 206:
                start = _RANGE_START.match(resp.headers.get("Content-Range", ""))
                if not offset or start is None or int(start.group(1)) != offset:
                    raise RegistryError(
                        f"{self.name}: GET {url.raw_path} answered a range we did not ask for",
                        registry=self.name,
                        status=206,
                    )
                skip = 0
            body = resp.content.iter_chunked(STREAM_CHUNK)
            async for chunk in self.transport.paced(body, f"GET {url.raw_path}"):
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                yield chunk[skip:] if skip else chunk
                skip = 0

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """Monolithic streamed upload: POST a session, PUT the body with the digest.

        A registry that refuses a streamed PUT (405/413/501) switches this client to chunked
        uploads; the error raised is retryable so the copy engine re-reads the source.
        """
        if self.chunked_uploads:
            return await self.blob_upload_chunked(repo, desc, chunks, CHUNK_SIZE)
        location = await self._upload_start(repo)
        try:
            await self._upload_put(repo, location, desc, chunks)
        except RegistryError as exc:
            await self._upload_cancel(repo, location)
            if exc.status not in (405, 413, 501):
                raise
            self.chunked_uploads = True
            raise TransportError(
                f"{self.name}: streamed upload refused ({exc.status}); switching to chunked",
                registry=self.name,
            ) from exc
        except BaseException:
            await self._upload_cancel(repo, location)
            raise

    async def blob_upload_chunked(
        self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes], chunk_size: int
    ) -> None:
        """Chunked upload (PATCH per chunk) for registries refusing a streamed PUT."""
        location = await self._upload_start(repo)
        scopes = (repo_scope(repo, "pull", "push"),)
        try:
            offset = 0
            async for block in _rechunk(chunks, chunk_size):
                resp = await self.transport.request(
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
                location = self._location(resp.url, resp.headers.get("Location", ""))
            await self._upload_put(repo, location, desc, None)
        except BaseException:
            await self._upload_cancel(repo, location)
            raise

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; False when the registry would not mount."""
        if not is_repository(from_repo, self.name):
            raise InvalidNameError(f"{self.name}: refusing the repository name {shown(from_repo)}")
        mount: dict[str, str | int] = {"mount": digest}
        mount["from"] = self.transport.repository(from_repo)  # as the server names it
        url = self._url(repo, "blobs/uploads/", query=mount)
        resp = await self.transport.request(
            "POST",
            url,
            scopes=(repo_scope(repo, "pull", "push"), repo_scope(from_repo, "pull")),
            ok=(201, 202),
        )
        if resp.status == 201:
            return True
        # 202: the registry opened an upload session instead; close it.
        await self._upload_cancel(repo, self._location(resp.url, resp.headers.get("Location", "")))
        return False

    async def _upload_start(self, repo: str) -> URL:
        self._writable()
        try:
            resp = await self.transport.request(
                "POST",
                self._url(repo, "blobs/uploads/"),
                scopes=(repo_scope(repo, "pull", "push"),),
                ok=(202,),
            )
        except UnsupportedError as exc:
            raise self._refused_write(exc) from exc
        return self._location(resp.url, resp.headers.get("Location", ""))

    def _writable(self) -> None:
        """Fail at once once this registry refused an upload (no request, no source pull)."""
        if self._read_only is not None:
            first = self._read_only
            raise ReadOnlyError(str(first), registry=self.name, status=first.status)

    def _refused_write(self, exc: UnsupportedError) -> UnsupportedError:
        """A 405 to starting an upload or pushing a manifest: the registry takes no writes
        (distribution's read-only maintenance mode answers every write so)."""
        if exc.status != 405:
            return exc
        self._read_only = ReadOnlyError(
            f"{self.name} refuses uploads (405): is it read-only or in maintenance mode?",
            registry=self.name,
            status=405,
        )
        return self._read_only

    async def _upload_put(
        self, repo: str, location: URL, desc: Descriptor, chunks: AsyncIterable[bytes] | None
    ) -> None:
        # distribution puts `_state` in the Location query: merge digest= into it.
        separator = "&" if location.raw_query_string else "?"
        url = URL(f"{location}{separator}digest={quote(desc.digest)}", encoded=True)
        headers = {"Content-Type": "application/octet-stream"}
        headers["Content-Length"] = str(desc.size if chunks is not None else 0)
        await self.transport.prepare((repo_scope(repo, "pull", "push"),))
        # The source's pace is checked as it is read; this bounds a destination that stops
        # reading the upload (no read timeout covers writing), on the destination's time only.
        deadline = self.transport.timeouts.for_body(desc.size if chunks is not None else 0)
        try:
            async with (
                asyncio.timeout(deadline) as limit,
                self.transport.open(
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
            raise too_slow(self.name, f"PUT {url.raw_path}", deadline or 0) from None

    async def _upload_cancel(self, repo: str, location: URL) -> None:
        # Best effort: the registry expires abandoned sessions itself.
        with contextlib.suppress(RegsyncError):
            await self.transport.request(
                "DELETE", location, scopes=(repo_scope(repo, "pull", "push"),), ok=(204, 200, 202)
            )

    def _location(self, request_url: URL, location: str) -> URL:
        if not location:
            raise RegistryError(f"{self.name}: upload response has no Location header")
        resolved = request_url.join(URL(location, encoded=True))
        if resolved.scheme not in ("http", "https") or not resolved.host:
            raise RegistryError(f"{self.name}: upload Location {location!r} is not usable")
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


def _below(names: list[str], client: RegistryClient) -> list[str]:
    """A catalog's names as regsync sees them: under a path prefix, only the repositories
    below it, with the prefix taken off (registries.HOST.path_prefix)."""
    prefix = client.transport.path_prefix
    if not prefix:
        return names
    return [n[len(prefix) + 1 :] for n in names if n.startswith(prefix + "/")]


def _short(exc: BaseException, registry: str) -> str:
    text = str(exc)
    return text[len(registry) + 2 :] if text.startswith(f"{registry}: ") else text
