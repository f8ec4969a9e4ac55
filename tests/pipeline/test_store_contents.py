"""The run store's contents for a capped quickstart recipe stay what they were.

``data/store_digest.json`` holds, for every table the seeds, generate, annotate and curate
stages write, its row count and a digest of each column's sorted values (the curated
export's rows too). The test runs the same capped recipe and compares every column the
fixture names: a refactor must leave them equal, and a new column does not disturb the
old ones. Volatile columns (wall times, timestamps, stage-run ids, the siqkit version) are
left out, and the run folder's path reads ``RUN_DIR``. When a change is meant to alter the store, rewrite the fixture with
``python -m tests.pipeline.test_store_contents RUN_DIR`` (it runs the recipe there and prints
the JSON) and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("data") / "store_digest.json"
CAPS = ["--set", "seeds.sources[0].max=150", "--set", "seeds.sources[1].num_images={train: 200, test: 60}",
        "--no-report"]
VOLATILE = {"created_at", "seconds", "started_at", "finished_at", "siqkit_version", "stage_run"}
BOOKKEEPING = {"meta", "stage_runs", "teacher_runs", "source_runs"}


def run_capped(run_dir: Path) -> None:
    for stage in ("seeds", "generate", "annotate", "curate"):
        subprocess.run([sys.executable, "-m", "siqkit", "run", str(ROOT / "recipes" / "quickstart.yaml"),
                        "--only", stage, "--set", f"run.dir={run_dir}", *CAPS],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def store_digest(run_dir: Path) -> dict[str, object]:
    con = duckdb.connect(str(run_dir / "store.duckdb"), read_only=True)
    out: dict[str, object] = {}
    try:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall() if t not in BOOKKEEPING]
        for t in tables:
            columns = [c for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [t]).fetchall()]
            for c in columns:
                if c in VOLATILE:
                    continue
                values = sorted(json.dumps(v, default=str, sort_keys=True).replace(str(run_dir), "RUN_DIR")
                                for (v,) in con.execute(f'SELECT "{c}" FROM {t}').fetchall())
                out[f"{t}.{c}"] = hashlib.sha256("\n".join(values).encode()).hexdigest()[:16]
            out[f"{t}#rows"] = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    finally:
        con.close()
    rows = [json.loads(line) for line in (run_dir / "datasets" / "curated" / "data.jsonl").read_text().splitlines()]
    for r in rows:
        r["images"] = [Path(p).name for p in r["images"]]  # absolute paths differ between runs
    out["datasets/curated/data.jsonl"] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    return out


def test_capped_quickstart_store_is_unchanged(tmp_path):
    run_capped(tmp_path / "run")
    got = store_digest(tmp_path / "run")
    want = json.loads(FIXTURE.read_text())
    differ = {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v}
    assert not differ, f"store contents changed (fixture, now): {differ}"


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve()
    run_capped(target)
    print(json.dumps(store_digest(target), indent=1, sort_keys=True))
