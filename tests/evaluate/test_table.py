"""The evaluation table: students by what they are, teachers on the same seeds, the GGUF row."""

from __future__ import annotations

import shutil

from siqkit.evaluate.table import eval_table, markdown
from siqkit.evaluate.tables import write_evals
from siqkit.store import Store
from siqkit.train.tables import write_results


TASKS: dict[str, str] = {}  # seed id -> task, filled by the test


def _eval(label: str, seeds: list[str], correct: set[str]) -> dict:
    rows = [{"seed_id": s, "output": "x", "reasoning": None, "answer": "x", "parse_status": "no_reasoning",
             "correct": s in correct, "correct_detail": "", "reasoning_tokens": 0, "task": TASKS.get(s)}
            for s in seeds]
    return {"label": label, "model": f"/m/{label}", "seeds": len(seeds), "judged": len(seeds),
            "correct": len(correct), "accuracy": len(correct) / len(seeds), "format_ok": 0.0,
            "mean_reasoning_tokens": 0.0, "parse_status": {"no_reasoning": len(seeds)}, "rows": rows}


def test_rows_name_what_each_model_is_and_teachers_use_the_same_seeds(quickstart, tmp_path):
    # a copy of the quickstart's store (real generations and annotations) with student evaluations added
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(quickstart["run_dir"] / "store.duckdb", run / "store.duckdb")
    store = Store.open(run)
    try:
        picked = store.con.execute(
            "SELECT id, source FROM seeds WHERE split = 'test' AND selected ORDER BY id LIMIT 40").fetchall()
        seeds = [sid for sid, _ in picked]
        TASKS.update(picked)
        train_run = store.begin_stage("train", {})
        stages = [{"position": i, "stage": name, "status": "done", "data": data}
                  for i, (name, data) in enumerate([("align", "caption"), ("instruct", "answer"), ("reason", "cot"),
                                                    ("reason-answer-only", "answer")], 1)]
        evals = [_eval("before", seeds, set()), _eval("after-align", seeds, set(seeds[:2])),
                 _eval("after-instruct", seeds, set(seeds[:10])), _eval("after-reason", seeds, set(seeds[:20])),
                 _eval("after-reason-answer-only", seeds, set(seeds[:15]))]
        write_results(store, {"stages": stages, "evals": evals}, train_run)
        store.end_stage(train_run, {})
        export_run = store.begin_stage("export", {})
        write_evals(store, [_eval("gguf-q4_k_m", seeds, set(seeds[:19]))], export_run)
        store.end_stage(export_run, {})

        rows = eval_table(store)
        expected = {}
        for teacher, n_seeds, judged, correct in store.con.execute(
                """SELECT g.teacher, count(DISTINCT g.seed_id), count(a.correct), count(*) FILTER (WHERE a.correct)
                   FROM generations g JOIN annotations a USING (key) WHERE list_contains(?, g.seed_id)
                   GROUP BY 1""", [seeds]).fetchall():
            expected[f"teacher {teacher}"] = (n_seeds, judged, correct)
    finally:
        store.close()

    by_model = {r["model"]: r for r in rows}
    assert [r["model"] for r in rows] == [
        "student before", "student after-align", "student after-instruct", "student after-reason",
        "student after-reason-answer-only", *sorted(expected), "exported q4_k_m GGUF"]
    assert by_model["student after-instruct"]["what"].endswith("before CoT distillation")
    assert by_model["student after-reason"]["what"].endswith("CoT-distilled")
    assert "same rows and steps as reason" in by_model["student after-reason-answer-only"]["what"]
    assert by_model["student after-reason"]["accuracy"] == 0.5
    assert by_model["exported q4_k_m GGUF"]["correct"] == 19
    assert sum(v[0] for v in expected.values()) == 40  # routing "first": each seed to one teacher
    for name, (n_seeds, judged, correct) in expected.items():
        r = by_model[name]
        assert (r["seeds"], r["judged"], r["correct"]) == (n_seeds, judged, correct)
        assert r["accuracy"] == correct / judged
    # per task: the seeds' sources here; every row is split over the same tasks
    tasks = sorted(set(TASKS[s] for s in seeds))
    reason = by_model["student after-reason"]["tasks"]
    assert sorted(reason) == tasks and sum(t["seeds"] for t in reason.values()) == 40
    for task, t in reason.items():
        mine = [s for s in seeds if TASKS[s] == task]
        assert (t["judged"], t["correct"]) == (len(mine), len(set(mine) & set(seeds[:20])))
    for name, (n_seeds, judged, correct) in expected.items():
        per = by_model[name]["tasks"]
        assert sum(t["seeds"] for t in per.values()) == n_seeds and sum(t["correct"] for t in per.values()) == correct
    text = markdown(rows)
    assert text.splitlines()[0] == ("| model | what | " + " | ".join(tasks)
                                    + " | overall | correct / judged | format ok | reasoning tokens |")
    cells = [f"{t['accuracy']:.1%} ({t['correct']}/{t['judged']})" for t in (reason[k] for k in tasks)]
    assert f"| student after-reason | after reason (cot); CoT-distilled | {' | '.join(cells)} | 50.0% | 20 / 40 |" in text


def test_empty_without_evaluations(tmp_path):
    store = Store.open(tmp_path / "run", create=True)
    try:
        assert eval_table(store) == []
    finally:
        store.close()
