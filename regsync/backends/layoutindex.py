"""A layout's ``index.json`` as data: which (repository, tag) each entry names, and the
entries regsync writes. No I/O: the layout reads and replaces the file.

Each tag is one entry whose annotations are ``org.opencontainers.image.ref.name:
"<repo>:<tag>"`` (what ``skopeo inspect oci:<dir>:<repo>:<tag>`` matches, exactly) and
``io.regsync.repository: "<repo>"``. Entries written by other tools are read too: containerd's
``io.containerd.image.name`` (``docker save``, ``ctr export``), and a bare ``ref.name`` tag
(``skopeo copy ... oci:<dir>:<tag>``), which is taken to belong to the repository named like
the layout directory (``dirname`` below). Annotations are text from outside: a name off the
distribution grammar is refused, never a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from regsync.oci import mediatypes
from regsync.oci.manifest import Descriptor
from regsync.oci.ref import is_repository, is_tag, split_name

REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY = "io.regsync.repository"
CONTAINERD_NAME = "io.containerd.image.name"
INDEX_FILE = "index.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024  # index.json is read whole: bound it

Entry = dict[str, Any]
Change = Callable[[list[Entry]], list[Entry]]  # one update of the entries, applied in a commit
Catalog = dict[str, dict[str, Entry]]  # repository -> tag -> entry


def catalog(entries: list[Entry], dirname: str) -> tuple[Catalog, dict[str, list[str]]]:
    """The entries by repository and tag, and the names refused (repository -> refused tags,
    ``""`` -> refused repositories). A later entry for the same name wins, as in a registry."""
    found: Catalog = {}
    refused: dict[str, list[str]] = {}
    for entry in entries:
        if (name := named(entry, dirname)) is None:
            continue
        repo, tag = name
        if not is_repository(repo):
            refused.setdefault("", []).append(repo)
        elif not is_tag(tag):
            refused.setdefault(repo, []).append(tag)
        else:
            found.setdefault(repo, {})[tag] = entry
    return found, refused


def key(entry: Entry, dirname: str) -> tuple[str, str] | None:
    """(repository, tag) of an index entry, or None when it names none regsync can use."""
    name = named(entry, dirname)
    if name is None or not (is_repository(name[0]) and is_tag(name[1])):
        return None
    return name


def named(entry: Entry, dirname: str) -> tuple[str, str] | None:
    """What an index entry's annotations say its (repository, tag) is, unchecked."""
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return None
    ref = str(annotations.get(REF_NAME, ""))
    repo = str(annotations.get(REPOSITORY, ""))
    if repo and ref.startswith(repo + ":"):
        return repo, ref[len(repo) + 1 :]
    if ":" in ref:
        name, _, tag = ref.rpartition(":")
        return name, tag
    full = str(annotations.get(CONTAINERD_NAME, ""))
    if full and "@" not in full and ":" in full.rsplit("/", 1)[-1]:
        name, _, tag = full.rpartition(":")
        return split_name(name)[1], tag
    if ref and is_repository(dirname):
        return dirname, ref
    return None


def without(entries: list[Entry], repo: str, tag: str, dirname: str) -> list[Entry]:
    """``entries`` less those naming ``repo:tag``."""
    return [e for e in entries if key(e, dirname) != (repo, tag)]


def tag_entry(repo: str, tag: str, desc: Descriptor) -> Entry:
    """The entry regsync writes for ``repo:tag`` pointing at ``desc``."""
    return {
        "mediaType": desc.media_type,
        "digest": desc.digest,
        "size": desc.size,
        "annotations": {REF_NAME: f"{repo}:{tag}", REPOSITORY: repo},
    }


def empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}


def dump(data: dict[str, Any]) -> bytes:
    """``index.json``'s bytes as regsync writes them."""
    return json.dumps(data, indent=2).encode() + b"\n"
