"""The run-store tables of training, and the function that writes a train run's summary.

:data:`TRAIN_SCHEMA` is created with ``CREATE TABLE IF NOT EXISTS`` on first use. Each
execution of the train stage appends its rows, tagged with the ``stage_runs`` id it ran
under (NULL when called outside a stage run), so earlier runs stay readable. The
evaluations the train stage makes go to evaluation's own tables
(:mod:`siqkit.evaluate.tables`), in the same transaction as the training rows.
"""

from __future__ import annotations

import json
from typing import Any

from siqkit.evaluate import tables as eval_tables

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
"""

_STAGE_COLUMNS = [
    "stage_run", "position", "stage", "status", "reason", "data", "method", "frozen", "quantization", "precision",
    "micro_batch", "grad_accum", "gradient_checkpointing", "plan_source", "examples", "dropped", "steps", "tokens",
    "tokens_per_s", "peak_memory_bytes", "first_loss", "final_loss", "resumed_from", "input_model", "adapter_dir",
    "merged_dir", "fingerprint",
]
_STEP_COLUMNS = ["stage_run", "stage", "step", "loss", "lr", "grad_norm", "tokens", "target_tokens", "seconds"]


def ensure_tables(store: Any) -> None:
    store.con.execute(TRAIN_SCHEMA)


def insert_training(store: Any, stages: list[dict], stage_run: int | None = None) -> dict[str, int]:
    """Insert a summary's stages and their steps into the existing tables, inside the caller's
    transaction; return row counts."""
    stage_rows, steps = [], []
    for s in stages:
        r = {**s, "stage_run": stage_run, "dropped": json.dumps(s.get("dropped") or {})}
        stage_rows.append(tuple(r.get(c) for c in _STAGE_COLUMNS))
        for h in s.get("history") or []:
            steps.append(tuple({**h, "stage_run": stage_run, "stage": s["stage"]}.get(c) for c in _STEP_COLUMNS))
    store.insert("train_stages", _STAGE_COLUMNS, stage_rows)
    store.insert("train_steps", _STEP_COLUMNS, steps)
    return {"train_stages": len(stage_rows), "train_steps": len(steps)}


def write_results(store: Any, summary: dict, stage_run: int | None = None) -> dict[str, int]:
    """Insert a :func:`~siqkit.train.curriculum.train_curriculum` summary, its stages and steps
    and its evaluations (:mod:`siqkit.evaluate.tables`), all or nothing; return row counts."""
    ensure_tables(store)
    eval_tables.ensure_tables(store)
    with store.transaction():
        counts = insert_training(store, summary["stages"], stage_run)
        counts.update(eval_tables.insert_evals(store, summary.get("evals") or [], stage_run))
    return counts
