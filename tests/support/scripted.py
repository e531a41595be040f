"""A scripted registry: an in-memory distribution API on 127.0.0.1 whose answers tests override.

    async with ScriptedRegistry() as reg:          # in the test's own event loop
        reg.add("good/app", "1", Image.docker([...]))
        reg.override("GET", r"/v2/bad/app/tags/list", lambda req, m: web.Response(text="{"))
        ... regsync talks to reg.host ...

It implements just enough of the API for regsync to copy from and into it (catalog, tags,
manifests, blobs, monolithic and chunked uploads, mounts answered with an upload session,
deletes by digest; a delete by tag answers 400 DIGEST_INVALID like distribution 2.8 unless
``tag_deletes`` is set, as on registries implementing the OCI tag delete).
Misbehaving stores: ``deletes_keep_tags`` answers every manifest DELETE 202 and removes
nothing (the tag, or the placeholder a tag was moved to, stays where it was), as an
eventually-consistent or broken store can; a client must HEAD to know a tag is gone.
Overrides (method ``*`` matches any) are tried first, in the order added; a handler returning
None falls through.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from .images import Manifest

Handler = Callable[[web.Request, re.Match[str]], Awaitable[web.StreamResponse | None]]

_MANIFEST = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
_BLOB = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[a-f0-9]{64})$")
_UPLOADS = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/(?P<id>[^/]*)$")
_TAGS = re.compile(r"^/v2/(?P<repo>.+)/tags/list$")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error(status: int, code: str, message: str = "") -> web.Response:
    body = {"errors": [{"code": code, "message": message or code.lower()}]}
    return web.json_response(body, status=status)


class ScriptedRegistry:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # digest -> (media type, raw)
        self.tags: dict[str, dict[str, str]] = {}  # repo -> tag -> digest
        self.overrides: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[tuple[str, str]] = []
        self._uploads: dict[str, bytearray] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.tag_deletes = False  # True: DELETE by tag removes that tag (OCI distribution 1.1)
        self.deletes_keep_tags = False  # True: a manifest DELETE answers 202, removes nothing

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- content ---------------------------------------------------------------------------

    def add(self, repo: str, tag: str, manifest: Manifest) -> str:
        for m in manifest.walk():
            self.manifests[m.digest] = (m.media_type, m.raw)
            for blob in m.blobs:
                self.blobs[blob.digest] = blob.data
        self.tags.setdefault(repo, {})[tag] = manifest.digest
        return manifest.digest

    def put_raw(self, repo: str, tag: str, media_type: str, raw: bytes) -> str:
        """A manifest from raw bytes (possibly not valid at all); returns sha256 of the bytes."""
        digest = _digest(raw)
        self.manifests[digest] = (media_type, raw)
        self.tags.setdefault(repo, {})[tag] = digest
        return digest

    def override(self, method: str, path: str, handler: Handler) -> None:
        self.overrides.append((method, re.compile(path), handler))

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(path, p))

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> ScriptedRegistry:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the API ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        for method, pattern, handler in self.overrides:
            match = pattern.search(request.path)
            if method in ("*", request.method) and match is not None:
                response = await handler(request, match)
                if response is not None:
                    return response
        return await self._default(request)

    async def _default(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/v2/":
            return web.json_response({})
        if path == "/v2/_catalog":
            return web.json_response({"repositories": sorted(self.tags)})
        if m := _TAGS.match(path):
            if m["repo"] not in self.tags:
                return error(404, "NAME_UNKNOWN")
            return web.json_response({"name": m["repo"], "tags": sorted(self.tags[m["repo"]])})
        if m := _MANIFEST.match(path):
            return await self._manifest(request, m["repo"], m["ref"])
        if m := _BLOB.match(path):
            data = self.blobs.get(m["digest"])
            if data is None:
                return error(404, "BLOB_UNKNOWN")
            headers = {"Docker-Content-Digest": m["digest"]}
            if method == "HEAD":
                return web.Response(headers={**headers, "Content-Length": str(len(data))})
            return web.Response(body=data, headers=headers)
        if m := _UPLOADS.match(path):
            return await self._upload(request, m["repo"], m["id"])
        return error(404, "UNSUPPORTED", f"{method} {path}")

    async def _manifest(self, request: web.Request, repo: str, ref: str) -> web.StreamResponse:
        if request.method == "DELETE":
            return self._delete(repo, ref)
        if request.method == "PUT":
            raw = await request.read()
            digest = _digest(raw)
            self.manifests[digest] = (request.content_type, raw)
            if not ref.startswith("sha256:"):
                self.tags.setdefault(repo, {})[ref] = digest
            return web.Response(status=201, headers={"Docker-Content-Digest": digest})
        digest = ref if ref.startswith("sha256:") else self.tags.get(repo, {}).get(ref, "")
        if digest not in self.manifests:
            return error(404, "MANIFEST_UNKNOWN")
        media_type, raw = self.manifests[digest]
        headers = {"Docker-Content-Digest": digest, "Content-Type": media_type}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(raw))})
        return web.Response(body=raw, headers=headers)

    def _delete(self, repo: str, ref: str) -> web.StreamResponse:
        tags = self.tags.get(repo, {})
        if not ref.startswith("sha256:"):
            if not self.tag_deletes:
                return error(400, "DIGEST_INVALID", "delete by tag is not supported")
            if ref not in tags:
                return error(404, "MANIFEST_UNKNOWN")
            if not self.deletes_keep_tags:
                del tags[ref]
            return web.Response(status=202)
        if ref not in self.manifests:
            return error(404, "MANIFEST_UNKNOWN")
        if self.deletes_keep_tags:
            return web.Response(status=202)
        for tag in [t for t, d in tags.items() if d == ref]:
            del tags[tag]  # like distribution: every tag on the digest goes with it
        return web.Response(status=202)

    async def _upload(self, request: web.Request, repo: str, upload: str) -> web.StreamResponse:
        if request.method == "POST":
            upload = uuid.uuid4().hex
            self._uploads[upload] = bytearray()
            location = f"/v2/{repo}/blobs/uploads/{upload}"
            return web.Response(status=202, headers={"Location": location})
        if upload not in self._uploads:
            return error(404, "BLOB_UPLOAD_UNKNOWN")
        if request.method == "DELETE":
            del self._uploads[upload]
            return web.Response(status=204)
        self._uploads[upload] += await request.read()
        if request.method == "PATCH":
            location = f"/v2/{repo}/blobs/uploads/{upload}"
            return web.Response(status=202, headers={"Location": location})
        data = bytes(self._uploads.pop(upload))
        digest = request.query.get("digest", "")
        if _digest(data) != digest:
            return error(400, "DIGEST_INVALID")
        self.blobs[digest] = data
        return web.Response(status=201, headers={"Docker-Content-Digest": digest})


def json_body(data: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **headers},
    )
