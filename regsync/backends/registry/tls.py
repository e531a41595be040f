"""TLS settings for one registry."""

from __future__ import annotations

import ssl
from typing import Literal

from regsync.errors import ConfigError

TlsMode = Literal["verify", "insecure", "http"]


def ssl_context(
    mode: TlsMode,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext | bool:
    """The `ssl=` argument for aiohttp: a verifying context, or False for `insecure`."""
    if mode == "insecure":
        return False
    if not ca_file and not client_cert:
        return True  # aiohttp's own verifying context (system trust): no second one to build
    context = ssl.create_default_context()  # the system trust store
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        if client_cert:
            context.load_cert_chain(client_cert, client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files ({ca_file or client_cert}): {exc}") from exc
    return context


def scheme(mode: TlsMode) -> str:
    return "http" if mode == "http" else "https"
