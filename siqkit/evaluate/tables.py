"""The run-store tables of evaluation, and the functions that fill them.

:data:`EVAL_SCHEMA` is created with ``CREATE TABLE IF NOT EXISTS`` on first use. Every stage
that evaluates (train, eval, export) appends its rows, tagged with the ``stage_runs`` id it
ran under (NULL when called outside a stage run), so earlier evaluations stay readable;
:mod:`siqkit.evaluate.table` reads them back. An evaluation is a
:func:`~siqkit.evaluate.evaluate.evaluate_student` result: one ``eval_runs`` row, and one
``eval_outputs`` row per seed.
"""

from __future__ import annotations

import json
from typing import Any

EVAL_SCHEMA = """
-- one row per evaluation of the student: before training and after each stage
CREATE TABLE IF NOT EXISTS eval_runs (
    stage_run BIGINT, after_stage VARCHAR NOT NULL, model_dir VARCHAR, seeds INTEGER, judged INTEGER,
    correct INTEGER, accuracy DOUBLE, format_ok DOUBLE, mean_reasoning_tokens DOUBLE, parse_status JSON);
-- the student's output for each held-out seed in each evaluation
CREATE TABLE IF NOT EXISTS eval_outputs (
    stage_run BIGINT, after_stage VARCHAR NOT NULL, seed_id VARCHAR NOT NULL, output VARCHAR,
    reasoning VARCHAR, answer VARCHAR, parse_status VARCHAR, correct BOOLEAN, correct_detail VARCHAR,
    reasoning_tokens INTEGER, task VARCHAR);
-- a store written before per-task evaluation gets the column (NULL for its old rows)
ALTER TABLE eval_outputs ADD COLUMN IF NOT EXISTS task VARCHAR;
"""

_EVAL_COLUMNS = ["stage_run", "after_stage", "model_dir", "seeds", "judged", "correct", "accuracy", "format_ok",
                 "mean_reasoning_tokens", "parse_status"]
_OUTPUT_COLUMNS = ["stage_run", "after_stage", "seed_id", "output", "reasoning", "answer", "parse_status",
                   "correct", "correct_detail", "reasoning_tokens", "task"]


def ensure_tables(store: Any) -> None:
    store.con.execute(EVAL_SCHEMA)


def insert_evals(store: Any, evals: list[dict], stage_run: int | None = None) -> dict[str, int]:
    """Insert evaluations into the existing tables, inside the caller's transaction; return row counts."""
    runs, outputs = [], []
    for e in evals:
        r = {**e, "stage_run": stage_run, "after_stage": e["label"], "model_dir": e["model"],
             "parse_status": json.dumps(e["parse_status"])}
        runs.append(tuple(r.get(c) for c in _EVAL_COLUMNS))
        for o in e["rows"]:
            outputs.append(tuple({**o, "stage_run": stage_run, "after_stage": e["label"]}.get(c)
                                 for c in _OUTPUT_COLUMNS))
    store.insert("eval_runs", _EVAL_COLUMNS, runs)
    store.insert("eval_outputs", _OUTPUT_COLUMNS, outputs)
    return {"eval_runs": len(runs), "eval_outputs": len(outputs)}


def write_evals(store: Any, evals: list[dict], stage_run: int | None = None) -> dict[str, int]:
    """Store evaluations (all or nothing), creating the tables if needed; return row counts."""
    ensure_tables(store)
    with store.transaction():
        return insert_evals(store, evals, stage_run)
