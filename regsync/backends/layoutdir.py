"""A layout directory's shape on disk: its marker files, where a blob lives, and its creation.

``<dir>/oci-layout`` and ``<dir>/index.json`` (regular files, never links) make a directory a
layout. A writer creates a missing one on first write, under the layout lock (another process
may be creating it too), ``oci-layout`` last: it says the layout is whole. A directory holding
anything else is refused rather than written into; a missing or empty one, or one holding
only what a first export killed early left behind, is not "something else". Creation also
sweeps the temp files dead writers left (``layoutfs.remove_orphans``).
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from regsync.backends.layoutfs import (
    LOCK_FILE,
    TEMP_PREFIX,
    is_regular,
    locked,
    open_dir,
    remove_orphans,
    replace_file,
)
from regsync.backends.layoutindex import INDEX_FILE, dump, empty_index
from regsync.errors import LayoutError

log = logging.getLogger(__name__)

LAYOUT_FILE = "oci-layout"
LAYOUT_MARKER = b'{"imageLayoutVersion": "1.0.0"}'  # LAYOUT_FILE's content
_OWN = frozenset({LOCK_FILE, "blobs", INDEX_FILE})  # what a half-initialised layout may hold


def blob_parts(digest: str) -> list[str]:
    """Where a (validated) digest lives, from the layout root: blobs/<algorithm>/<hex>."""
    algorithm, _, hexa = digest.partition(":")
    return ["blobs", algorithm, hexa]


def is_layout(root: Path) -> bool:
    """Both marker files are there (as regular files: a link or FIFO there is refused)."""
    return all(is_regular(root, [n], strict=True) for n in (LAYOUT_FILE, INDEX_FILE))


def not_a_layout(name: str) -> LayoutError:
    return LayoutError(f"{name} is not an OCI image layout (no {LAYOUT_FILE})")


def leftovers_only(root: Path) -> bool:
    """Missing, empty, or holding only what a first export killed early leaves behind."""
    if not root.exists():
        return True
    if not root.is_dir():
        return False
    return all(p.name in _OWN or p.name.startswith(TEMP_PREFIX) for p in root.iterdir())


def initialise(root: Path, name: str) -> None:
    """Create the layout at ``root`` unless it is one; remove dead writers' temp files."""
    try:
        _refuse_foreign(root, name)  # before creating anything, even the lock file
        with locked(root, fcntl.LOCK_EX):  # another process may be initialising too
            _refuse_foreign(root, name)
            with open_dir(root, ["blobs", "sha256"], create=True):
                pass  # made, or there already as real directories (never links)
            if not is_regular(root, [INDEX_FILE], strict=True):
                replace_file(root, INDEX_FILE, dump(empty_index()))
            if not is_regular(root, [LAYOUT_FILE], strict=True):  # last: says it is whole
                replace_file(root, LAYOUT_FILE, LAYOUT_MARKER)
            for orphan in remove_orphans(root):
                log.info("%s: removed %s left by an interrupted run", name, orphan)
    except OSError as exc:
        raise LayoutError(f"{name}: cannot prepare the layout: {exc}") from exc


def _refuse_foreign(root: Path, name: str) -> None:
    if not root.is_dir() or is_regular(root, [LAYOUT_FILE], strict=True):
        return
    # Another writer may finish creating the layout (oci-layout comes last) between the
    # check above and the listing: a foreign name is refused only if still not whole.
    if not leftovers_only(root) and not is_regular(root, [LAYOUT_FILE], strict=True):
        raise LayoutError(
            f"{name} exists and is not an OCI image layout (no {LAYOUT_FILE}); "
            "give a new or empty directory"
        )
