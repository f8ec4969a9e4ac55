"""Writing a train run's summary to the run store (:class:`~siqkit.records.TrainStage` and
:class:`~siqkit.records.TrainStep` records, tables ``train_stages`` and ``train_steps``).

Each execution of the train stage appends its rows, tagged with the ``stage_runs`` id it ran
under (NULL when called outside a stage run), so earlier runs stay readable. The
evaluations the train stage makes go to evaluation's own tables
(:mod:`siqkit.evaluate.tables`), in the same transaction as the training rows.
"""

from __future__ import annotations

from siqkit.evaluate import tables as eval_tables
from siqkit.records import TrainStage, TrainStep, make
from siqkit.store import Store


def insert_training(store: Store, stages: list[dict], stage_run: int | None = None) -> dict[str, int]:
    """Insert a summary's stages and their steps inside the caller's transaction; return row counts."""
    stage_rows, steps = [], []
    for s in stages:
        stage_rows.append(make(TrainStage, {**s, "stage_run": stage_run, "dropped": s.get("dropped") or {}}))
        steps += [make(TrainStep, {**h, "stage_run": stage_run, "stage": s["stage"]}) for h in s.get("history") or []]
    store.write(stage_rows)
    store.write(steps)
    return {"train_stages": len(stage_rows), "train_steps": len(steps)}


def write_results(store: Store, summary: dict, stage_run: int | None = None) -> dict[str, int]:
    """Insert a :func:`~siqkit.train.curriculum.train_curriculum` summary, its stages and steps
    and its evaluations (:mod:`siqkit.evaluate.tables`), all or nothing; return row counts."""
    with store.transaction():
        counts = insert_training(store, summary["stages"], stage_run)
        counts.update(eval_tables.insert_evals(store, summary.get("evals") or [], stage_run))
    return counts
