"""Writing evaluations to the run store (:class:`~siqkit.records.EvalRun` and
:class:`~siqkit.records.EvalOutput` records, tables ``eval_runs`` and ``eval_outputs``).

Every stage that evaluates (train, eval, export) appends its rows, tagged with the ``stage_runs`` id it
ran under (NULL when called outside a stage run), so earlier evaluations stay readable;
:mod:`siqkit.evaluate.table` reads them back. An evaluation is a
:func:`~siqkit.evaluate.evaluate.evaluate_student` result: one ``eval_runs`` row, and one
``eval_outputs`` row per seed.
"""

from __future__ import annotations

from siqkit.records import EvalOutput, EvalRun, make
from siqkit.store import Store


def eval_records(evals: list[dict], stage_run: int | None = None) -> tuple[list[EvalRun], list[EvalOutput]]:
    """The rows of these evaluations: one :class:`EvalRun` each, one :class:`EvalOutput` per seed."""
    runs, outputs = [], []
    for e in evals:
        runs.append(make(EvalRun, {**e, "stage_run": stage_run, "after_stage": e["label"], "model_dir": e["model"]}))
        outputs += [make(EvalOutput, {**o, "stage_run": stage_run, "after_stage": e["label"]}) for o in e["rows"]]
    return runs, outputs


def insert_evals(store: Store, evals: list[dict], stage_run: int | None = None) -> dict[str, int]:
    """Insert evaluations inside the caller's transaction; return row counts."""
    runs, outputs = eval_records(evals, stage_run)
    store.write(runs)
    store.write(outputs)
    return {"eval_runs": len(runs), "eval_outputs": len(outputs)}


def write_evals(store: Store, evals: list[dict], stage_run: int | None = None) -> dict[str, int]:
    """Store evaluations, all or nothing; return row counts."""
    with store.transaction():
        return insert_evals(store, evals, stage_run)
