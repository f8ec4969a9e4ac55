"""The ``eval`` stage of a recipe run: every student checkpoint on the held-out seeds, and the table.

The evaluate package owns evaluation: which seeds are held out
(:mod:`siqkit.evaluate.heldout`), evaluating a checkpoint on them
(:mod:`siqkit.evaluate.evaluate`), the store's ``eval_runs``/``eval_outputs``
(:mod:`siqkit.evaluate.tables`) and the table that compares every model
(:mod:`siqkit.evaluate.table`). The train and export stages call it; it imports nothing from them.

This stage evaluates the train stage's checkpoints (the student before training and after
each stage, answer-only twins included, as far as ``train.evaluate_before`` and each
stage's ``evaluate`` ask; ``RUN_DIR/train/summary.json``) on the held-out seeds
(``eval.splits``, a deterministic sample of ``eval.per_task`` per task), with the
``train.eval_*`` settings. An evaluation the train stage already made with the same model,
seeds and settings is reused, so after a normal run this stage costs nothing; with more
seeds (``--set eval.per_task=500 --only eval``) it measures again without retraining.
Results go to ``eval_runs``/``eval_outputs``, and the table of
:func:`siqkit.evaluate.table.eval_table` (students, teachers on the same seeds, the
exported GGUF once exported) to ``RUN_DIR/eval/table.md`` and ``table.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from siqkit.errors import SiqkitError
from siqkit.store import Store

if TYPE_CHECKING:
    from siqkit.recipe import Recipe

log = logging.getLogger("siqkit.eval")


def write_table(store: Store, run_dir: Path) -> list[dict]:
    """Write ``RUN_DIR/eval/table.{md,json}`` from the store; return the rows."""
    from siqkit.evaluate.table import eval_table, markdown

    rows = eval_table(store)
    if rows:
        out = run_dir / "eval"
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(markdown(rows))
        (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def record_evals(store: Store, stage: str, evals: list[dict], run_dir: Path) -> list[dict]:
    """Store ``evals`` under ``stage``'s run in progress and rewrite the table; return its rows."""
    from siqkit.evaluate.tables import write_evals

    write_evals(store, evals, store.current_run(stage))
    return write_table(store, run_dir)


def run_eval(store: Store, recipe: Recipe, strict: bool = False) -> dict:
    from siqkit.evaluate.evaluate import as_seed, evaluate_checkpoint
    from siqkit.evaluate.heldout import eval_seeds, training_seed_ids

    if recipe.student is None:
        log.info("eval: the recipe names no student; nothing to do")
        return {"evaluated": False}
    summary_file = recipe.run_dir / "train" / "summary.json"
    if not summary_file.is_file():
        raise SiqkitError(f"eval: no trained student ({summary_file} is missing); run the train stage first")
    summary = json.loads(summary_file.read_text())
    seeds = [as_seed(s) for s in eval_seeds(store, recipe)]
    if not seeds:
        log.info("eval: no held-out seeds in splits %s; nothing to evaluate", ", ".join(recipe.eval.splits))
        return {"evaluated": False, "seeds": 0}
    train_ids = training_seed_ids(Path(summary["data_dir"]))
    student = recipe.student.model_copy(update={"path": Path(summary["student"]), "build": None})
    # The checkpoints the train stage evaluated, in its order (train.evaluate_before, each
    # stage's `evaluate`, which its answer-only twin shares), so its evaluations are reused.
    evaluated = {s.name: s.evaluate for s in recipe.train.stages}
    models = [("before", summary["student"])] if recipe.train.evaluate_before else []
    models += [(f"after-{s['stage']}", s["merged_dir"]) for s in summary["stages"]
               if s.get("status") == "done" and evaluated.get(s.get("baseline_of") or s["stage"], True)]
    cfg = recipe.train
    results = [evaluate_checkpoint(Path(model), label, i, seeds, train_ids, recipe.run_dir / "train",
                                   text_only=summary["text_only"], max_new_tokens=cfg.eval_max_new_tokens,
                                   batch_size=cfg.eval_batch_size, image_text=student.image_text, device=cfg.device,
                                   table_rows=cfg.eval_table_rows)
               for i, (label, model) in enumerate(models)]
    rows = record_evals(store, "eval", results, recipe.run_dir)
    for r in rows:
        log.info("eval: %-28s %s", r["model"], "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}")
    return {"seeds": len(seeds), "accuracy": {r["label"]: r["accuracy"] for r in results}}
