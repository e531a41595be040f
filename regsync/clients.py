"""Builds one RegistryClient per registry host for a run, from the config's settings."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp

from regsync.backends import Backend
from regsync.backends.fallback import FallbackBackend
from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.hub import DOCKER_HUB_API, HubCatalog
from regsync.backends.registry.observer import RequestObserver
from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.backends.registry.tls import scheme, ssl_context
from regsync.backends.registry.transport import Transport
from regsync.config import Config, RegistryConfig
from regsync.credentials import Login, resolve_login
from regsync.oci.ref import DOCKER_HUB, api_host

log = logging.getLogger(__name__)

LoginResolver = Callable[[str, RegistryConfig], Login | None]

_TLS_NOTE = {
    "insecure": "TLS certificate checks are OFF (tls: insecure, as configured)",
    "http": "plain HTTP, no TLS (tls: http, as configured)",
}


class ClientPool:
    """Lazily creates and caches the clients of one run; all share one aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: Config,
        observer: RequestObserver | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        logins: LoginResolver = resolve_login,
    ) -> None:
        self.session = session
        self.config = config
        self.observer = observer
        self.retry = retry
        self.timeouts = timeouts
        self._logins = logins
        self._clients: dict[str, RegistryClient] = {}
        self._sources: dict[str, Backend] = {}
        self._hubs: dict[str, HubCatalog | None] = {}
        self._known_logins: dict[str, Login | None] = {}

    def get(self, host: str) -> RegistryClient:
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = self._build(host, self.config.registry(host))
        return client

    def source(self, host: str) -> Backend:
        """What a rule reads from: the registry, or it and its `mirrors:` in order."""
        backend = self._sources.get(host)
        if backend is None:
            mirrors = self.config.registry(host).mirrors
            backend = self.get(host)
            if mirrors:
                backend = FallbackBackend([self.get(host), *(self.get(m) for m in mirrors)])
            self._sources[host] = backend
        return backend

    def hub(self, host: str) -> HubCatalog | None:
        """The Hub API that lists this registry's namespaces (docker.io), if it has one."""
        if host not in self._hubs:
            settings = self.config.registry(host)
            base = settings.hub_api or (DOCKER_HUB_API if host == DOCKER_HUB else None)
            catalog = None
            if base is not None:
                login = self._login(host, settings)
                transport = Transport(
                    self.session,
                    base.split("://", 1)[1],
                    base,
                    observer=self.observer,
                    retry=self.retry,
                    max_concurrency=2,
                )
                catalog = HubCatalog(
                    transport,
                    host,
                    login.username if login else None,
                    login.password if login else None,
                )
            self._hubs[host] = catalog
        return self._hubs[host]

    def _login(self, host: str, settings: RegistryConfig) -> Login | None:
        if host not in self._known_logins:  # a credential helper runs once per host
            self._known_logins[host] = self._logins(host, settings)
        return self._known_logins[host]

    def _build(self, host: str, settings: RegistryConfig) -> RegistryClient:
        if settings.tls != "verify":
            log.warning("registry %s: %s", host, _TLS_NOTE[settings.tls])
        login = self._login(host, settings)
        transport = Transport(
            self.session,
            host,
            f"{scheme(settings.tls)}://{api_host(host)}",
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
        )
        return RegistryClient(transport)


def _str(path: object) -> str | None:
    return str(path) if path is not None else None
