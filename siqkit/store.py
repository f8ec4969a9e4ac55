"""The run store: one DuckDB file per run folder, content-addressed media, and the run lock.

Every stage reads its inputs from here and writes its outputs back, with lineage. The
tables are defined once, by the table records of :mod:`siqkit.records` (:data:`SCHEMA` is
derived from them) and created together when the store is. :data:`SCHEMA_VERSION` is
written into the file and checked every time it is opened: a store of an older version is
upgraded in place by the steps of :data:`MIGRATIONS` when it is opened for writing (a
read-only open, such as ``siqkit inspect``, says to run ``siqkit upgrade``), and a store of
a newer or unknown version is refused instead of misread. A DuckDB file
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
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb
import pyarrow as pa
from PIL import Image

from siqkit import __version__
from siqkit.errors import StoreError
from siqkit.records import TABLES, Record, schema_ddl

log = logging.getLogger("siqkit.store")
R = TypeVar("R", bound=Record)

SCHEMA_VERSION = 2
STORE_FILE = "store.duckdb"
SCHEMA = schema_ddl()
"""The DDL of every table, derived from the table records of :mod:`siqkit.records`."""


def _v1_to_v2(con: duckdb.DuckDBPyConnection) -> None:
    """Version 1 created the training and evaluation tables on first use (some stores lack
    them, or ``eval_outputs.task``) and the curation tables only from the curate stage."""
    con.execute(SCHEMA)
    con.execute("ALTER TABLE eval_outputs ADD COLUMN IF NOT EXISTS task VARCHAR")


MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {1: _v1_to_v2}
"""``MIGRATIONS[v]`` upgrades a store of version ``v`` to ``v + 1``, in place."""


def seeded_hash(column: str) -> str:
    """The SQL of a seeded, deterministic hash of ``column`` (bind the recipe seed to its ``?``):
    ordering by it is how every stage samples rows reproducibly, independent of row order."""
    return f"md5(CAST(? AS VARCHAR) || ':' || {column})"


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
        try:
            store._check_schema(create=not read_only)
        except BaseException:
            store.close()  # a refused store is not left open
            raise
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
        """Whether the store has table ``name``."""
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])

    def _check_schema(self, create: bool) -> None:
        db = self.run_dir / STORE_FILE
        if self.has_table("meta"):
            row = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row and str(row[0]).isdigit() else None
            if found == SCHEMA_VERSION:
                return
            if found is not None and found < SCHEMA_VERSION and all(v in MIGRATIONS for v in range(found, SCHEMA_VERSION)):
                if not create:  # read-only
                    raise StoreError(f"{db}: run store schema version {found}, older than this siqkit's "
                                     f"{SCHEMA_VERSION}; upgrade it in place with `siqkit upgrade {self.run_dir}` "
                                     "(any `siqkit run` on it does too)")
                self._migrate(found)
                return
            raise StoreError(
                f"{db}: run store schema version {found}, but this siqkit ({__version__}) reads version "
                f"{SCHEMA_VERSION}; use a matching siqkit or a new run folder"
            )
        elif create:
            self.con.execute(SCHEMA)
            self.con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created_by', ?), ('created_at', ?)",
                [str(SCHEMA_VERSION), f"siqkit {__version__}", time.strftime("%Y-%m-%dT%H:%M:%S")],
            )
        else:
            raise StoreError(f"{db}: not a siqkit run store (no meta table)")

    def _migrate(self, found: int) -> None:
        """Upgrade the store from version ``found``, all steps in one transaction; then check
        every table has its record's columns, in order."""
        with self.transaction() as con:
            for v in range(found, SCHEMA_VERSION):
                MIGRATIONS[v](con)
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
            con.execute("INSERT OR REPLACE INTO meta VALUES ('upgraded_by', ?)", [f"siqkit {__version__}"])
            for table in TABLES:
                have = [r[0] for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "ORDER BY ordinal_position", [table.TABLE]).fetchall()]
                if have != table.columns():
                    raise StoreError(f"{self.run_dir / STORE_FILE}: cannot upgrade the run store from version "
                                     f"{found}: table {table.TABLE} has columns {have}, expected "
                                     f"{table.columns()}; it was left as it was: use a new run folder")
        log.info("upgraded the run store %s from schema version %d to %d", self.run_dir, found, SCHEMA_VERSION)

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
            try:
                self.con.unregister("_insert_rows")
            except duckdb.Error:  # a failed insert aborted the transaction: let its own error through
                pass

    def write(self, records: Sequence[Record], mode: str = "INSERT") -> None:
        """Insert records of one table (see :meth:`insert` for ``mode``)."""
        if records:
            cls = type(records[0])
            self.insert(cls.TABLE, cls.columns(), [r.row() for r in records], mode)

    def read(self, cls: type[R], where: str = "", params: Sequence = ()) -> list[R]:
        """The records of ``cls``'s table matching the SQL ``where`` clause (all when empty)."""
        sql = f"SELECT {cls.select()} FROM {cls.TABLE}" + (f" WHERE {where}" if where else "")
        return cls.from_rows(self.con.execute(sql, list(params)).fetchall())

    # -- stage bookkeeping -------------------------------------------------------------

    def begin_stage(self, stage: str, settings: dict) -> int:
        return self.con.execute(
            "INSERT INTO stage_runs (stage, status, started_at, settings, siqkit_version) "
            "VALUES (?, 'running', now(), ?, ?) RETURNING id",
            [stage, json.dumps(settings, default=str), __version__],
        ).fetchone()[0]

    def current_run(self, stage: str) -> int | None:
        """The id of ``stage``'s newest run: inside a stage, the run in progress."""
        return self.con.execute("SELECT max(id) FROM stage_runs WHERE stage = ?", [stage]).fetchall()[0][0]

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
