"""Delta bundles: a rule's series of tar bundles, each carrying only what earlier ones did not.

The exporting side keeps one state file per rule (``<state dir>/bundles/<rule>.json``): every
bundle written so far (sequence number, file name, sha256, the blobs it carried) and the index
entries of the latest one. The next bundle of the rule starts from those entries (so its
``index.json`` still lists every tag in scope) and counts the blobs earlier bundles carried as
present, so only new blobs and manifests go in. The state is written only after the bundle was
renamed into place: a bundle that failed leaves the series as it was. The manifests a bundle
carried are kept beside the state file too (``<rule>.manifests/<algorithm>-<hex>``, written
before it): the exporter still reads them once the bundle has gone (whether a platform subset
is up to date, the fallback index a new signature is merged into, what a kept index holds).

Inside a delta bundle, ``regsync-bundle.json`` says what it leaves out and which bundle
carried each piece (``left_out``: digest -> sequence), and ``index.json``'s annotations name
the bundles it depends on (``io.regsync.bundle.requires``). The importing side reads it so a
blob it lacks fails with the bundle to import first, never with a bare "not found".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regsync import boundedjson
from regsync.backends.layoutfs import read_capped, replace_file
from regsync.errors import LayoutError
from regsync.oci import mediatypes
from regsync.oci.digest import is_digest
from regsync.oci.ref import is_repository

SEQUENCE = "io.regsync.bundle.sequence"
REQUIRES = "io.regsync.bundle.requires"
RULE = "io.regsync.bundle.rule"
MAX_STATE_BYTES = 256 * 1024 * 1024  # our own file, but still read whole: bound it
MAX_CARRIERS = 16  # repositories named per left-out digest (mount candidates)
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True)
class BundleRecord:
    sequence: int
    name: str
    sha256: str

    def label(self) -> str:
        return f"bundle #{self.sequence} {self.name} ({self.sha256})"

    def to_json(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "name": self.name, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any) -> BundleRecord:
        if not isinstance(data, dict):
            raise ValueError("a bundle record is not an object")
        sequence, name, sha256 = data.get("sequence"), data.get("name"), data.get("sha256")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
            raise ValueError(f"invalid bundle sequence {sequence!r}")
        if not isinstance(name, str) or not isinstance(sha256, str) or not is_digest(sha256):
            raise ValueError("a bundle record needs a name and a sha256 digest")
        return cls(sequence, name[:256], sha256)


class BundleSeries:
    """The exporting side's record of one rule's delta bundles (see the module docstring)."""

    def __init__(self, state_dir: Path, rule: str) -> None:
        self.rule = rule
        self.dir = state_dir / "bundles"
        name = rule if _SAFE.fullmatch(rule) else re.sub(r"[^A-Za-z0-9._-]", "_", rule)[:100]
        self.file = f"{name}.json"
        self.manifests_dir = self.dir / f"{name}.manifests"  # manifests the bundles carried
        self.bundles: list[BundleRecord] = []
        self.carried: dict[str, int] = {}  # digest -> sequence of the bundle that carried it
        self.repos: dict[str, list[str]] = {}  # digest -> repositories it was written for
        self.entries: list[dict[str, Any]] = []  # index entries of the latest bundle

    def load(self) -> BundleSeries:
        try:
            raw = read_capped(self.dir, [self.file], MAX_STATE_BYTES)
        except FileNotFoundError:
            return self
        except OSError as exc:
            raise LayoutError(f"bundle state {self.dir / self.file}: {exc}") from exc
        try:
            if raw is None:
                raise ValueError("over the size limit")
            data = boundedjson.loads(raw)
            self.bundles = [BundleRecord.from_json(b) for b in data["bundles"]]
            blobs = {b["sequence"]: b["blobs"] for b in data["bundles"]}
            self.carried = {d: s for s, ds in blobs.items() for d in ds if is_digest(d)}
            for row in data["bundles"]:
                self.repos.update(_repositories(row.get("repositories", {})))
            self.entries = [e for e in data["index"] if isinstance(e, dict)]
        except (ValueError, KeyError, TypeError) as exc:
            raise LayoutError(f"bundle state {self.dir / self.file} is damaged: {exc}") from exc
        return self

    @property
    def next_sequence(self) -> int:
        return len(self.bundles) + 1

    def annotations(self) -> dict[str, str]:
        """The index annotations of the next bundle: its number and what it depends on."""
        requires = ", ".join(f"{b.name}@{b.sha256}" for b in self.bundles)
        return {RULE: self.rule, SEQUENCE: str(self.next_sequence), REQUIRES: requires}

    def manifest(self) -> bytes:
        """``regsync-bundle.json`` of the next bundle."""
        left_out = dict(sorted(self.carried.items()))
        data = {
            "rule": self.rule,
            "sequence": self.next_sequence,
            "requires": [b.to_json() for b in self.bundles],
            "left_out": left_out,
            "carriers": {d: self.repos[d] for d in left_out if d in self.repos},
        }
        return json.dumps(data, indent=1).encode() + b"\n"

    def record(
        self,
        name: str,
        sha256: str,
        blobs: dict[str, list[str]],
        entries: list[Any],
        manifests: dict[str, bytes],
    ) -> None:
        """A bundle is in place: remember it (written atomically, after the bundle itself).
        ``blobs``: every digest it carried -> the repositories it was written for;
        ``manifests``: the bytes of those that are manifests (kept for ``carried_manifest``)."""
        record = BundleRecord(self.next_sequence, name, sha256)
        by_bundle: dict[int, list[str]] = {}  # one pass over what the series carried
        for digest, sequence in self.carried.items():
            by_bundle.setdefault(sequence, []).append(digest)
        rows = [self._row(b, by_bundle.get(b.sequence, [])) for b in self.bundles]
        rows.append({**record.to_json(), "blobs": sorted(blobs), "repositories": blobs})
        data = {"version": 1, "rule": self.rule, "bundles": rows, "index": entries}
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        for digest, raw in manifests.items():
            replace_file(self.manifests_dir, _manifest_file(digest), raw)
        replace_file(self.dir, self.file, json.dumps(data).encode())
        self.bundles.append(record)
        self.carried.update((d, record.sequence) for d in blobs)
        self.repos.update((d, r) for d, r in blobs.items() if r)
        self.entries = list(entries)

    def carried_manifest(self, digest: str) -> bytes | None:
        """The bytes of a manifest an earlier bundle carried, None when not kept (a series
        begun before manifests were kept, or not a manifest). The caller verifies the digest."""
        if digest not in self.carried:
            return None
        try:
            parts = [_manifest_file(digest)]
            return read_capped(self.manifests_dir, parts, mediatypes.MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LayoutError(f"bundle state {self.manifests_dir}: {exc}") from exc

    def _row(self, bundle: BundleRecord, carried: list[str]) -> dict[str, Any]:
        """A bundle's state row; ``carried``: the digests it carried (in any order)."""
        blobs = sorted(carried)
        repos = {d: self.repos[d] for d in blobs if d in self.repos}
        return {**bundle.to_json(), "blobs": blobs, "repositories": repos}


def _manifest_file(digest: str) -> str:
    algorithm, _, hexa = digest.partition(":")
    return f"{algorithm}-{hexa}"


def _repositories(data: Any) -> dict[str, list[str]]:
    """digest -> repository names, from outside: only valid digests and names, a few each."""
    if not isinstance(data, dict):
        return {}
    found = {}
    for digest, repos in data.items():
        if is_digest(digest) and isinstance(repos, list):
            names = [r for r in repos[:MAX_CARRIERS] if isinstance(r, str) and is_repository(r)]
            found[digest] = names
    return found


@dataclass(frozen=True)
class LeftOut:
    """What an imported delta bundle says about the content it does not carry."""

    notes: dict[str, str]  # digest -> the error naming the bundle to import first
    carriers: dict[str, list[str]]  # digest -> source repositories it was carried for


def read_left_out(raw: bytes, bundle: str) -> LeftOut:
    """An imported bundle's ``regsync-bundle.json`` (untrusted: checked, bounded). ``bundle``
    names the file being imported (for the messages)."""
    try:
        data = boundedjson.loads(raw)
        sequence = data["sequence"]
        requires = {r.sequence: r for r in map(BundleRecord.from_json, data["requires"])}
        left_out = data["left_out"]
        if not isinstance(sequence, int) or not isinstance(left_out, dict):
            raise TypeError("sequence or left_out has the wrong type")
    except (ValueError, KeyError, TypeError) as exc:
        raise LayoutError(f"{bundle}: regsync-bundle.json is not a bundle record: {exc}") from exc
    notes = _notes(bundle, sequence, requires, left_out)
    return LeftOut(notes, _repositories(data.get("carriers")))


def _notes(
    bundle: str, sequence: int, requires: dict[int, BundleRecord], left_out: dict[str, Any]
) -> dict[str, str]:
    previous = requires.get(sequence - 1)
    first = f"import {previous.label()} first" if previous else "import the earlier bundles first"
    notes = {}
    for digest, carrier in left_out.items():
        if not is_digest(digest) or not isinstance(carrier, int) or carrier not in requires:
            continue
        notes[digest] = (
            f"not in {bundle} (delta bundle #{sequence}): it came in "
            f"{requires[carrier].label()} and is not at the destination; {first} "
            "(a rule's bundles are imported in order)"
        )
    return notes
