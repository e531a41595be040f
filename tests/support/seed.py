"""Seed registries with many images (tests, demo, benchmark).

``seed_catalogue`` makes ``repos`` x ``tags`` single-arch images quickly, in parallel per repo;
``seed_samples`` makes the small mixed set the demo shows (Docker, OCI index, manifest list).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .client import RegistryClient
from .images import Blob, Image, Index, Manifest, Pushed, push


@dataclass(frozen=True)
class Catalogue:
    """What ``seed_catalogue`` pushed: ``images[repo][tag]``."""

    images: dict[str, dict[str, Pushed]]

    @property
    def repos(self) -> list[str]:
        return sorted(self.images)

    @property
    def total_bytes(self) -> int:
        """Bytes of distinct blobs per repo (what a full mirror of it must copy or mount)."""
        total = 0
        for tags in self.images.values():
            blobs: dict[str, int] = {}
            for pushed in tags.values():
                blobs.update(pushed.blobs)
            total += sum(blobs.values())
        return total

    def digest(self, repo: str, tag: str) -> str:
        return self.images[repo][tag].digest


def catalogue_tag(j: int) -> str:
    return f"1.{j}.0"


def seed_catalogue(
    registry: RegistryClient,
    repos: int = 20,
    tags: int = 10,
    layers: int = 3,
    layer_size: int = 200_000,
    shared_base: bool = True,
    seed: int = 0,
    namespace: str = "diamol",
    workers: int = 8,
) -> Catalogue:
    """Push ``namespace/app00..`` each with tags ``1.0.0, 1.1.0, ...`` (Docker v2, amd64).

    Layer 0 is one base shared by every repo when ``shared_base``; middle layers are shared by
    the tags of one repo; the last layer is unique per tag. Same arguments, same digests.
    """
    if layers < 1:
        raise ValueError("layers must be >= 1")
    base = Blob.random(layer_size, f"{seed}/base") if shared_base else None

    def one_repo(i: int) -> tuple[str, dict[str, Pushed]]:
        repo = f"{namespace}/app{i:02d}"
        first = base or Blob.random(layer_size, f"{seed}/{repo}/base")
        middle = [Blob.random(layer_size, f"{seed}/{repo}/{k}") for k in range(1, layers - 1)]
        out: dict[str, Pushed] = {}
        for j in range(tags):
            tag = catalogue_tag(j)
            own = [Blob.random(layer_size, f"{seed}/{repo}/{tag}")] if layers > 1 else []
            image = Image.docker([first, *middle, *own], labels={"repo": repo, "tag": tag})
            out[tag] = push(registry, repo, tag, image)
        return repo, out

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        result = dict(pool.map(one_repo, range(repos)))
    return Catalogue(result)


def sample_images(seed: int = 0) -> dict[str, Manifest]:
    """``"repo:tag" -> manifest`` for a small realistic set sharing base layers.

    Layers are real tar.gz (any tool can copy or unpack them, so ``skopeo copy`` keeps every
    digest); arm64 of ``api`` also has an empty layer (a gzipped empty tar).

    - ``web``: Docker v2 single-arch, two tags sharing base + runtime layers;
    - ``api``: OCI index linux/amd64 + linux/arm64/v8 (arm64 has an empty layer);
    - ``worker``: Docker manifest list amd64 + arm64, same bases as ``web`` / ``api``.
    """
    base = {arch: Blob.tar_gz(150_000, f"{seed}/base/{arch}") for arch in ("amd64", "arm64")}
    runtime = {arch: Blob.tar_gz(80_000, f"{seed}/runtime/{arch}") for arch in base}

    def app(name: str, arch: str, version: str) -> Blob:
        return Blob.tar_gz(30_000, f"{seed}/{name}/{arch}/{version}", name=f"{name}.bin")

    out: dict[str, Manifest] = {}
    for version in ("1.0", "2.0"):
        out[f"web:{version}"] = Image.docker(
            [base["amd64"], runtime["amd64"], app("web", "amd64", version)]
        )
    out["api:1.0"] = Index.oci(
        [
            Image.oci([base["amd64"], app("api", "amd64", "1.0")], "linux/amd64"),
            Image.oci(
                [base["arm64"], Blob.empty_tar_gz(), app("api", "arm64", "1.0")], "linux/arm64/v8"
            ),
        ]
    )
    out["worker:1.0"] = Index.docker_list(
        [
            Image.docker([base[a], runtime[a], app("worker", a, "1.0")], platform)
            for a, platform in (("amd64", "linux/amd64"), ("arm64", "linux/arm64/v8"))
        ]
    )
    return out


def seed_samples(
    registry: RegistryClient, namespace: str = "diamol", seed: int = 0
) -> list[Pushed]:
    """Push ``sample_images`` under ``namespace/``."""
    pushed = []
    for ref, manifest in sample_images(seed).items():
        name, tag = ref.split(":")
        pushed.append(push(registry, f"{namespace}/{name}", tag, manifest))
    return pushed
