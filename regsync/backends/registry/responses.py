"""Registry responses: a small body read whole, and error statuses mapped to typed errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy
from yarl import URL

from regsync import boundedjson
from regsync.backends.registry.retry import Verdict, status_verdict
from regsync.errors import (
    AuthError,
    NotFoundError,
    RateLimitedError,
    RegistryError,
    UnsupportedError,
)
from regsync.oci.ref import printable, shown
from regsync.secrets import redact


@dataclass(frozen=True)
class Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL

    def json(self) -> Any:
        try:
            return boundedjson.loads(self.body)
        except ValueError as exc:
            raise RegistryError(
                f"invalid JSON from {self.url.host}: {exc}", status=self.status
            ) from exc


_HTTPS_ONLY = b"Client sent an HTTP request to an HTTPS server"


def error_from_response(
    registry: str,
    method: str,
    url: URL,
    status: int,
    headers: Any,
    body: bytes,
    foreign: bool = False,
) -> RegistryError:
    """Map an error status and the registry's error body to a typed error.

    ``foreign``: ``url`` is on another origin than the registry's (an upload Location or a
    redirect named it), so no credentials went there: the message names that origin.
    """
    codes: tuple[str, ...] = ()
    detail = ""
    try:
        errors = boundedjson.loads(body).get("errors") or []
        codes = tuple(str(e.get("code", "UNKNOWN")) for e in errors if isinstance(e, dict))
        detail = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        pass
    if status == 400 and url.scheme == "http" and _HTTPS_ONLY in body:
        # Go's TLS server answers a plain-HTTP request so (distribution, Harbor, Zot...).
        detail = (
            f"it speaks HTTPS, not plain HTTP: remove tls: http from registries.{registry} "
            "(or set tls: insecure for a certificate it cannot verify)"
        )
    where = f"{method} {url.raw_path}"
    if foreign:
        origin = f"{url.scheme}://{url.host}:{url.port}"
        where = f"{method} {origin}{url.raw_path} (another origin: no credentials sent there)"
    shown_codes = printable(",".join(codes))[:200]
    message = f"{registry}: {where} -> {status}" + (f" {shown_codes}" if codes else "")
    if detail:
        # Redacted before it is cut: a registry may echo our Authorization value back, and a
        # secret cut in two would no longer be recognised. Escaped: a newline or a terminal
        # escape in it would forge log lines.
        message += f": {printable(redact(detail))[:200]}"
    retry_after = _retry_after(headers.get("Retry-After")) if status == 429 else None
    kwargs = dict(registry=registry, status=status, codes=codes, retry_after=retry_after)
    if status in (401, 403) or {"UNAUTHORIZED", "DENIED"} & set(codes):
        return AuthError(message, **kwargs)  # type: ignore[arg-type]
    if status == 404:
        return NotFoundError(message, **kwargs)  # type: ignore[arg-type]
    if status_verdict(status, codes) is Verdict.UNSUPPORTED:
        return UnsupportedError(message, **kwargs)  # type: ignore[arg-type]
    if status == 429:
        return RateLimitedError(message, **kwargs)  # type: ignore[arg-type]
    return RegistryError(message, **kwargs)  # type: ignore[arg-type]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def next_page(current: URL, link: str, first: URL, what: str) -> URL:
    """The next page of a listing that started at ``first``, from a link relative to
    ``current`` (distribution sends it relative). Only its query may differ: another host or
    path is refused, never requested. ``what`` starts each message ("<registry>: <listing>")."""
    try:
        url = current.join(URL(link, encoded=True))
        elsewhere = url.origin() != first.origin()
    except ValueError:  # yarl: a bad port, an unclosed IPv6 bracket...
        raise RegistryError(f"{what} link {shown(link)} is not a URL") from None
    if elsewhere:
        raise RegistryError(f"{what} points to another host")
    if url.raw_path != first.raw_path:
        raise RegistryError(f"{what} points to another path")
    return url
