"""Test certificates: a throwaway CA and a server certificate for loopback (trustme)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: ``ca_pem`` to trust, ``cert`` (chain) and ``key`` to serve with."""

    ca: trustme.CA
    ca_pem: Path
    cert: Path
    key: Path

    @property
    def server(self) -> tuple[Path, Path]:
        """``(cert, key)``, the shape ``Registry(tls=...)`` takes."""
        return self.cert, self.key


def make_tls(directory: Path) -> TlsFiles:
    """A CA plus a server cert for 127.0.0.1, ::1 and localhost, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "::1", "localhost")
    ca_pem = directory / "ca.pem"
    cert = directory / "server.pem"
    key = directory / "server.key"
    ca.cert_pem.write_to_path(str(ca_pem))
    server.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    return TlsFiles(ca, ca_pem, cert, key)
