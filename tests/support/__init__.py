"""Test and demo support: real registry processes, image seeding, regsync subprocess runs.

Import as ``from tests.support import Registry, Blob, Image, Index, push, ...``.
"""

from .cli import REPO_ROOT, registries_yaml, run_regsync, write_config
from .client import MANIFEST_ACCEPT, RegistryClient, RegistryHTTPError, Response
from .images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_DIGEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Artifact,
    Blob,
    Image,
    Index,
    Manifest,
    Pushed,
    attach,
    push,
    push_blob,
    push_manifest,
    sha256,
)
from .registry import Registry, RegistryFactory, RegistryStartError, free_port
from .seed import Catalogue, catalogue_tag, sample_images, seed_catalogue, seed_samples
from .tls import TlsFiles, make_tls

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "EMPTY_DIGEST",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "REPO_ROOT",
    "Artifact",
    "Blob",
    "Catalogue",
    "Image",
    "Index",
    "Manifest",
    "Pushed",
    "Registry",
    "RegistryClient",
    "RegistryFactory",
    "RegistryHTTPError",
    "RegistryStartError",
    "Response",
    "TlsFiles",
    "attach",
    "catalogue_tag",
    "free_port",
    "make_tls",
    "push",
    "push_blob",
    "push_manifest",
    "registries_yaml",
    "run_regsync",
    "sample_images",
    "seed_catalogue",
    "seed_samples",
    "sha256",
    "write_config",
]
