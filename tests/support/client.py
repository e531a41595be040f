"""A small synchronous distribution-API client for tests, built on ``urllib.request``.

It is deliberately independent of regsync's own client (the code under test): tests use it to
seed source registries and to inspect what regsync left in destinations. It handles plain HTTP,
HTTPS with a given CA file, Basic auth, and the Bearer token dance (so it also works against a
registry configured with ``auth.token``).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')


class RegistryHTTPError(Exception):
    """A request the test client made got an unexpected status."""

    def __init__(self, method: str, url: str, response: Response) -> None:
        self.response = response
        body = response.body[:500].decode("utf-8", "replace")
        super().__init__(f"{method} {url} -> {response.status}: {body}")


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Return 3xx responses as they are: the registry's Location headers are data, not hops."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RegistryClient:
    """Talks to one registry at ``url`` (``http(s)://host:port``)."""

    def __init__(
        self,
        url: str,
        *,
        credentials: tuple[str, str] | None = None,
        ca_file: Path | str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials
        self.ca_file = ca_file
        self.timeout = timeout
        self._tokens: dict[str, str] = {}

    # -- transport -------------------------------------------------------------------------

    def _opener(self) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.ProxyHandler({}),  # loopback only: never go through an env proxy
            _NoRedirect(),
        ]
        if self.ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        return urllib.request.build_opener(*handlers)

    def _send(
        self, method: str, url: str, headers: Mapping[str, str], data: bytes | None
    ) -> Response:
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
        try:
            with self._opener().open(req, timeout=self.timeout) as resp:
                return Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return Response(err.code, err.headers, err.read())

    def _basic(self) -> str:
        assert self.credentials is not None
        raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        scope: str | None = None,
    ) -> Response:
        """Send a request to ``path`` (relative to the registry, or absolute) with auth.

        ``scope`` is the token scope to ask for if the registry answers with a Bearer
        challenge; it defaults to push+pull on the repository named in the path.
        """
        url = urllib.parse.urljoin(self.url + "/", path)
        hdrs = dict(headers or {})
        key = scope or _scope_for(url)
        if key in self._tokens:
            hdrs["Authorization"] = "Bearer " + self._tokens[key]
        elif self.credentials is not None:
            hdrs["Authorization"] = self._basic()
        resp = self._send(method, url, hdrs, data)
        challenge = resp.header("WWW-Authenticate") or ""
        if resp.status == 401 and challenge.lower().startswith("bearer "):
            self._tokens[key] = self._fetch_token(challenge, key)
            hdrs["Authorization"] = "Bearer " + self._tokens[key]
            resp = self._send(method, url, hdrs, data)
        return resp

    def _fetch_token(self, challenge: str, scope: str) -> str:
        params = {m[0].lower(): m[1] or m[2] for m in _CHALLENGE_PARAM.findall(challenge[7:])}
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        url = params["realm"] + "?" + urllib.parse.urlencode(query)
        hdrs = {"Authorization": self._basic()} if self.credentials else {}
        resp = self._send("GET", url, hdrs, None)
        if resp.status != 200:
            raise RegistryHTTPError("GET", url, resp)
        body = resp.json()
        return str(body.get("token") or body["access_token"])

    def expect(self, method: str, path: str, *statuses: int, **kwargs: Any) -> Response:
        """``request`` that raises RegistryHTTPError unless the status is one of ``statuses``."""
        resp = self.request(method, path, **kwargs)
        if resp.status not in statuses:
            raise RegistryHTTPError(method, path, resp)
        return resp

    # -- read helpers ----------------------------------------------------------------------

    def root(self) -> Response:
        """``GET /v2/`` anonymously, as is (its ``WWW-Authenticate`` shows the auth scheme)."""
        return self._send("GET", self.url + "/v2/", {}, None)

    def ping(self) -> int:
        """Status of an anonymous ``GET /v2/`` (200, or 401 on auth registries)."""
        return self.root().status

    def catalog(self) -> list[str]:
        """All repository names, following ``Link`` pages, sorted."""
        return self._paged("/v2/_catalog?n=100", "repositories", "registry:catalog:*")

    def tags(self, repo: str) -> list[str]:
        """Tags of ``repo``, sorted (dist returns them unordered); empty if the repo is unknown."""
        return self._paged(f"/v2/{repo}/tags/list?n=100", "tags", f"repository:{repo}:pull")

    def _paged(self, path: str, field: str, scope: str) -> list[str]:
        out: list[str] = []
        url: str | None = path
        while url:
            resp = self.request("GET", url, scope=scope)
            if resp.status == 404:
                return out
            if resp.status != 200:
                raise RegistryHTTPError("GET", url, resp)
            out.extend(resp.json().get(field) or [])
            url = _next_link(resp.header("Link"), urllib.parse.urljoin(self.url, url))
        return sorted(out)

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        """``Docker-Content-Digest`` of a HEAD on the manifest, or None if it does not exist."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers=_ACCEPT)
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise RegistryHTTPError("HEAD", f"{repo}:{ref}", resp)
        return resp.header("Docker-Content-Digest")

    def manifest(self, repo: str, ref: str) -> tuple[str, bytes]:
        """``(media type, raw bytes)`` of a manifest; raises if it does not exist."""
        resp = self.expect("GET", f"/v2/{repo}/manifests/{ref}", 200, headers=_ACCEPT)
        return resp.header("Content-Type") or "", resp.body

    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if resp.status in (200, 307):
            return True
        if resp.status == 404:
            return False
        raise RegistryHTTPError("HEAD", f"{repo}@{digest}", resp)

    def blob(self, repo: str, digest: str) -> bytes:
        return self.expect("GET", f"/v2/{repo}/blobs/{digest}", 200).body

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (removes every tag pointing at it)."""
        self.expect("DELETE", f"/v2/{repo}/manifests/{digest}", 202)


_ACCEPT = {"Accept": MANIFEST_ACCEPT}


def _scope_for(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    m = re.match(r"/v2/(.+?)/(?:manifests|blobs|tags)/", path)
    return f"repository:{m.group(1)}:pull,push" if m else ""


def _next_link(link: str | None, base: str) -> str | None:
    """The ``rel="next"`` target of a Link header, resolved against ``base`` (dist: relative)."""
    if not link:
        return None
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return urllib.parse.urljoin(base, m.group(1)) if m else None
