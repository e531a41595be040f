"""A persistent content index: which destination repositories hold which blobs, and which
digest each destination tag was last put at or confirmed to hold.

Runs remember, per destination registry, the repositories they saw holding each blob digest
(uploaded, mounted, found by HEAD). The next run mounts a blob a new repository lacks from a
known holder instead of downloading it again (skopeo's blob-info cache does the same).

It is a hint, never a source of truth: a holder that lost the blob makes the mount fail, the
blob is uploaded as usual and the holder forgotten. Deleting or corrupting the file changes
what a run costs, never what it writes. A file that is not a readable database is renamed
aside and rebuilt, with a warning.

The tag rows (``tags``) and the time of each destination repository's last full check
(``checks``) let a cycle skip the destination HEAD of a tag whose recorded digest equals the
source's (``regsync.recorded``). They are a hint with the same failure mode: a missing or
corrupt file only means the next cycle checks everything.

Storage is stdlib ``sqlite3`` in WAL mode with a busy timeout, so two processes (shards, a
`once` beside a `serve`) may share one state directory. Writes are buffered and committed in
one short transaction per batch, off the event loop thread; lookups run off it too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "index.sqlite"
SCHEMA_VERSION = 2  # 2: tags and checks (a version 1 file gains them when opened)
BUSY_TIMEOUT_MS = 10_000  # another process committing its batch
MAX_HOLDERS = 3  # mounts tried per blob before uploading: bounds the cost of stale hints
# Holder rows are bounded: per digest the newest few, in all a cap, and a row no full check of
# its repository refreshed for HOLDER_TTL expires (a repository gone from the source or the
# destination stops being checked, so its rows go; a checked repository's are kept fresh).
MAX_HOLDER_ROWS = 8  # per (registry, digest)
MAX_ROWS = 500_000  # holder rows in all
HOLDER_TTL = 30 * 86400.0
MAINTAIN_EVERY = 3600.0  # seconds between expiry passes of a long-lived owner (serve)
FLUSH_BATCH = 256  # writes buffered before a commit in the middle of a run (``flush_batch``)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holders (
    registry TEXT NOT NULL,
    digest TEXT NOT NULL,
    repo TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (registry, digest, repo)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holders_repo ON holders (registry, repo);
CREATE INDEX IF NOT EXISTS holders_seen ON holders (seen);
CREATE TABLE IF NOT EXISTS tags (
    registry TEXT NOT NULL,
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (registry, repo, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checks (
    registry TEXT NOT NULL,
    repo TEXT NOT NULL,
    checked REAL NOT NULL,
    PRIMARY KEY (registry, repo)
) WITHOUT ROWID;
"""

# Rows read back are hints from a file anyone with access could edit: the grammar is checked
# again before a repository name goes into a mount URL.
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_REPO = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)


_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,126}/[A-Za-z0-9][A-Za-z0-9.+_-]{0,126}|")

TagOp = tuple[str, str, str, str, str, str]


@dataclass(frozen=True)
class TagRecords:
    """One destination repository's tag rows: tag -> (digest, media type), and the time of
    its last full check (None: never, or no usable index)."""

    digests: dict[str, tuple[str, str]]
    checked: float | None


def _valid_tag_row(tag: object, digest: object, media_type: object) -> bool:
    return (
        isinstance(tag, str)
        and isinstance(digest, str)
        and isinstance(media_type, str)
        and bool(_TAG.fullmatch(tag))
        and bool(_DIGEST.fullmatch(digest))
        and bool(_MEDIA_TYPE.fullmatch(media_type))
    )


def valid_holder(digest: str, repo: str) -> bool:
    return bool(_DIGEST.fullmatch(digest)) and len(repo) < 256 and bool(_REPO.fullmatch(repo))


def default_state_dir(env: Mapping[str, str]) -> Path:
    """`$REGSYNC_STATE_DIR`, else `$XDG_STATE_HOME/regsync`, else `~/.local/state/regsync`."""
    if env.get("REGSYNC_STATE_DIR"):
        return Path(env["REGSYNC_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "regsync"


class BlobIndex:
    """One state file; thread-safe (one connection behind a lock).

    The file is opened on first use: a run with nothing to copy never touches it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / FILE_NAME
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # (registry, digest, repo, keep): keep=False forgets the holder. Applied in order.
        self._pending: list[tuple[str, str, str, bool]] = []
        self._buffer = threading.Lock()  # appends (loop thread) vs the swap in flush (worker)
        self.broken = False  # set after an sqlite error: the run goes on without hints
        self._known: dict[str, bool] = {}  # registry -> has rows (asked once per open)
        # ("put", registry, repo, tag, digest, media type), ("drop", registry, repo, tag, ..)
        # or ("checked", registry, repo, ..): applied in order, after the holder writes.
        self._tag_ops: list[TagOp] = []
        self._maintained = 0.0  # when expiry and the row cap last ran

    @classmethod
    def open(cls, state_dir: Path) -> BlobIndex:
        return cls(state_dir)

    def _db(self) -> sqlite3.Connection | None:
        """The connection, opened now if need be (call holding `_lock`); None if unusable."""
        if self._conn is None and not self.broken:
            self._conn = _open_file(self.state_dir, self.path)
            self.broken = self._conn is None
        return self._conn

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writes: buffered ---------------------------------------------------------------

    def record(self, registry: str, digest: str, repo: str) -> None:
        with self._buffer:
            self._pending.append((registry, digest, repo, True))

    def forget(self, registry: str, digest: str, repo: str) -> None:
        with self._buffer:
            self._pending.append((registry, digest, repo, False))

    def put_tag(self, registry: str, repo: str, tag: str, digest: str, media_type: str) -> None:
        """``repo:tag`` in ``registry`` was put at, or confirmed to hold, ``digest``."""
        with self._buffer:
            self._tag_ops.append(("put", registry, repo, tag, digest, media_type))

    def drop_tag(self, registry: str, repo: str, tag: str) -> None:
        with self._buffer:
            self._tag_ops.append(("drop", registry, repo, tag, "", ""))

    def checked(self, registry: str, repo: str) -> None:
        """A full check of ``repo`` ended: its tag rows are forgotten (the ``put_tag`` calls
        that follow are what it confirmed) and the time is kept."""
        with self._buffer:
            self._tag_ops.append(("checked", registry, repo, "", "", ""))

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._tag_ops)

    def flush(self) -> None:
        """Commit the buffered writes in one short transaction (blocking: call off the loop).

        Batches are taken and committed under one lock, so two flushes in flight commit in
        the order the writes were made."""
        now = time.time()
        try:
            with self._lock:
                with self._buffer:
                    batch, self._pending = self._pending, []
                    tag_ops, self._tag_ops = self._tag_ops, []
                if not (batch or tag_ops) or self.broken:
                    return
                conn = self._db()
                if conn is None:
                    return
                with conn:
                    _apply(conn, batch, now)
                    _apply_tags(conn, tag_ops, now)
                    _cap_digests(conn, {(r, d) for r, d, _, keep in batch if keep})
                    if now - self._maintained >= MAINTAIN_EVERY:
                        _expire(conn, now)
                        self._maintained = now
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        for registry, *_ in batch:  # a long-lived owner (serve) asks again next run
            self._known.pop(registry, None)

    async def flush_async(self) -> None:
        if self.broken:  # nothing to write them to: the run goes on without the index
            with self._buffer:
                self._pending, self._tag_ops = [], []
        elif self.pending:
            await asyncio.to_thread(self.flush)

    async def flush_batch(self) -> None:
        """Commit once ``FLUSH_BATCH`` writes are buffered: what a run holds is bounded by its
        work in flight, not by all it has learned (off the loop thread)."""
        if self.pending >= FLUSH_BATCH:
            await self.flush_async()

    # -- reads --------------------------------------------------------------------------

    def holders(self, registry: str, digest: str, limit: int = MAX_HOLDERS) -> list[str]:
        """Repositories last seen holding `digest` (newest first), grammar-checked."""
        if self.broken or not self.knows(registry):
            return []
        try:
            with self._lock:
                conn = self._db()
                if conn is None:
                    return []
                rows = conn.execute(
                    "SELECT repo FROM holders WHERE registry=? AND digest=?"
                    " ORDER BY seen DESC LIMIT ?",
                    (registry, digest, limit * 4),
                ).fetchall()
        except sqlite3.Error as exc:
            self._fail(exc)
            return []
        repos = [r[0] for r in rows if isinstance(r[0], str) and valid_holder(digest, r[0])]
        return repos[:limit]

    def tags_of(self, registry: str, repo: str) -> TagRecords:
        """What ``repo`` in ``registry`` was last put at or confirmed to hold, and when it was
        last fully checked (blocking: call off the loop). Nothing on any failure."""
        if self.broken:
            return TagRecords({}, None)
        try:
            with self._lock:
                conn = self._db()
                if conn is None:
                    return TagRecords({}, None)
                rows = conn.execute(
                    "SELECT tag, digest, media_type FROM tags WHERE registry=? AND repo=?",
                    (registry, repo),
                ).fetchall()
                checked = conn.execute(
                    "SELECT checked FROM checks WHERE registry=? AND repo=?", (registry, repo)
                ).fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)
            return TagRecords({}, None)
        digests = {
            tag: (digest, media_type)
            for tag, digest, media_type in rows
            if _valid_tag_row(tag, digest, media_type)
        }
        when = checked[0] if checked and isinstance(checked[0], float | int) else None
        return TagRecords(digests, None if when is None else float(when))

    def knows(self, registry: str) -> bool:
        """Whether earlier runs left anything for `registry`: a first copy into a new
        destination then asks nothing per blob."""
        if registry not in self._known:
            try:
                with self._lock:
                    conn = self._db()
                    if conn is None:
                        return False
                    row = conn.execute(
                        "SELECT 1 FROM holders WHERE registry=? LIMIT 1", (registry,)
                    ).fetchone()
            except sqlite3.Error as exc:
                self._fail(exc)
                return False
            self._known[registry] = row is not None
        return self._known[registry]

    def known(self, registry: str) -> bool | None:
        """What `knows` answered for `registry`, if it was asked since the last flush (no
        file access: safe on the event loop thread)."""
        return self._known.get(registry)

    def _fail(self, exc: sqlite3.Error) -> None:
        self.broken = True
        log.warning("content index %s failed, continuing without it: %s", self.path, exc)


def _apply_tags(conn: sqlite3.Connection, ops: list[TagOp], now: float) -> None:
    for op, registry, repo, tag, digest, media_type in ops:
        if op == "put":
            conn.execute(
                "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
                " SET digest = excluded.digest, media_type = excluded.media_type,"
                " seen = excluded.seen",
                (registry, repo, tag, digest, media_type, now),
            )
        elif op == "drop":
            conn.execute(
                "DELETE FROM tags WHERE registry=? AND repo=? AND tag=?", (registry, repo, tag)
            )
        else:
            conn.execute("DELETE FROM tags WHERE registry=? AND repo=?", (registry, repo))
            # The repository is still there: the blobs it was seen holding stay good hints.
            conn.execute(
                "UPDATE holders SET seen = ? WHERE registry=? AND repo=?", (now, registry, repo)
            )
            conn.execute(
                "INSERT INTO checks VALUES (?, ?, ?) ON CONFLICT DO UPDATE"
                " SET checked = excluded.checked",
                (registry, repo, now),
            )


def _cap_digests(conn: sqlite3.Connection, digests: set[tuple[str, str]]) -> None:
    """Keep the newest MAX_HOLDER_ROWS holders of each digest just written."""
    for registry, digest in digests:
        conn.execute(
            "DELETE FROM holders WHERE registry=? AND digest=? AND repo NOT IN"
            " (SELECT repo FROM holders WHERE registry=? AND digest=? ORDER BY seen DESC LIMIT ?)",
            (registry, digest, registry, digest, MAX_HOLDER_ROWS),
        )


def _expire(conn: sqlite3.Connection, now: float) -> None:
    """Drop holder rows not refreshed for HOLDER_TTL, then the oldest past MAX_ROWS."""
    conn.execute("DELETE FROM holders WHERE seen < ?", (now - HOLDER_TTL,))
    (rows,) = conn.execute("SELECT count(*) FROM holders").fetchone()
    if rows > MAX_ROWS:
        conn.execute(
            "DELETE FROM holders WHERE (registry, digest, repo) IN (SELECT registry, digest,"
            " repo FROM holders ORDER BY seen LIMIT ?)",
            (rows - MAX_ROWS,),
        )


def _apply(conn: sqlite3.Connection, batch: list[tuple[str, str, str, bool]], now: float) -> None:
    for registry, digest, repo, keep in batch:
        if keep:
            conn.execute(
                "INSERT INTO holders VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE"
                " SET seen = excluded.seen",
                (registry, digest, repo, now),
            )
        else:
            conn.execute(
                "DELETE FROM holders WHERE registry=? AND digest=? AND repo=?",
                (registry, digest, repo),
            )


def _open_file(state_dir: Path, path: Path) -> sqlite3.Connection | None:
    """Open (creating) the index; a corrupt file is set aside and rebuilt. None: unusable."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("state dir %s unusable, no content index: %s", state_dir, exc)
        return None
    try:
        return _connect(path)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{FILE_NAME}.corrupt-{int(time.time())}")
        log.warning("content index %s unreadable (%s): set aside as %s", path, exc, aside)
    try:
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        return _connect(path)
    except (OSError, sqlite3.Error) as exc:
        log.warning("content index %s cannot be rebuilt, none used: %s", path, exc)
        return None


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a lost last batch costs a re-upload only
        with conn:
            conn.executescript(_SCHEMA)
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version in (0, 1):  # new, or version 1 that just gained the tag tables
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
        conn.execute("SELECT count(*) FROM holders LIMIT 1").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn
