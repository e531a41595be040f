"""Opens the backends of one run: every source and destination spec goes through here.

One ``BackendPool`` per run, over one aiohttp session. It caches one backend per store, so
rules sharing a registry share its client (connection limits, rate-limit pacing, tokens) and
rules writing to one layout directory share its index commits:

- a registry (``Kind.REGISTRY``): a ``RegistryClient`` per host; read as a source, it comes
  with its ``mirrors:`` behind a ``FallbackBackend`` (mirrors are read-only);
- an OCI layout (``Kind.LAYOUT``): one ``Layout`` per directory (by absolute path); read as a
  source, leftovers of a killed export there are an error, not an empty layout;
- a tar bundle (``Kind.TARBALL``): one ``Tarball`` per file (by absolute path), with its
  rule's ``BundleSeries`` when the rule writes delta bundles. ``finish`` packs what the run
  wrote into them; ``discard`` drops their working directories.

It also hands out each source's repository lister: the registry's catalog, the Hub API for a
Docker Hub namespace (Docker Hub has no catalog), or the layout's index. A new kind of store is
one backend module plus one branch in ``reader``/``writer``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, assert_never

import aiohttp

from regsync.backends.base import Backend
from regsync.backends.fallback import FallbackBackend
from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.hub import HUB_API_URL, HubCatalog
from regsync.backends.registry.observer import RequestObserver
from regsync.backends.registry.redirects import RedirectPolicy
from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.backends.registry.tls import scheme, ssl_context
from regsync.backends.registry.transport import Transport
from regsync.config import Config, RegistryConfig
from regsync.credentials import Login, resolve_login
from regsync.errors import LayoutError, RegsyncError
from regsync.logs import warn_once
from regsync.oci.ref import DOCKER_HUB, DestinationSpec, Kind, Listed, SourceSpec, api_host

# The layout and tar backends load with the first spec naming one: a registry-to-registry run
# (most of them) imports none of their modules (~30 ms of start-up CPU).
if TYPE_CHECKING:
    from regsync.backends.layout import Layout
    from regsync.backends.tarball import Tarball

log = logging.getLogger(__name__)

LoginResolver = Callable[[str, RegistryConfig], Login | None]

_TLS_NOTE = {
    "insecure": "TLS certificate checks are OFF (tls: insecure, as configured)",
    "http": "plain HTTP, no TLS (tls: http, as configured)",
}


class RepositoryLister(Protocol):
    """Lists the repositories a source holds under a glob's literal prefix."""

    async def repositories(self, prefix: str) -> Listed:
        """Repository names (at least those under ``prefix``; the caller filters), split by
        the grammar. ``prefix`` is the literal start of the rule's glob ("" for none)."""
        ...


@dataclass(frozen=True)
class BackendLister:
    """A registry's catalog or a layout's index: everything the backend holds."""

    backend: Backend

    async def repositories(self, prefix: str) -> Listed:
        return await self.backend.repositories()


@dataclass(frozen=True)
class HubLister:
    """Docker Hub's API: one namespace, the first segment of the prefix."""

    catalog: HubCatalog

    async def repositories(self, prefix: str) -> Listed:
        return await self.catalog.repositories(prefix.split("/")[0])


class BackendPool:
    """Lazily opens and caches the backends of one run; all share one aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: Config,
        observer: RequestObserver | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        logins: LoginResolver = resolve_login,
        state_dir: Path | None = None,
    ) -> None:
        self.session = session
        self.state_dir = state_dir  # where delta bundles' series are recorded
        self.config = config
        self.observer = observer
        self.retry = retry
        self.timeouts = timeouts
        self._logins = logins
        self._clients: dict[str, RegistryClient] = {}
        self._sources: dict[str, Backend] = {}
        self._layouts: dict[str, Layout] = {}
        self._tarballs: dict[str, Tarball] = {}
        self._hubs: dict[str, HubCatalog | None] = {}
        self._known_logins: dict[str, Login | None] = {}

    def reader(self, spec: SourceSpec) -> Backend:
        """What a rule reads from: a layout, or a registry followed by its `mirrors:`."""
        match spec.kind:
            case Kind.REGISTRY:
                return self._source(spec.registry)
            case Kind.LAYOUT:
                layout = self._layout(spec.directory)
                layout.is_source = True  # a killed export's leftovers are an error here
                return layout
            case Kind.TARBALL:
                tarball = self._tarball(spec.directory, None)
                tarball.is_source = True  # a missing file is an error here
                return tarball
            case _:
                assert_never(spec.kind)

    def writer(self, spec: DestinationSpec, delta_rule: str | None = None) -> Backend:
        """What a rule writes to: the registry itself, the layout directory, or the tar file
        (``delta_rule``: the rule whose delta bundles it is)."""
        match spec.kind:
            case Kind.REGISTRY:
                return self.registry(spec.registry)
            case Kind.LAYOUT:
                return self._layout(spec.directory)
            case Kind.TARBALL:
                return self._tarball(spec.directory, delta_rule)
            case _:
                assert_never(spec.kind)

    async def finish(self) -> dict[str, str]:
        """Pack every tar bundle this run wrote to; ``{backend name: error}`` for those that
        could not be written (each is then as it was before the run)."""
        failed = {}
        for tarball in self._tarballs.values():
            try:
                await tarball.finish()
            except RegsyncError as exc:
                failed[tarball.name] = str(exc)
        return failed

    def discard(self) -> None:
        """Drop the tar bundles' working directories (call last)."""
        for tarball in self._tarballs.values():
            tarball.discard()

    def lister(self, spec: SourceSpec) -> RepositoryLister:
        """How a glob source's repositories are listed: Hub API, catalog or layout index."""
        hub = self.hub(spec.registry) if spec.kind is Kind.REGISTRY else None
        return HubLister(hub) if hub is not None else BackendLister(self.reader(spec))

    def registry(self, host: str) -> RegistryClient:
        """The one client of ``host`` in this run (writes, and reads without mirrors)."""
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = self._build(host, self.config.registry(host))
        return client

    def hub(self, host: str) -> HubCatalog | None:
        """The Hub API that lists this registry's namespaces (docker.io), if it has one."""
        if host not in self._hubs:
            settings = self.config.registry(host)
            hub = self.config.served_host(host) == DOCKER_HUB
            base = settings.hub_api or (HUB_API_URL if hub else None)
            catalog = None
            if base is not None:
                login = self._login(host, settings)
                transport = Transport(
                    self.session,
                    base.split("://", 1)[1],
                    base,
                    observer=self.observer,
                    retry=self.retry,
                    timeouts=self.timeouts,  # deadlines and minimum rates, as for registries
                    max_concurrency=2,
                    user_agent=settings.user_agent,
                )
                catalog = HubCatalog(
                    transport,
                    host,
                    login.username if login else None,
                    login.password if login else None,
                )
            self._hubs[host] = catalog
        return self._hubs[host]

    def _source(self, host: str) -> Backend:
        backend = self._sources.get(host)
        if backend is None:
            mirrors = self.config.registry(host).mirrors
            backend = self.registry(host)
            if mirrors:
                backend = FallbackBackend(
                    [self.registry(host), *(self.registry(m) for m in mirrors)]
                )
            self._sources[host] = backend
        return backend

    def _layout(self, directory: str) -> Layout:
        key = os.path.abspath(directory)  # one Layout per directory, however it is spelt
        layout = self._layouts.get(key)
        if layout is None:
            from regsync.backends.layout import Layout

            layout = self._layouts[key] = Layout(directory)
        return layout

    def _tarball(self, path: str, delta_rule: str | None) -> Tarball:
        key = os.path.abspath(path)
        tarball = self._tarballs.get(key)
        if tarball is None:
            from regsync.backends.bundle import BundleSeries
            from regsync.backends.tarball import Tarball

            series = None  # without a state dir (verify): the bundle is read as it is
            if delta_rule is not None and self.state_dir is not None:
                series = BundleSeries(self.state_dir, delta_rule).load()
            tarball = self._tarballs[key] = Tarball(path, series)
        elif delta_rule is not None and (
            tarball.series is None or tarball.series.rule != delta_rule
        ):
            raise LayoutError(f"tar:{path}: written by two rules; a delta bundle has one rule")
        return tarball

    def _login(self, host: str, settings: RegistryConfig) -> Login | None:
        if host not in self._known_logins:  # a credential helper runs once per host
            self._known_logins[host] = self._logins(host, settings)
        return self._known_logins[host]

    def _build(self, host: str, settings: RegistryConfig) -> RegistryClient:
        if settings.tls != "verify":
            warn_once(log, "registry %s: %s", host, _TLS_NOTE[settings.tls])
        login = self._login(host, settings)
        transport = Transport(
            self.session,
            host,
            f"{scheme(settings.tls)}://{api_host(settings.hostname or host)}",
            username=login.username if login else None,
            password=login.password if login else None,
            ssl_context=ssl_context(
                settings.tls,
                _str(settings.ca_file),
                _str(settings.client_cert),
                _str(settings.client_key),
            ),
            observer=self.observer,
            retry=self.retry,
            timeouts=self.timeouts,
            max_concurrency=settings.max_concurrency,
            pull_floor=settings.rate_limit.min_remaining if settings.rate_limit else None,
            user_agent=settings.user_agent,
            requests_per_second=settings.requests_per_second,
            path_prefix=settings.path_prefix or "",
            redirects=RedirectPolicy.of(settings.redirects),
        )
        return RegistryClient(transport)


def _str(path: object) -> str | None:
    return str(path) if path is not None else None
