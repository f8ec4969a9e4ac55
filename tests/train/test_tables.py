"""A train summary in the store: its stages and steps, and its evaluations, all or nothing."""

from __future__ import annotations

import duckdb
import pytest

from siqkit.store import Store
from siqkit.train.tables import write_results


def _summary(outputs: list[dict]) -> dict:
    stages = [{"position": 1, "stage": "reason", "status": "done", "data": "cot", "dropped": {"too long": 2},
               "steps": 2, "history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]}]
    evals = [{"label": "after-reason", "model": "/m/reason", "seeds": len(outputs), "judged": len(outputs),
              "correct": 1, "accuracy": 0.5, "format_ok": 1.0, "mean_reasoning_tokens": 4.0,
              "parse_status": {"ok": len(outputs)}, "rows": outputs}]
    return {"stages": stages, "evals": evals}


def _row(seed_id: str | None, correct: bool) -> dict:
    return {"seed_id": seed_id, "task": "digits", "output": "o", "reasoning": "r", "answer": "a",
            "parse_status": "ok", "correct": correct, "correct_detail": None, "reasoning_tokens": 4}


def test_training_and_evaluation_rows_in_one_transaction(tmp_path):
    store = Store.open(tmp_path / "run", create=True)
    try:
        counts = write_results(store, _summary([_row("s1", True), _row("s2", False)]), 7)
        assert counts == {"train_stages": 1, "train_steps": 2, "eval_runs": 1, "eval_outputs": 2}
        q = store.con.execute
        assert q("SELECT stage_run, stage, dropped FROM train_stages").fetchall() == [(7, "reason", '{"too long": 2}')]
        assert q("SELECT stage, step, loss FROM train_steps ORDER BY step").fetchall() == [
            ("reason", 1, 2.0), ("reason", 2, 1.5)]
        assert q("SELECT stage_run, after_stage, model_dir, parse_status FROM eval_runs").fetchall() == [
            (7, "after-reason", "/m/reason", '{"ok": 2}')]
        assert q("SELECT after_stage, seed_id, correct, task FROM eval_outputs ORDER BY seed_id").fetchall() == [
            ("after-reason", "s1", True, "digits"), ("after-reason", "s2", False, "digits")]

        # an evaluation row the store refuses (no seed id) leaves no training row behind either
        with pytest.raises(duckdb.Error):
            write_results(store, _summary([_row("s3", True), _row(None, True)]), 8)
        assert q("SELECT count(*) FROM train_stages WHERE stage_run = 8").fetchone()[0] == 0
        assert q("SELECT count(*) FROM eval_runs WHERE stage_run = 8").fetchone()[0] == 0
    finally:
        store.close()
