"""The run store: schema version check, content-addressed media, the run lock, transactions."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from siqkit.errors import StoreError
from siqkit.store import SCHEMA_VERSION, RunLock, Store


def png(color=(255, 0, 0), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_create_then_reopen(tmp_path):
    s = Store.open(tmp_path / "run", create=True)
    assert s.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    s.close()
    s = Store.open(tmp_path / "run", read_only=True)
    s.close()


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no run store here"):
        Store.open(tmp_path / "nothing")


def test_schema_version_mismatch_is_refused(tmp_path):
    s = Store.open(tmp_path / "run", create=True)
    s.con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    s.close()
    with pytest.raises(StoreError, match=f"schema version 999, but this siqkit .* reads version {SCHEMA_VERSION}"):
        Store.open(tmp_path / "run")


def test_media_is_stored_once_by_content(tmp_path):
    s = Store.open(tmp_path / "run", create=True)
    h1, fmt, w, h = s.media.put(png())
    h2, *_ = s.media.put(png())
    h3, *_ = s.media.put(png((0, 0, 255)))
    assert h1 == h2 != h3
    assert (fmt, w, h) == ("png", 8, 8)
    files = sorted(p.name for p in (tmp_path / "run" / "media").rglob("*.png"))
    assert files == sorted({f"{h1}.png", f"{h3}.png"})
    assert s.media.path(h1, "png").read_bytes() == png()
    s.close()


def test_images_larger_than_max_pixels_are_downscaled_keeping_their_shape(tmp_path):
    s = Store.open(tmp_path / "run", create=True)
    wide, *_ = s.media.put(png(size=(400, 100)))
    small, *_ = s.media.put(png(size=(20, 10)))
    assert s.media.image(wide).size == (400, 100)
    assert s.media.image(wide, max_pixels=10_000).size == (200, 50)
    assert s.media.image(small, max_pixels=10_000).size == (20, 10)
    assert s.media.image(wide).size == (400, 100)  # the stored image is untouched
    s.close()


def test_transaction_rolls_back_on_error(tmp_path):
    s = Store.open(tmp_path / "run", create=True)
    with pytest.raises(RuntimeError):
        with s.transaction() as con:
            con.execute("INSERT INTO drops VALUES ('seeds', 'x', 's', 'r', '')")
            raise RuntimeError("boom")
    assert s.con.execute("SELECT count(*) FROM drops").fetchone()[0] == 0
    s.close()


def test_stage_runs_record_settings_and_counts(tmp_path):
    s = Store.open(tmp_path / "run", create=True)
    rid = s.begin_stage("seeds", {"seed": 3})
    assert s.last_stage_runs()["seeds"]["status"] == "interrupted"
    s.end_stage(rid, {"stored": 5})
    runs = s.last_stage_runs()
    assert runs["seeds"]["status"] == "done"
    assert runs["seeds"]["counts"] == {"stored": 5}
    assert runs["seeds"]["settings"] == {"seed": 3}
    s.close()


def test_lock_refuses_a_second_process_and_is_released_on_death(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from siqkit.store import RunLock
            lock = RunLock(Path({str(run_dir)!r}))
            lock.acquire("siqkit run test.yaml")
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=r"run folder is in use by pid \d+ since .*siqkit run test.yaml"):
            RunLock(run_dir).acquire("siqkit run again")
    finally:
        holder.kill()  # like kill -9: the OS drops the flock
        holder.wait()
    lock = RunLock(run_dir)
    lock.acquire("siqkit run again")
    lock.release()
