"""Support for the combination matrix (tests/test_matrix.py): registry pairs per auth kind,
what a destination holds (registry or OCI layout), and the counts a run must report.

    pair = start_pair("token", workdir, tls, tokens)   # source + destination, same auth
    pair.registries_yaml()                             # the `registries:` block regsync needs
    expected_blobs([("mirror/ns/a", image), ...])      # copied / mounted / present of a run
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import RegistryClient
from .images import OCI_CONFIG, OCI_MANIFEST, Artifact, Blob, Image, Manifest, push
from .observe import parse_metrics, sample
from .registry import Registry
from .servers import TokenServer
from .tls import TlsFiles

AUTH_KINDS = ("none", "htpasswd", "token")
USER, PASSWORD = "matrix", "matrix-secret"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Pair:
    """A source and a destination registry speaking the same kind of auth."""

    auth: str
    src: Registry
    dst: Registry
    ca_file: Path | None = None

    def registries_yaml(self) -> str:
        """``registries:`` with TLS trust and credentials for both, as a user writes them."""
        lines = ["registries:"]
        for reg in (self.src, self.dst):
            opts = ["tls: http"] if reg.scheme == "http" else [f"ca_file: {self.ca_file}"]
            if self.auth != "none":
                opts.append(f"credentials: {{username: {USER}, password: {PASSWORD}}}")
            lines.append(f'  "{reg.host}": {{{", ".join(opts)}}}')
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        for reg in (self.src, self.dst):
            reg.stop()


def start_pair(
    auth: str,
    workdir: Path,
    tls: TlsFiles,
    tokens: TokenServer | None,
    src_options: dict[str, Any] | None = None,
) -> Pair:
    """Start a source and a destination registry with ``auth`` (none | htpasswd | token).

    htpasswd is served over TLS (the only way distribution accepts Basic auth in practice);
    token auth uses ``tokens`` (an ES256 token service), one service name per registry.
    ``src_options``: more ``Registry`` options for the source (``port``, ``extra_config``).
    """
    regs = []
    for role in ("src", "dst"):
        more = (src_options or {}) if role == "src" else {}
        if auth == "none":
            reg = Registry(workdir / role, **more)
        elif auth == "htpasswd":
            reg = Registry(
                workdir / role,
                htpasswd={USER: PASSWORD},
                tls=tls.server,
                ca_file=tls.ca_pem,
                **more,
            )
        elif auth == "token":
            assert tokens is not None
            reg = Registry(workdir / role, token_auth=tokens.registry_auth(f"{role}-svc"), **more)
            reg.credentials = (USER, PASSWORD)  # the test client seeds and inspects with these
        else:
            raise ValueError(f"unknown auth kind {auth!r}")
        regs.append(reg.start())
    return Pair(auth, regs[0], regs[1], tls.ca_pem if auth == "htpasswd" else None)


@contextmanager
def running_pair(
    auth: str,
    workdir: Path,
    tls: TlsFiles,
    tokens: TokenServer | None,
    src_options: dict[str, Any] | None = None,
) -> Iterator[Pair]:
    """``start_pair`` in ``workdir``; afterwards both registries stop and ``workdir`` goes."""
    started = start_pair(auth, workdir, tls, tokens, src_options)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def expected_blobs(placements: Iterable[tuple[str, Manifest]]) -> dict[str, int]:
    """The ``blobs`` counts of a run that places these images, each in a destination repo.

    Each distinct blob is streamed once per run, mounted into every other repository that
    needs it, and found present for every further image of a repository that has it.
    """
    seen: set[str] = set()
    placed: set[tuple[str, str]] = set()
    counts = {"copied": 0, "mounted": 0, "present": 0}
    for repo, manifest in placements:
        for digest in dict.fromkeys(b.digest for m in manifest.walk() for b in m.blobs):
            if (repo, digest) in placed:
                counts["present"] += 1
            elif digest in seen:
                counts["mounted"] += 1
            else:
                counts["copied"] += 1
            seen.add(digest)
            placed.add((repo, digest))
    return counts


def out_of_sync(metrics_text: str, rule: str) -> float | None:
    """``regsync_out_of_sync_tags{rule=...}`` from a Prometheus text exposition."""
    return sample(parse_metrics(metrics_text), "regsync_out_of_sync_tags", rule=rule)


# -- what a destination holds: a registry or an OCI layout --------------------------------------


class RegistryView:
    """A destination registry, read with the test client (independent of regsync)."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    def tags(self, repo: str) -> list[str]:
        return sorted(self.reg.tags(repo))

    def digest(self, repo: str, ref: str) -> str | None:
        return self.reg.manifest_digest(repo, ref)

    def raw(self, repo: str, ref: str) -> bytes:
        return self.reg.manifest(repo, ref)[1]

    def has_blob(self, repo: str, digest: str) -> bool:
        return self.reg.blob_exists(repo, digest)


class LayoutView:
    """An OCI image layout written by regsync: ``index.json`` names, ``blobs/sha256`` bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _entries(self) -> dict[str, str]:
        index = self.root / "index.json"
        if not index.exists():
            return {}
        data = json.loads(index.read_text())
        return {e["annotations"][REF_NAME]: e["digest"] for e in data["manifests"]}

    def tags(self, repo: str) -> list[str]:
        prefix = repo + ":"
        return sorted(ref[len(prefix) :] for ref in self._entries() if ref.startswith(prefix))

    def digest(self, repo: str, ref: str) -> str | None:
        if ref.startswith("sha256:"):
            return ref if self.has_blob(repo, ref) else None
        return self._entries().get(f"{repo}:{ref}")

    def raw(self, repo: str, ref: str) -> bytes:
        digest = self.digest(repo, ref)
        assert digest is not None, f"{repo}:{ref} is not in {self.root}"
        return self._path(digest).read_bytes()

    def has_blob(self, repo: str, digest: str) -> bool:
        return self._path(digest).is_file()

    def _path(self, digest: str) -> Path:
        algorithm, _, hexa = digest.partition(":")
        return self.root / "blobs" / algorithm / hexa


COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"


def cosign_signature(subject: Manifest, seed: str, prefix: str = "MEUC") -> Manifest:
    """A cosign-style signature manifest of ``subject`` (pushed as tag ``sha256-<hex>.sig``):
    an OCI manifest whose one layer is the signed payload; its signature annotation is
    ``prefix + seed`` (nothing verifies it)."""
    payload = Blob(
        json.dumps(
            {"critical": {"image": {"docker-manifest-digest": subject.digest}}, "seed": seed}
        ).encode()
    )
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Artifact.EMPTY_CONFIG.descriptor(OCI_CONFIG),
        "layers": [
            payload.descriptor(
                COSIGN_PAYLOAD, annotations={"dev.cosignproject.cosign/signature": prefix + seed}
            )
        ],
    }
    return Manifest(OCI_MANIFEST, json.dumps(body).encode(), (Artifact.EMPTY_CONFIG, payload))


def sig_tag(subject: Manifest | str, suffix: str = ".sig") -> str:
    """``sha256-<hex>.sig`` (cosign), or with ``suffix=""`` the referrers fallback tag."""
    digest = subject if isinstance(subject, str) else subject.digest
    return digest.replace(":", "-") + suffix


def untag(reg: RegistryClient, repo: str, tag: str) -> None:
    """Remove one tag at a registry that deletes by digest only (distribution), leaving every
    other tag of the same digest: re-point it at a unique manifest, then delete that."""
    placeholder = Image.oci([Blob(f"untag {repo}:{tag}".encode())])
    push(reg, repo, tag, placeholder)
    reg.delete_manifest(repo, placeholder.digest)
