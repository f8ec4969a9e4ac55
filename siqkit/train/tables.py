"""The run-store tables of training and evaluation, and the functions that fill them.

:data:`TRAIN_SCHEMA` is created with ``CREATE TABLE IF NOT EXISTS`` on first use. Each
execution of the train stage appends its rows, tagged with the ``stage_runs`` id it ran
under (NULL when called outside a stage run), so earlier runs stay readable.
"""

from __future__ import annotations

import json
from typing import Any

TRAIN_SCHEMA = """
-- one row per curriculum stage (align, instruct, reason, ...) of a train run
CREATE TABLE IF NOT EXISTS train_stages (
    stage_run BIGINT, position INTEGER NOT NULL, stage VARCHAR NOT NULL,
    status VARCHAR NOT NULL, reason VARCHAR,                 -- done | skipped (and why)
    data VARCHAR, method VARCHAR, frozen VARCHAR[], quantization VARCHAR, precision VARCHAR,
    micro_batch INTEGER, grad_accum INTEGER, gradient_checkpointing BOOLEAN, plan_source VARCHAR,
    examples INTEGER, dropped JSON, steps INTEGER, tokens BIGINT, tokens_per_s DOUBLE,
    peak_memory_bytes BIGINT, first_loss DOUBLE, final_loss DOUBLE, resumed_from VARCHAR,
    input_model VARCHAR, adapter_dir VARCHAR, merged_dir VARCHAR, fingerprint VARCHAR);
-- one row per optimizer step
CREATE TABLE IF NOT EXISTS train_steps (
    stage_run BIGINT, stage VARCHAR NOT NULL, step INTEGER NOT NULL, loss DOUBLE, lr DOUBLE,
    grad_norm DOUBLE, tokens INTEGER, target_tokens INTEGER, seconds DOUBLE);
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

_STAGE_COLUMNS = [
    "stage_run", "position", "stage", "status", "reason", "data", "method", "frozen", "quantization", "precision",
    "micro_batch", "grad_accum", "gradient_checkpointing", "plan_source", "examples", "dropped", "steps", "tokens",
    "tokens_per_s", "peak_memory_bytes", "first_loss", "final_loss", "resumed_from", "input_model", "adapter_dir",
    "merged_dir", "fingerprint",
]
_STEP_COLUMNS = ["stage_run", "stage", "step", "loss", "lr", "grad_norm", "tokens", "target_tokens", "seconds"]
_EVAL_COLUMNS = ["stage_run", "after_stage", "model_dir", "seeds", "judged", "correct", "accuracy", "format_ok",
                 "mean_reasoning_tokens", "parse_status"]
_OUTPUT_COLUMNS = ["stage_run", "after_stage", "seed_id", "output", "reasoning", "answer", "parse_status",
                   "correct", "correct_detail", "reasoning_tokens", "task"]


def ensure_tables(store: Any) -> None:
    store.con.execute(TRAIN_SCHEMA)


def write_results(store: Any, summary: dict, stage_run: int | None = None) -> dict[str, int]:
    """Insert a :func:`~siqkit.train.curriculum.train_curriculum` summary; return row counts."""
    ensure_tables(store)
    stages, steps, evals, outputs = [], [], [], []
    for s in summary["stages"]:
        r = {**s, "stage_run": stage_run, "dropped": json.dumps(s.get("dropped") or {})}
        stages.append(tuple(r.get(c) for c in _STAGE_COLUMNS))
        for h in s.get("history") or []:
            steps.append(tuple({**h, "stage_run": stage_run, "stage": s["stage"]}.get(c) for c in _STEP_COLUMNS))
    for e in summary.get("evals") or []:
        r = {**e, "stage_run": stage_run, "after_stage": e["label"], "model_dir": e["model"],
             "parse_status": json.dumps(e["parse_status"])}
        evals.append(tuple(r.get(c) for c in _EVAL_COLUMNS))
        for o in e["rows"]:
            outputs.append(tuple({**o, "stage_run": stage_run, "after_stage": e["label"]}.get(c)
                                 for c in _OUTPUT_COLUMNS))
    with store.transaction():
        store.insert("train_stages", _STAGE_COLUMNS, stages)
        store.insert("train_steps", _STEP_COLUMNS, steps)
        store.insert("eval_runs", _EVAL_COLUMNS, evals)
        store.insert("eval_outputs", _OUTPUT_COLUMNS, outputs)
    return {"train_stages": len(stages), "train_steps": len(steps), "eval_runs": len(evals),
            "eval_outputs": len(outputs)}
