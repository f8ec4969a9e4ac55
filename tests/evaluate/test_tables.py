"""Evaluations in the store: one ``eval_runs`` row each, one ``eval_outputs`` row per seed."""

from __future__ import annotations

from siqkit.evaluate.tables import write_evals
from siqkit.store import Store


def test_evaluations_are_stored_under_their_stage_run(tmp_path):
    rows = [{"seed_id": f"s{i}", "task": "shapes", "question": "q", "gold": "red", "output": "<think>\nr\n</think>\n\nred",
             "reasoning": "r", "answer": "red", "parse_status": "ok", "correct": i == 0, "correct_detail": "exact",
             "reasoning_tokens": 1, "teacher_trace": None, "finish_reason": "stop"} for i in range(2)]
    result = {"label": "gguf-q8_0", "model": "/x/te.q8_0.gguf", "seeds": 2, "judged": 2, "correct": 1,
              "accuracy": 0.5, "format_ok": 1.0, "mean_reasoning_tokens": 1.0, "parse_status": {"ok": 2},
              "tasks": {}, "rows": rows}
    store = Store.open(tmp_path / "run", create=True)
    try:
        assert write_evals(store, [result], 3) == {"eval_runs": 1, "eval_outputs": 2}
        assert write_evals(store, [], 4) == {"eval_runs": 0, "eval_outputs": 0}
        q = store.con.execute
        assert q("SELECT * FROM eval_runs").fetchall() == [
            (3, "gguf-q8_0", "/x/te.q8_0.gguf", 2, 2, 1, 0.5, 1.0, 1.0, '{"ok": 2}')]
        assert q("SELECT stage_run, after_stage, seed_id, answer, correct, correct_detail, task FROM eval_outputs "
                 "ORDER BY seed_id").fetchall() == [(3, "gguf-q8_0", "s0", "red", True, "exact", "shapes"),
                                                    (3, "gguf-q8_0", "s1", "red", False, "exact", "shapes")]
        assert q("SELECT count(*) FROM train_stages").fetchone()[0] == 0  # evaluation writes only its own tables
    finally:
        store.close()
