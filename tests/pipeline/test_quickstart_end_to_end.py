"""The README's main job, end to end: ``siqkit run recipes/quickstart.yaml`` in a fresh folder.

Slow (about 8 minutes on 2 CPU cores), so it is marked ``slow``: ``.ci/run`` runs it after
the default suite (``python -m pytest -m slow``). It checks what the quickstart promises a
user: every stage finishes, the held-out table is printed, the exported q4_k_m GGUF and its
mmproj are written and checked (f16 must match exactly), the table has every row, and the
CoT-distilled student beats the student before CoT distillation.
"""

from __future__ import annotations

import json
import time

import duckdb
import pytest

from siqkit import STAGES
from tests.conftest import REPO, run_cli


@pytest.mark.slow
def test_quickstart_runs_every_stage_and_cot_distillation_helps(tmp_path):
    t0 = time.perf_counter()
    res = run_cli("run", str(REPO / "recipes" / "quickstart.yaml"), cwd=tmp_path, timeout=3600)
    minutes = (time.perf_counter() - t0) / 60
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"quickstart: {minutes:.1f} minutes")  # the figure the README quotes; not asserted
    assert "held-out accuracy" in res.stdout and "CoT-distilled" in res.stdout
    run = tmp_path / "runs" / "quickstart"
    con = duckdb.connect(str(run / "store.duckdb"), read_only=True)
    try:
        status = dict(con.execute(
            "SELECT stage, status FROM stage_runs WHERE id IN (SELECT max(id) FROM stage_runs GROUP BY stage)"
        ).fetchall())
        export = json.loads(con.execute(
            "SELECT counts FROM stage_runs WHERE stage = 'export' ORDER BY id DESC LIMIT 1").fetchone()[0])
    finally:
        con.close()
    assert status == {stage: "done" for stage in STAGES}
    assert export["files"]  # f16 matched (otherwise the stage fails); the q4_k_m bar may warn
    files = {p.name for p in (run / "export").iterdir()}
    assert {"quickstart.q4_k_m.gguf", "quickstart.mmproj-f16.gguf", "Modelfile"} <= files
    rows = {r["label"]: r for r in json.loads((run / "eval" / "table.json").read_text())}
    before = next(r for r in rows.values() if r["what"].endswith("before CoT distillation"))
    cot = next(r for r in rows.values() if r["what"].endswith("CoT-distilled"))
    assert rows["after-reason-answer-only"]["judged"] == cot["judged"] == before["judged"] >= 100
    assert rows["gguf-q4_k_m"]["judged"] == cot["judged"]
    report = run_cli("report", str(run), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (run / "report.html").read_text()
    assert "id=evaluation" in page and "its vision tower learned to predict the caption words" in page
    assert cot["accuracy"] > before["accuracy"], (
        f"CoT-distilled student {cot['accuracy']:.1%} does not beat the student before CoT "
        f"distillation {before['accuracy']:.1%}")
