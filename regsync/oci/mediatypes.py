"""Manifest and blob media types regsync knows."""

from __future__ import annotations

import re

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFESTS = INDEXES | IMAGES
SCHEMA1 = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# Sent on every manifest HEAD/GET: distribution 404s an OCI manifest the client did not
# accept, and hands a list's amd64 child to a client that does not accept lists.
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

# Manifests larger than this are refused (distribution's own limit is 4 MiB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Indexes within indexes followed, copied whole or filtered by platform (real images use 1).
MAX_NESTING = 4

# RFC 6838 section 4.2: type "/" subtype, each a restricted-name (an ASCII letter or digit,
# then up to 126 of letters, digits and ! # $ & - ^ _ . +). The OCI image spec requires it of
# every descriptor's mediaType and artifactType. Parameters (RFC 6838 section 4.3, written as
# RFC 9110 section 8.3.1 says: `;` then name=value, a token or a quoted string, optional
# spaces around the `;`) are part of real types: GitHub's attestations attach Sigstore
# bundles as `application/vnd.dev.sigstore.bundle+json;version=0.2`. Nothing else (a control
# character, a bare quote, a parameter without a value, text past MAX_MEDIA_TYPE_CHARS) is a
# media type regsync takes from a manifest or a layout: it becomes a Content-Type and a log.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_QUOTED = r'"(?:[ !#-\[\]-~]|\\[ -~])*"'
_PARAMETER = rf"[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_MEDIA_TYPE = re.compile(f"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}(?:{_PARAMETER})*")
MAX_MEDIA_TYPE_CHARS = 1024  # a type and its parameters: real ones are under 100


def is_media_type(text: str) -> bool:
    """Whether ``text`` is a media type by the RFC 6838 grammar, parameters included."""
    return len(text) <= MAX_MEDIA_TYPE_CHARS and _MEDIA_TYPE.fullmatch(text) is not None
