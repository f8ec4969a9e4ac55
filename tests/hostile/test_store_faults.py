"""The run store under faults: foreign and damaged files, dropped tables, killed stages,
a read-only folder; each ends in one ``error:`` line naming the file, never a traceback."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import duckdb
import pytest

from siqkit.errors import StoreError
from siqkit.store import DECODED, STORE_FILE, DecodedCache, MediaStore, Store
from tests.conftest import run_cli


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps({"question": f"q{i}", "answer": str(i)}) for i in range(5)))
    path = tmp_path / "r.yaml"
    path.write_text("run: {dir: run}\nseeds: {sources: [{name: s, type: jsonl, path: q.jsonl}]}\n")
    return path


def one_error_line(res, *needles: str) -> str:
    out = (res.stdout + res.stderr).strip().splitlines()
    errors = [line for line in out if line.startswith("error: ")]
    assert res.returncode == 1 and len(errors) == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_a_foreign_duckdb_file_is_refused_and_left_untouched(tmp_path, recipe):
    db = tmp_path / "run" / STORE_FILE
    db.parent.mkdir()
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE users (name VARCHAR); INSERT INTO users VALUES ('ada')")
    con.close()
    before, mtime = sha(db), db.stat().st_mtime_ns
    with pytest.raises(StoreError, match="not a siqkit run store .*it holds users.*left untouched"):
        Store.open(db.parent, create=True)
    res = run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path)
    one_error_line(res, "run/store.duckdb", "not a siqkit run store", "choose another run.dir")
    assert sha(db) == before and db.stat().st_mtime_ns == mtime
    assert not (db.parent / "media").exists()


def test_a_store_whose_meta_table_was_dropped_is_not_taken_over(tmp_path):
    store = Store.open(tmp_path / "run", create=True)
    store.con.execute("DROP TABLE meta")
    store.close()
    with pytest.raises(StoreError, match=r"no meta table; it holds .*curation.*and \d+ more"):
        Store.open(tmp_path / "run", create=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_store_file_is_one_line(tmp_path, recipe, damage):
    assert run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path).returncode == 0
    db = tmp_path / "run" / STORE_FILE
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 1000)
    else:
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    res = run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path)
    one_error_line(res, "run/store.duckdb")
    res = run_cli("inspect", "run", cwd=tmp_path)
    one_error_line(res)


def test_a_dropped_table_mid_run_is_one_line_and_a_rerun_recovers(tmp_path, recipe):
    assert run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path).returncode == 0
    db = tmp_path / "run" / STORE_FILE
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE quarantine RENAME TO quarantine_aside")
    con.close()
    (tmp_path / "q.jsonl").write_text("{\"question\": \"changed\"}\nnot json\n")  # the source changed
    res = run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path)
    one_error_line(res, "run/store.duckdb", "the run store failed", "quarantine", "rolled back")
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE quarantine_aside RENAME TO quarantine")
    assert con.execute("SELECT count(*) FROM seeds").fetchone()[0] == 5  # the old ingest, intact
    con.close()
    assert run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path).returncode == 0
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM seeds").fetchone()[0] == 1
    assert con.execute("SELECT status FROM stage_runs ORDER BY id").fetchall() == [("done",), ("failed",), ("done",)]
    con.close()


def test_a_killed_stage_is_marked_interrupted_by_the_next_run(tmp_path, recipe):
    assert run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path).returncode == 0
    store = Store.open(tmp_path / "run")
    store.begin_stage("generate", {})  # what a process killed mid-stage leaves behind
    store.close()
    assert run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path).returncode == 0
    con = duckdb.connect(str(tmp_path / "run" / STORE_FILE), read_only=True)
    rows = con.execute("SELECT stage, status, error FROM stage_runs ORDER BY id").fetchall()
    con.close()
    assert [r[:2] for r in rows] == [("seeds", "done"), ("generate", "interrupted"), ("seeds", "done")]
    assert "stopped before the stage finished" in rows[1][2]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission bits")
def test_a_read_only_run_folder_is_one_line(tmp_path, recipe):
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o555)
    try:
        res = run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path)
    finally:
        (tmp_path / "run").chmod(0o755)
    one_error_line(res, "run", "make it writable")


def test_the_decoded_image_cache_is_bounded_by_bytes(tmp_path):
    from PIL import Image
    import io

    media = MediaStore(tmp_path / "media")
    digests = []
    for i in range(6):  # six 600x600 RGB images: 1.08 MB each decoded
        buf = io.BytesIO()
        Image.new("RGB", (600, 600), (i * 40, 0, 0)).save(buf, "PNG")
        digests.append(media.put(buf.getvalue())[0])
    cache = DecodedCache(budget_bytes=3 * 600 * 600 * 3)
    for d in digests:
        cache.get(str(media.root), d)
    assert cache.used <= cache.budget and len(cache._items) == 3  # the three most recent
    assert cache.get(str(media.root), digests[-1]) is cache.get(str(media.root), digests[-1])  # a hit
    tiny = DecodedCache(budget_bytes=1000)
    assert tiny.get(str(media.root), digests[0]).size == (600, 600) and tiny.used == 0  # too big to keep
    assert DECODED.budget == 256 * 2**20


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs mounted at ``tmp_path/run`` (root only; skipped where mounting is not allowed),
    for a real full disk and a real read-only folder."""
    import subprocess

    mnt = tmp_path / "run"
    mnt.mkdir()

    def mount(*opts: str) -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(mnt)], check=True,
                       capture_output=True)

    def remount(*opts: str) -> None:
        subprocess.run(["mount", "-o", ",".join(("remount", *opts)), str(mnt)], check=True, capture_output=True)

    try:
        mount("size=4m")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield remount
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def noise_images(tmp_path: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):  # ~197 KB each
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(json.dumps({"question": f"q{i}", "image": f"img/{i}.png"}))
    (tmp_path / "q.jsonl").write_text("\n".join(rows))
    path = tmp_path / "r.yaml"
    path.write_text("run: {dir: run}\nseeds: {sources: [{name: s, type: images, path: q.jsonl}]}\n")
    return path


def test_a_full_disk_is_one_line_and_a_rerun_with_space_recovers(tmp_path, small_fs):
    recipe = noise_images(tmp_path, 40)  # ~8 MB of media for a 4 MB disk
    res = run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path)
    one_error_line(res, "No space left on device", "free disk space")
    small_fs("size=64m")
    assert run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path).returncode == 0
    con = duckdb.connect(str(tmp_path / "run" / STORE_FILE), read_only=True)
    assert con.execute("SELECT count(*) FROM seeds").fetchone()[0] == 40
    assert con.execute("SELECT status FROM stage_runs ORDER BY id").fetchall() == [("failed",), ("done",)]
    con.close()


def test_a_read_only_file_system_is_one_line(tmp_path, recipe, small_fs):
    assert run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path).returncode == 0
    small_fs("ro")
    res = run_cli("run", str(recipe), "--only", "seeds", cwd=tmp_path)
    one_error_line(res, "run/.lock", "Read-only file system", "make it writable")
