"""Redirects, followed here hop by hop (not by aiohttp), each checked before it is sent.

- The ``Location`` loses any userinfo (aiohttp would send it as Basic credentials).
- ``Authorization`` goes to the registry's own origin only: a hop elsewhere gets none.
- Where a hop may lead (server-side request forgery): its host is resolved here, and the
  request is sent to that checked address (``Host`` and TLS server name stay the name), so a
  name that resolves differently at connect time (DNS rebinding) cannot pass. A registry on a
  public address may not redirect to a loopback, link-local, private or unique-local one; a
  registry on such an address may redirect within its own class. ``registries.HOST.redirects``
  allows more: ``allow`` (anywhere) or a list of hosts.
- More than ``MAX_HOPS`` hops, or a URL seen before, is "redirect loop at URL (N hops)".
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from regsync.errors import RegistryError
from regsync.oci.ref import shown

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_HOPS = 10
PUBLIC = "public"
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
# IPv6 ranges whose last 32 bits are an IPv4 address: NAT64, SIIT, IPv4-compatible.
_CARRIERS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96"))

Send = Callable[[str, URL, dict[str, str], Any, dict[str, Any]], Awaitable[aiohttp.ClientResponse]]


def address_class(ip: str) -> str:
    """loopback | link-local | private (RFC 1918, unique-local, shared, reserved) | public.
    An IPv6 address carrying an IPv4 one (mapped, NAT64, SIIT, 6to4) is classed by it."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        addr = _embedded(addr) or addr
    if addr.is_loopback or addr.is_unspecified or addr in _THIS_NETWORK:
        return "loopback"  # 0.0.0.0 and :: connect to this host
    if addr.is_link_local:
        return "link-local"
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local:
        return "private"
    return PUBLIC if addr.is_global else "private"


def _embedded(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, if it is made to carry one."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if any(addr in net for net in _CARRIERS) and addr != ipaddress.IPv6Address("::1"):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class RedirectPolicy:
    """Where one registry's redirects may lead (``registries.HOST.redirects``)."""

    allow_any: bool = False
    allow_hosts: frozenset[str] = frozenset()
    classify: Callable[[str], str] = field(default=address_class)
    resolver: aiohttp.abc.AbstractResolver | None = None  # None: the system's (in a thread)

    @classmethod
    def of(cls, setting: str | Collection[str] | None, **kwargs: Any) -> RedirectPolicy:
        if setting == "allow":
            return cls(allow_any=True, **kwargs)
        hosts = frozenset(h.lower() for h in (setting or ()) if isinstance(h, str))
        return cls(allow_hosts=hosts, **kwargs)

    async def address(self, host: str, port: int) -> str:
        """The first address ``host`` resolves to (an IP literal is itself)."""
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            return host
        except ValueError:
            pass
        resolver = self.resolver or aiohttp.ThreadedResolver()
        found = await resolver.resolve(host, port, socket.AF_UNSPEC)
        if not found:
            raise OSError(f"{host} does not resolve")
        return str(found[0]["host"])

    def listed(self, url: URL) -> bool:
        """Whether ``url``'s host is listed: as ``host`` (any port) or ``host:port``."""
        host = (url.host or "").lower()
        named = f"[{host}]" if ":" in host else host
        return bool({host, f"{named}:{url.port}"} & self.allow_hosts)

    def check(
        self, registry: str, origin: str, url: URL, ip: str, what: str = "redirect to"
    ) -> None:
        """Raise unless a hop to ``url`` at ``ip`` is allowed from a registry of class
        ``origin``."""
        where = self.classify(ip)
        if where in (PUBLIC, origin) or self.allow_any or self.listed(url):
            return
        raise RegistryError(
            f"{registry}: refusing the {what} {shown(url.host or '')} ({ip}, a {where}"
            f" address) from a registry on a {origin} address; registries.{registry}.redirects"
            " lists hosts it may lead to",
            registry=registry,
        )


@dataclass
class Hops:
    """One request's redirect chain."""

    registry: str
    method: str
    first: URL
    seen: list[str] = field(default_factory=list)

    def next(self, resp: aiohttp.ClientResponse, current: URL) -> URL:
        """The URL a redirect response leads to (userinfo dropped), or raise on a loop."""
        location = resp.headers.get("Location", "")
        try:
            target = current.join(URL(location)).with_user(None).with_fragment(None)
        except ValueError as exc:
            raise RegistryError(
                f"{self.registry}: unusable redirect Location {shown(location)}",
                registry=self.registry,
            ) from exc
        self.seen.append(str(current))
        if str(target) in self.seen or len(self.seen) >= MAX_HOPS:
            raise RegistryError(
                f"{self.registry}: {self.method} {self.first.raw_path}: redirect loop at"
                f" {shown(str(target.with_query(None)))} ({len(self.seen)} hops)",
                registry=self.registry,
            )
        if target.scheme not in ("http", "https") or not target.host:
            raise RegistryError(
                f"{self.registry}: refusing the redirect to {shown(str(target))}",
                registry=self.registry,
            )
        return target


def hop_method(status: int, method: str, data: Any) -> tuple[str, Any] | None:
    """(method, body) of the next hop, or None when it cannot be made (a streamed body)."""
    if status == 303 or (status in (301, 302) and method == "POST"):
        return ("HEAD" if method == "HEAD" else "GET"), None
    if data is not None and not isinstance(data, bytes):
        return None  # 307/308 must re-send the body: a stream cannot be
    return method, data


def pinned(url: URL, ip: str) -> tuple[URL, dict[str, str], dict[str, Any]]:
    """``url`` sent to the checked address ``ip``: the URL, the Host header, the request's
    TLS server name (certificates are still checked against the name)."""
    host = url.host or ""
    literal = f"[{ip}]" if ":" in ip else ip
    explicit = url.explicit_port
    header = f"{host}:{url.port}" if explicit else host
    extra: dict[str, Any] = {"server_hostname": host} if url.scheme == "https" else {}
    if literal == host:
        return url, {}, {}
    return url.with_host(ip), {"Host": header}, extra
