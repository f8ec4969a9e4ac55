"""The run store: one DuckDB file per run folder, content-addressed media, and the run lock.

Every stage reads its inputs from here and writes its outputs back, with lineage. The
tables are defined once, in :data:`SCHEMA`; :data:`SCHEMA_VERSION` is written into the
file when it is created and checked every time it is opened, so an older or newer
siqkit refuses a store it does not understand instead of misreading it. A DuckDB file
that is not a siqkit store (no ``meta`` table, or someone else's tables) is refused after
a read-only look, never modified.

A stage row still marked ``running`` when the next run takes the folder's lock belongs to
a process that died (``kill -9``, a crash, a power cut): it is marked ``interrupted``.

Run folder layout::

    runs/<name>/
      store.duckdb     the tables below
      media/ab/<sha256>.png   images, stored once by the hash of their bytes
      siqkit.log       the log of every command run on this folder
      .lock            held (flock) by the siqkit process writing to the folder
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import threading
from collections import OrderedDict
import io
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pyarrow as pa
from PIL import Image

from siqkit import __version__
from siqkit.errors import StoreError

SCHEMA_VERSION = 1
STORE_FILE = "store.duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS stage_run_id;
-- one row per stage execution: its resolved settings and its counts
CREATE TABLE IF NOT EXISTS stage_runs (
    id BIGINT PRIMARY KEY DEFAULT nextval('stage_run_id'),
    stage VARCHAR NOT NULL, status VARCHAR NOT NULL,      -- running | done | failed
    started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
    settings JSON, counts JSON, siqkit_version VARCHAR, error VARCHAR);
-- images, stored once under media/ by the sha256 of their bytes
CREATE TABLE IF NOT EXISTS media (
    hash VARCHAR PRIMARY KEY, format VARCHAR, width INTEGER, height INTEGER, size_bytes BIGINT);
-- the seed pool; columns mirror siqkit.records.Seed, plus the pool selection flag
CREATE TABLE IF NOT EXISTS seeds (
    id VARCHAR PRIMARY KEY, source VARCHAR NOT NULL, split VARCHAR NOT NULL,
    question VARCHAR NOT NULL, answer VARCHAR, images VARCHAR[], metadata JSON,
    origin VARCHAR, selected BOOLEAN NOT NULL DEFAULT TRUE);
-- which version of each seed source is fully ingested (for skipping on rerun)
CREATE TABLE IF NOT EXISTS source_runs (
    source VARCHAR PRIMARY KEY, fingerprint VARCHAR, finished_at TIMESTAMP, counts JSON);
-- malformed input rows, with where and why
CREATE TABLE IF NOT EXISTS quarantine (
    stage VARCHAR NOT NULL, source VARCHAR, file VARCHAR, line INTEGER, field VARCHAR,
    reason VARCHAR NOT NULL, detail VARCHAR);
-- teacher outputs: one row per work key (seed, teacher, prompt, sampling, sample index)
CREATE TABLE IF NOT EXISTS generations (
    key VARCHAR PRIMARY KEY, seed_id VARCHAR NOT NULL, teacher VARCHAR NOT NULL,
    teacher_identity JSON, prompt JSON, sampling JSON, sample_index INTEGER,
    raw VARCHAR, reasoning VARCHAR, answer VARCHAR,
    parse_status VARCHAR, parse_reason VARCHAR, finish_reason VARCHAR, error VARCHAR,
    prompt_tokens INTEGER, completion_tokens INTEGER, seconds DOUBLE, created_at TIMESTAMP);
-- throughput of each teacher in each generate run
CREATE TABLE IF NOT EXISTS teacher_runs (
    stage_run BIGINT, teacher VARCHAR, samples INTEGER, errors INTEGER, seconds DOUBLE,
    completion_tokens BIGINT, samples_per_s DOUBLE, tokens_per_s DOUBLE);
-- one row per generation: answer check, judge, labels, difficulty, reasoning statistics
CREATE TABLE IF NOT EXISTS annotations (
    key VARCHAR PRIMARY KEY, seed_id VARCHAR NOT NULL, teacher VARCHAR NOT NULL, settings VARCHAR,
    correct BOOLEAN, correct_detail VARCHAR, answer_kind VARCHAR,
    judge_difficulty INTEGER, judge_quality INTEGER, judge_tags VARCHAR[], judge_error VARCHAR,
    labels VARCHAR[], reasoning_tokens INTEGER, answer_tokens INTEGER, steps INTEGER, step_rule VARCHAR,
    pass_rate DOUBLE, samples_judged INTEGER, difficulty INTEGER, difficulty_bucket VARCHAR,
    difficulty_source VARCHAR);
-- items a stage removed on purpose, with why
CREATE TABLE IF NOT EXISTS drops (
    stage VARCHAR NOT NULL, item VARCHAR, source VARCHAR, reason VARCHAR NOT NULL, detail VARCHAR);
-- the curate stage's decision on every trace it considered: kept, or dropped by which layer
-- (rules | dedup | selection) and why; duplicate clusters are named by their kept member
CREATE TABLE IF NOT EXISTS curation (
    key VARCHAR PRIMARY KEY, seed_id VARCHAR NOT NULL, teacher VARCHAR NOT NULL, split VARCHAR,
    kept BOOLEAN NOT NULL, layer VARCHAR, reason VARCHAR, detail VARCHAR,
    question_cluster VARCHAR, reasoning_cluster VARCHAR, difficulty_bucket VARCHAR, labels VARCHAR[],
    rank INTEGER, settings VARCHAR);
-- membership of the curated set ('curated') and of each named subset, with its export folder
CREATE TABLE IF NOT EXISTS curation_subsets (
    subset VARCHAR NOT NULL, key VARCHAR NOT NULL, path VARCHAR, PRIMARY KEY (subset, key));
-- perceptual fingerprint of stored images (64-bit DCT hash, 8x8 RGB thumbnail; NULL: unreadable)
CREATE TABLE IF NOT EXISTS media_phash (hash VARCHAR PRIMARY KEY, phash UBIGINT, thumb BLOB);
"""


class MediaStore:
    """Content-addressed files: ``put`` stores bytes once and returns their hash."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, digest: str, fmt: str) -> Path:
        return self.root / digest[:2] / f"{digest}.{fmt}"

    def image(self, digest: str, max_pixels: int | None = None) -> Image.Image:
        """A decoded copy of a stored image (decoded once per process; callers may modify it).

        With ``max_pixels``, a larger image is downscaled (aspect ratio kept, Lanczos) to at
        most that many pixels; smaller ones are returned as stored.
        """
        image = DECODED.get(str(self.root), digest)
        w, h = image.size
        if max_pixels is None or w * h <= max_pixels:
            return image.copy()
        scale = (max_pixels / (w * h)) ** 0.5
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        return image.resize(size, Image.Resampling.LANCZOS)

    def find(self, digest: str) -> Path:
        """The stored file of a hash, whatever its format."""
        found = next((self.root / digest[:2]).glob(f"{digest}.*"), None)
        if found is None:
            raise FileNotFoundError(f"{self.root}: no stored media with hash {digest}")
        return found

    def put(self, data: bytes) -> tuple[str, str, int, int]:
        """Store image bytes (if new); return (sha256, format, width, height)."""
        digest = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:  # header only: size and format
            fmt = (im.format or "bin").lower()
            width, height = im.size
        target = self.path(digest, fmt)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: a reader never sees half a file
        return digest, fmt, width, height


class DecodedCache:
    """Decoded images, most recently used kept, bounded by their decoded bytes (not their
    number: one 12-megapixel photo weighs as much as 12,000 thumbnails). An image larger
    than the whole budget is decoded for its caller and not kept. Thread-safe."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self._items: OrderedDict[tuple[str, str], Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, root: str, digest: str) -> Image.Image:
        key = (root, digest)
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
                return image
        with Image.open(MediaStore(Path(root)).find(digest)) as im:
            im.load()
            image = im.copy()
        size = _decoded_bytes(image)
        if size <= self.budget:
            with self._lock:
                if key not in self._items:
                    self._items[key] = image
                    self.used += size
                while self.used > self.budget:
                    _, old = self._items.popitem(last=False)
                    self.used -= _decoded_bytes(old)
        return image

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0


def _decoded_bytes(image: Image.Image) -> int:
    return image.width * image.height * max(1, len(image.getbands()))


# easy-VQA asks ~10 questions about each image: keep decoded images, within 256 MB.
DECODED = DecodedCache(256 * 2**20)


class RunLock:
    """An exclusive flock on ``RUN_DIR/.lock``; the OS releases it if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self._fh: Any = None

    def acquire(self, command: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as e:
            raise StoreError(f"{e.filename or self.path}: cannot write the run folder ({e.strerror}); "
                             "make it writable or choose another run.dir") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StoreError(
                f"{self.path.parent}: run folder is in use by {holder}; "
                "wait for it to finish or stop it, then run again"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')} ({command})")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class Store:
    """A run folder's DuckDB store and media. Use :meth:`open`."""

    def __init__(self, run_dir: Path, con: duckdb.DuckDBPyConnection):
        self.run_dir = run_dir
        self.con = con
        self.media = MediaStore(run_dir / "media")

    @classmethod
    def open(cls, run_dir: str | Path, *, create: bool = False, read_only: bool = False) -> "Store":
        run_dir = Path(run_dir)
        db = run_dir / STORE_FILE
        if not db.exists() and not create:
            raise StoreError(f"{run_dir}: no run store here (expected {STORE_FILE}); run a recipe first")
        if db.exists() and not read_only:
            cls._refuse_foreign(db)  # a read-only look first: a foreign file is never written
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{run_dir}: cannot create the run folder ({e.strerror}); choose another run.dir") from None
        store = cls(run_dir, _connect(db, read_only))
        store._check_schema(create=not read_only)
        return store

    @staticmethod
    def _refuse_foreign(db: Path) -> None:
        """Refuse a DuckDB file that is not a siqkit run store, from a read-only look."""
        try:
            con = _connect(db, read_only=True)
        except StoreError as e:
            if "different configuration" in str(e):
                return  # already open in this process, so already checked
            raise
        try:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY table_name").fetchall()]
        finally:
            con.close()
        if tables and "meta" not in tables:
            shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
            raise StoreError(f"{db}: not a siqkit run store (no meta table; it holds {shown}); it was left "
                             "untouched: choose another run.dir")

    def has_table(self, name: str) -> bool:
        """Whether the store has table ``name`` (stages create some of theirs on first use)."""
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])

    def _check_schema(self, create: bool) -> None:
        if self.has_table("meta"):
            row = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row else None
            if found != SCHEMA_VERSION:
                self.con.close()
                raise StoreError(
                    f"{self.run_dir / STORE_FILE}: run store schema version {found}, but this siqkit "
                    f"({__version__}) reads version {SCHEMA_VERSION}; use a matching siqkit or a new run folder"
                )
        elif create:
            self.con.execute(SCHEMA)
            self.con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created_by', ?), ('created_at', ?)",
                [str(SCHEMA_VERSION), f"siqkit {__version__}", time.strftime("%Y-%m-%dT%H:%M:%S")],
            )
        else:
            raise StoreError(f"{self.run_dir / STORE_FILE}: not a siqkit run store (no meta table)")

    def mark_interrupted(self) -> int:
        """Mark stage rows left ``running`` by a process that died; return how many.

        Call it only while holding the folder's :class:`RunLock`: then no other process
        can be running a stage here.
        """
        rows = self.con.execute(
            "UPDATE stage_runs SET status = 'interrupted', error = 'the process stopped before the stage "
            "finished (killed or crashed); rerun to resume' WHERE status = 'running' RETURNING id").fetchall()
        return len(rows)

    def close(self) -> None:
        try:
            self.con.close()
        except duckdb.Error:  # a store that just failed: what was committed is on disk
            pass

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing: after a crash inside, the store is as it was before."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def insert(self, table: str, columns: list[str], rows: list[tuple], mode: str = "INSERT") -> None:
        """Bulk insert through Arrow (DuckDB's per-row ``executemany`` is ~1000x slower).

        ``mode`` is ``INSERT``, ``INSERT OR REPLACE`` or ``INSERT OR IGNORE``.
        """
        if not rows:
            return
        data = pa.table({c: pa.array([r[i] for r in rows]) for i, c in enumerate(columns)})
        self.con.register("_insert_rows", data)
        try:
            self.con.execute(f"{mode} INTO {table} ({', '.join(columns)}) SELECT * FROM _insert_rows")
        finally:
            self.con.unregister("_insert_rows")

    # -- stage bookkeeping -------------------------------------------------------------

    def begin_stage(self, stage: str, settings: dict) -> int:
        return self.con.execute(
            "INSERT INTO stage_runs (stage, status, started_at, settings, siqkit_version) "
            "VALUES (?, 'running', now(), ?, ?) RETURNING id",
            [stage, json.dumps(settings, default=str), __version__],
        ).fetchone()[0]

    def current_run(self, stage: str) -> int | None:
        """The id of ``stage``'s newest run: inside a stage, the run in progress."""
        return self.con.execute("SELECT max(id) FROM stage_runs WHERE stage = ?", [stage]).fetchone()[0]

    def end_stage(self, run_id: int, counts: dict, error: str | None = None) -> None:
        self.con.execute(
            "UPDATE stage_runs SET status = ?, finished_at = now(), counts = ?, error = ? WHERE id = ?",
            ["failed" if error else "done", json.dumps(counts), error, run_id],
        )

    def last_stage_runs(self) -> dict[str, dict]:
        rows = self.con.execute(
            "SELECT stage, status, started_at, finished_at, counts, settings, error FROM stage_runs "
            "QUALIFY row_number() OVER (PARTITION BY stage ORDER BY id DESC) = 1"
        ).fetchall()
        out = {}
        for stage, status, started, finished, counts, settings, error in rows:
            out[stage] = {
                "status": "interrupted" if status == "running" else status,  # a live run, or one not yet marked
                "started_at": f"{started:%Y-%m-%d %H:%M:%S}",
                "finished_at": f"{finished:%Y-%m-%d %H:%M:%S}" if finished else None,
                "counts": json.loads(counts) if counts else {},
                "settings": json.loads(settings) if settings else {},
                "error": error,
            }
        return out


def _connect(db: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection, or a one-line StoreError naming the file and what to do."""
    try:
        return duckdb.connect(str(db), read_only=read_only)
    except duckdb.Error as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "lock" in first.lower():
            raise StoreError(
                f"{db}: the run store is open in another siqkit process; try again when it finishes"
            ) from None
        raise StoreError(f"{db}: cannot open the run store ({first}); if the file is damaged, "
                         "move it away and rerun, or choose another run.dir") from None


def store_fault(run_dir: Path, exc: BaseException) -> StoreError | None:
    """A one-line StoreError for a failure of the run store or its folder during a stage
    (a damaged file, a dropped table, a full disk, a read-only folder), or None when the
    exception is something else. The failed stage's transaction was rolled back."""
    db = run_dir / STORE_FILE
    if isinstance(exc, duckdb.Error):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreError(f"{db}: the run store failed ({first}); the stage's last transaction was rolled back: "
                          "free disk space or fix the file's permissions and rerun to resume, or move a damaged "
                          "store away and start again")
    if not isinstance(exc, OSError):
        return None
    name = exc.filename
    inside = isinstance(name, (str, os.PathLike)) and Path(os.path.abspath(name)).is_relative_to(run_dir.absolute())
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or (exc.errno in (errno.EACCES, errno.EPERM) and inside):
        return StoreError(f"{exc.filename or run_dir}: {exc.strerror}; free disk space or make the run folder "
                          "writable, then rerun the same command to resume")
    return None
