"""Listing a Docker Hub namespace through the Hub API (Docker Hub has no `_catalog`).

``GET <api>/v2/namespaces/<ns>/repositories?page_size=100`` answers
``{"count", "next", "results": [{"name", "namespace", ...}]}``; ``next`` is the absolute URL of
the following page, or null. ``<api>/v2/namespaces/<ns>/repositories/<name>/tags?page_size=100``
pages the same way through ``{name, digest, media_type, images, ...}`` per tag: ``digest`` is
the tag's manifest digest (for a multi-arch tag, the index's), so one page stands for 100
manifest HEADs (``tag_digests``). With credentials, ``POST <api>/v2/users/login`` first trades them
(a password or a personal access token) for a JWT so private repositories are listed too.
"""

from __future__ import annotations

import json

from regsync.backends.registry.client import MAX_LISTING
from regsync.backends.registry.responses import next_page
from regsync.backends.registry.transport import Transport
from regsync.errors import AuthError, NotFoundError, RegistryError
from regsync.oci import mediatypes
from regsync.oci.digest import is_digest
from regsync.oci.manifest import Descriptor
from regsync.oci.ref import Listed, is_repository, is_tag
from regsync.secrets import remember_login, remember_token

HUB_API_URL = "https://hub.docker.com"  # Docker Hub's web API (namespaces, login), not its registry
PAGE_SIZE = 100
MAX_PAGES = 1000


class HubCatalog:
    """Lists the repositories of Docker Hub namespaces for one registry (docker.io)."""

    def __init__(
        self,
        transport: Transport,
        registry: str,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.transport = transport  # to the Hub API host, not the registry
        self.registry = registry
        self._login = (username, password) if username and password else None
        if self._login is not None:
            remember_login(*self._login)
        self._jwt: str | None = None

    async def repositories(self, namespace: str) -> Listed:
        """Every repository of ``namespace`` as ``<ns>/<name>``, checked by name."""
        if not is_repository(namespace) or "/" in namespace:
            raise RegistryError(
                f"{self.registry}: Docker Hub lists one namespace at a time: start the source "
                f"with it, e.g. {self.registry}/diamol/*",
                registry=self.registry,
            )
        headers = await self._headers()
        first = self.transport.url(
            f"/v2/namespaces/{namespace}/repositories", {"page_size": PAGE_SIZE}
        )
        url = first
        names: list[str] = []
        for _ in range(MAX_PAGES):
            try:
                resp = await self.transport.request("GET", url, scopes=(), headers=headers)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"{self.registry}: namespace {namespace!r} not found on Docker Hub",
                    registry=self.registry,
                    status=404,
                ) from exc
            data = resp.json()
            results = data.get("results") if isinstance(data, dict) else None
            if not isinstance(results, list):
                raise RegistryError(f"{self.registry}: Hub API sent no results list")
            for item in results:
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str) and name:
                    names.append(f"{namespace}/{name}")
            if len(names) > MAX_LISTING:
                raise RegistryError(f"{self.registry}: Hub API lists over {MAX_LISTING} entries")
            following = data.get("next")
            if not following:
                return Listed.repositories(sorted(set(names)), self.registry)
            url = next_page(resp.url, str(following), first, f"{self.registry}: Hub API paging")
        raise RegistryError(f"{self.registry}: Hub API paging never ends ({namespace})")

    async def tag_digests(self, repo: str) -> dict[str, Descriptor]:
        """Tag -> descriptor (digest, media type if the API gave a known one, size 0) for the
        tags of ``<ns>/<name>`` whose entry has a valid digest. Entries without one (old
        schema-1 pushes), with a bad name or digest, are left out: the caller HEADs those.
        Raises RegistryError when the API fails (the caller then HEADs every tag)."""
        ns, _, name = repo.partition("/")
        if not is_repository(repo) or not name or "/" in name:
            raise RegistryError(f"{self.registry}: {repo} is not a Docker Hub repository name")
        headers = await self._headers()
        first = self.transport.url(
            f"/v2/namespaces/{ns}/repositories/{name}/tags", {"page_size": PAGE_SIZE}
        )
        url, found = first, dict[str, Descriptor]()
        for _ in range(MAX_PAGES):
            resp = await self.transport.request("GET", url, scopes=(), headers=headers)
            data = resp.json()
            results = data.get("results") if isinstance(data, dict) else None
            if not isinstance(results, list):
                raise RegistryError(f"{self.registry}: Hub API sent no results list")
            found.update(t for t in map(_tag_entry, results) if t is not None)
            if len(found) > MAX_LISTING:
                raise RegistryError(f"{self.registry}: Hub API lists over {MAX_LISTING} tags")
            following = data.get("next")
            if not following:
                return found
            url = next_page(resp.url, str(following), first, f"{self.registry}: Hub API paging")
        raise RegistryError(f"{self.registry}: Hub API tag paging never ends ({repo})")

    async def _headers(self) -> dict[str, str]:
        if self._login is None:
            return {}
        if self._jwt is None:
            username, password = self._login
            body = json.dumps({"username": username, "password": password}).encode()
            try:
                resp = await self.transport.request(
                    "POST",
                    self.transport.url("/v2/users/login"),
                    scopes=(),
                    headers={"Content-Type": "application/json"},
                    data=body,
                )
            except AuthError as exc:
                raise AuthError(
                    f"{self.registry}: Docker Hub API refused the configured credentials",
                    registry=self.registry,
                    status=exc.status,
                ) from None  # the request body held the password
            token = resp.json().get("token") if isinstance(resp.json(), dict) else None
            if not isinstance(token, str) or not token:
                raise AuthError(f"{self.registry}: Docker Hub API login sent no token")
            remember_token(token)
            self._jwt = token
        return {"Authorization": f"Bearer {self._jwt}"}


def _tag_entry(item: object) -> tuple[str, Descriptor] | None:
    """One tag entry of the Hub tags API, if its name and digest are usable."""
    if not isinstance(item, dict):
        return None
    name, digest, media_type = item.get("name"), item.get("digest"), item.get("media_type")
    if not (isinstance(name, str) and is_tag(name) and isinstance(digest, str)):
        return None
    if not is_digest(digest):
        return None
    known = media_type if isinstance(media_type, str) and media_type in mediatypes.MANIFESTS else ""
    return name, Descriptor(known, digest, 0)
