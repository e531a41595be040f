"""Builds one RegistryClient per registry host for a run, from the config's settings."""

from __future__ import annotations

import logging

import aiohttp

from regsync.config import Config, RegistryConfig
from regsync.oci.ref import api_host
from regsync.registry.client import RegistryClient
from regsync.registry.tls import scheme, ssl_context
from regsync.registry.transport import RequestObserver, RetryPolicy, Timeouts, Transport

log = logging.getLogger(__name__)


class ClientPool:
    """Lazily creates and caches the clients of one run; all share one aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: Config,
        observer: RequestObserver | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.session = session
        self.config = config
        self.observer = observer
        self.retry = retry
        self.timeouts = timeouts
        self._clients: dict[str, RegistryClient] = {}

    def get(self, host: str) -> RegistryClient:
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = self._build(host, self.config.registry(host))
        return client

    def _build(self, host: str, settings: RegistryConfig) -> RegistryClient:
        if settings.tls != "verify":
            log.warning("registry %s: TLS mode %s (configured)", host, settings.tls)
        creds = settings.credentials
        transport = Transport(
            self.session,
            host,
            f"{scheme(settings.tls)}://{api_host(host)}",
            username=creds.username if creds else None,
            password=creds.secret() if creds else None,
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
        )
        return RegistryClient(transport)


def _str(path: object) -> str | None:
    return str(path) if path is not None else None
