"""The distribution API for one registry: listing, manifests and blobs.

Methods read noun-verb (``manifest_head``, ``blob_upload``) so related calls sort together.
Listings, manifests and blob HEADs are here; a blob's streamed read is ``blobread``'s, its
uploads and mounts ``uploads``', each a function of this client.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable

from yarl import URL

from regsync.backends.registry import blobread, tagdelete, uploads
from regsync.backends.registry.auth import CATALOG_SCOPE, repo_scope
from regsync.backends.registry.responses import next_page
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
    UnsupportedError,
)
from regsync.oci import mediatypes
from regsync.oci.digest import is_digest, verify_bytes
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from regsync.oci.ref import QUOTED, Listed, is_reference, is_repository, is_tag, shown

_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
PAGE_SIZE = 1000  # distribution caps n at 1000
MAX_PAGES = 10_000  # a registry that pages forever is cut off, not followed
MAX_LISTING = 1_000_000
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
        url = self.api_url(repo, "tags/list", query={"n": self.page_size})
        try:
            scopes = (repo_scope(repo, "pull"),)
            return await self._paged(url, "tags", scopes, is_tag, keep=QUOTED)
        except NotFoundError:
            return Listed((), missing=True)

    def api_url(
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
                self.api_url(repo, "manifests", ref),
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
            self.api_url(repo, "manifests", ref),
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
        self.writable()
        try:
            resp = await self.transport.request(
                "PUT",
                self.api_url(repo, "manifests", ref),
                scopes=(repo_scope(repo, "pull", "push"),),
                headers={"Content-Type": manifest.media_type},
                data=manifest.raw,
                ok=(200, 201, 202),
            )
        except UnsupportedError as exc:
            raise self.refused_write(exc) from exc
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
            self.api_url(repo, "manifests", ref),
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
                self.api_url(repo, "referrers", digest),
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
                self.api_url(repo, "blobs", digest),
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
                self.api_url(repo, "blobs", desc.digest),
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

    def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob's bytes, verified, resumed with Range (``blobread``)."""
        return blobread.blob_read(self, repo, desc)

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """A streamed upload (``uploads``: monolithic, chunked once the registry refuses it)."""
        await uploads.blob_upload(self, repo, desc, chunks)

    async def blob_upload_chunked(
        self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes], chunk_size: int
    ) -> None:
        """Chunked upload (PATCH per chunk) for registries refusing a streamed PUT."""
        await uploads.blob_upload_chunked(self, repo, desc, chunks, chunk_size)

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; False when the registry would not mount."""
        return await uploads.blob_mount(self, repo, digest, from_repo)

    def writable(self) -> None:
        """Fail at once once this registry refused an upload (no request, no source pull)."""
        if self._read_only is not None:
            first = self._read_only
            raise ReadOnlyError(str(first), registry=self.name, status=first.status)

    def refused_write(self, exc: UnsupportedError) -> UnsupportedError:
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
