"""The train and export stages inside a recipe run, on a tiny student and a hand-made dataset."""

from __future__ import annotations

import json

import duckdb
import yaml

from tests.train.traces import write_traces


def test_train_then_export_in_a_run(cli, tmp_path):
    recipe = {
        "run": {"name": "te", "dir": "run"},
        "seeds": {"sources": [{"name": "digits", "type": "digits", "num_images": {"train": 4, "test": 4}}]},
        "student": {"arch": "qwen2_vl", "path": "${SIQ_TEST_STUDENT}"},
        "train": {"save_every": 2, "evaluate_before": False, "stages": [
            {"name": "align", "data": "caption", "freeze": ["vision", "language"], "evaluate": False},
            {"name": "instruct", "data": "answer", "freeze": ["vision"]},
            {"name": "reason", "data": "cot", "freeze": ["vision", "projector"], "answer_only_baseline": True}]},
        "eval": {"max_seeds": 3},
        "export": {"quant": "q8_0", "compare": ["q4_k_m"]},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    res = cli("run", "r.yaml", "--tiny", "--only", "seeds", "--set", "tiny.max_train_steps=2")
    assert res.returncode == 0, res.stderr
    res = cli("run", "r.yaml", "--tiny", "--only", "train")
    assert res.returncode == 1 and "run the curate stage first" in res.stderr
    write_traces(tmp_path / "run" / "datasets" / "curated", n=8)
    res = cli("run", "r.yaml", "--tiny", "--only", "train", "--set", "tiny.max_train_steps=2")
    assert res.returncode == 0, res.stderr
    res = cli("run", "r.yaml", "--tiny", "--only", "eval")  # reuses the train stage's evaluations
    assert res.returncode == 0, res.stderr
    table = (tmp_path / "run" / "eval" / "table.md").read_text()
    assert "before CoT distillation" in table and "CoT-distilled" in table and "answer-only" in table
    res = cli("run", "r.yaml", "--tiny", "--only", "export")
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(tmp_path / "run" / "store.duckdb"), read_only=True)
    try:
        stages = con.execute("SELECT stage, status, steps FROM train_stages ORDER BY position, rowid").fetchall()
        assert [s[0] for s in stages] == ["align", "instruct", "reason", "reason-answer-only"]
        assert all(s[1] == "done" and 1 <= s[2] <= 2 for s in stages), stages  # tiny.max_train_steps caps
        assert stages[2][2] == stages[3][2]  # the answer-only twin: the same steps
        runs = dict(con.execute("SELECT id, stage FROM stage_runs").fetchall())
        evals = [(runs[r], a, n) for r, a, n in con.execute(
            "SELECT stage_run, after_stage, seeds FROM eval_runs ORDER BY rowid").fetchall()]
        # train.evaluate_before and align's `evaluate: false` skip those passes, in both stages
        students = [("after-instruct", 3), ("after-reason", 3), ("after-reason-answer-only", 3)]
        assert evals == [("train", *e) for e in students] + [("eval", *e) for e in students] + [
            ("export", "gguf-q8_0", 3), ("export", "gguf-q4_k_m", 3)]
        # the eval stage reused the train stage's evaluations: identical outputs
        outputs = con.execute("""SELECT r.stage, o.after_stage, o.seed_id, o.output FROM eval_outputs o
                                 JOIN stage_runs r ON r.id = o.stage_run WHERE r.stage != 'export'""").fetchall()
        by_stage = {st: sorted(o[1:] for o in outputs if o[0] == st) for st in ("train", "eval")}
        assert by_stage["train"] == by_stage["eval"]
        held = {r[0] for r in con.execute("SELECT DISTINCT seed_id FROM eval_outputs").fetchall()}
        test_ids = {r[0] for r in con.execute("SELECT id FROM seeds WHERE split = 'test'").fetchall()}
        assert held <= test_ids
        export = json.loads(con.execute("SELECT counts FROM stage_runs WHERE stage = 'export'").fetchone()[0])
    finally:
        con.close()
    assert export["passed"] is True
    files = sorted(p.name for p in (tmp_path / "run" / "export").iterdir())
    assert "te.q8_0.gguf" in files and "te.mmproj-f16.gguf" in files and "Modelfile" in files
    assert "te.q4_k_m.gguf" in files and "te.q4_k_m.Modelfile" not in files  # compared, not shipped
    # the shipped file's verdict: agreement checks and the held-out accuracy drop against the
    # student it came from (the CoT-distilled one), overall and per task
    assert export["eval"]["label"] == "gguf-q8_0" and set(export["compare"]) == {"q4_k_m"}
    verdict = json.loads((tmp_path / "run" / "export" / "te.q8_0.gguf.export.json").read_text())["accuracy_drop"]
    assert set(verdict["measured"]) == {"overall", "task digits"} and verdict["max"] == 0.01
    assert export["verdict"]["passed"] == (verdict["passed"] and export["passed"])
    modelfile = (tmp_path / "run" / "export" / "Modelfile").read_text()
    assert "PARAMETER temperature 0\n" in modelfile and "PARAMETER repeat_penalty 1\n" in modelfile
    res = cli("report", "run")
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "run" / "report.html").read_text()
    for section in ("id=training", "id=export", "after-reason", "te.q8_0.gguf", 'alt="training loss"',
                    "id=evaluation", "exported q8_0 GGUF", 'alt="held-out accuracy"'):
        assert section in page
    table = (tmp_path / "run" / "eval" / "table.md").read_text()
    assert "| exported q8_0 GGUF |" in table and "| exported q4_k_m GGUF |" in table
    # Hub cards: the GGUF's, and each stage's merged model and adapter (peft's template replaced)
    from siqkit.export.cards import read_header

    assert read_header((tmp_path / "run" / "export" / "README.md").read_text())["library_name"] == "gguf"
    stages_dir = tmp_path / "run" / "train" / "stages"
    merged_cards = sorted(stages_dir.glob("*/merged/README.md"))
    adapter_cards = sorted(stages_dir.glob("*/adapter/README.md"))
    assert len(merged_cards) == 4 and adapter_cards
    for card in merged_cards + adapter_cards:
        meta = read_header(card.read_text())
        assert meta["license"] and "siqkit" in meta["tags"] and meta["pipeline_tag"] == "image-text-to-text", card
        assert meta["library_name"] == ("peft" if card.parent.name == "adapter" else "transformers")
        assert "Model Card for Model ID" not in card.read_text()
