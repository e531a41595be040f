"""regsync's exception tree. Nothing from aiohttp leaks above ``regsync.backends.registry``.

RegsyncError
 ├── ConfigError            bad sync.yaml or command line (exit 2)
 ├── RegistryError          a registry answered with an error status
 │    ├── AuthError         401/403, bad credentials, scope not granted
 │    │    └── CredentialsError  the registry refused the credentials (every request fails)
 │    ├── NotFoundError     404: *_UNKNOWN codes
 │    ├── UnsupportedError  405 UNSUPPORTED (e.g. deletes disabled)
 │    │    └── ReadOnlyError  a destination refuses uploads (read-only, maintenance mode)
 │    └── RateLimitedError  429 TOOMANYREQUESTS
 ├── TransportError         connection refused/reset, timeout, TLS failure
 │    ├── UnreachableError  could not connect (refused, DNS, connect timeout); down registries
 │    └── TlsError          certificate verification failed (never retried)
 ├── IntegrityError         bytes do not match their digest or size
 ├── LayoutError            an OCI layout directory cannot be read or written
 ├── MappingError           a rule maps two source repositories to one destination (exit 1)
 ├── EmptySourceError       a rule's source matches no repository, or lacks the one it names
 ├── ManifestError          oversized, malformed, schema1, unknown media type
 └── InvalidNameError       a repository, tag or digest off the distribution grammar
"""

from __future__ import annotations


class RegsyncError(Exception):
    """Root of every error regsync raises on purpose."""


class ConfigError(RegsyncError):
    """The configuration or command line is invalid."""


class RegistryError(RegsyncError):
    """A registry answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        registry: str = "",
        status: int = 0,
        codes: tuple[str, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.registry = registry
        self.status = status
        self.codes = codes
        self.retry_after = retry_after


class AuthError(RegistryError):
    """Credentials were refused or a token did not grant the needed scope."""


class CredentialsError(AuthError):
    """The registry or its token service refused the credentials themselves, not one scope."""


class NotFoundError(RegistryError):
    """The manifest, blob, repository or upload session does not exist."""


class UnsupportedError(RegistryError):
    """The registry does not support the operation (405 UNSUPPORTED)."""


class ReadOnlyError(UnsupportedError):
    """A destination refuses uploads as such (405 to starting one): read-only or maintenance."""


class RateLimitedError(RegistryError):
    """429: the registry asks us to slow down."""


class TransportError(RegsyncError):
    """The request did not complete: connection refused/reset, timeout, TLS."""

    def __init__(self, message: str, *, registry: str = "") -> None:
        super().__init__(message)
        self.registry = registry


class IntegrityError(RegsyncError):
    """Content did not match the digest or size it was announced with."""


class LayoutError(RegsyncError):
    """An OCI image layout directory cannot be read or written (not a layout, disk full)."""


class MappingError(RegsyncError):
    """A rule's source -> destination mapping is not one-to-one: the rule is refused whole."""


class EmptySourceError(RegsyncError):
    """A rule's glob matches no repository, or its named repository does not exist."""


class ManifestError(RegsyncError):
    """A manifest regsync cannot copy: oversized, malformed, schema1, unknown type."""


class InvalidNameError(RegsyncError, ValueError):
    """A repository, tag or digest name does not follow the distribution grammar.

    Also a ValueError, so config validators that call the name checks report it as usual.
    """


class UnreachableError(TransportError):
    """No connection could be made: refused, unknown host, connect timeout, or marked down."""

    def __init__(self, message: str, *, registry: str = "", down: bool = False) -> None:
        super().__init__(message, registry=registry)
        self.down = down  # found down earlier this run: fail without retrying


class TlsError(TransportError):
    """The TLS handshake failed (untrusted or mismatched certificate): retrying cannot help."""
