"""The ``train`` stage of a recipe run: the curated dataset in, a trained student out.

A student with ``build`` (no checkpoint) is first built from scratch into
``RUN_DIR/train/student-init/`` (:func:`siqkit.train.scratch.build_student`). It reads
the curate stage's export (``RUN_DIR/datasets/<train.dataset>/``), asks evaluation for the
held-out seeds (:func:`siqkit.evaluate.heldout.eval_seeds`, the same seeds the eval and
export stages use), and runs the curriculum
(:func:`siqkit.train.curriculum.train_curriculum`) in ``RUN_DIR/train/``: each stage's
adapter and merged model, checkpoints, plots, and an evaluation before training and after
every stage, all written to the store (``train_stages``, ``train_steps``; the evaluations
to ``eval_runs``, ``eval_outputs``). A seed used in training is refused for evaluation.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from siqkit.errors import SiqkitError
from siqkit.store import Store

if TYPE_CHECKING:
    from siqkit.recipe import Recipe

log = logging.getLogger("siqkit.train")


def run_train(store: Store, recipe: Recipe, strict: bool = False) -> dict:
    from siqkit.evaluate.heldout import eval_seeds
    from siqkit.train.curriculum import train_curriculum

    if recipe.student is None:
        log.info("train: the recipe names no student; nothing to do")
        return {"trained": False}
    data_dir = recipe.run_dir / "datasets" / recipe.train.dataset
    if not (data_dir / "data.jsonl").is_file():
        raise SiqkitError(f"train: no dataset at {data_dir}; run the curate stage first "
                          f"(siqkit run RECIPE --only curate), or set train.dataset")
    seeds = eval_seeds(store, recipe)
    run_id = store.current_run("train")
    student = recipe.student
    if student.build is not None:
        from siqkit.train.scratch import build_student

        path = build_student(student.build, data_dir, recipe.run_dir / "train" / "student-init", seed=recipe.seed)
        student = student.model_copy(update={"path": path})
    summary = train_curriculum(student, recipe.train, data_dir, recipe.run_dir / "train",
                               store=store, eval_seeds=seeds, stage_run=run_id)
    evals = {e["label"]: {k: e.get(k) for k in ("accuracy", "format_ok", "mean_reasoning_tokens")}
             for e in summary.get("evals", [])}
    return {"dataset": str(data_dir), "eval_seeds": len(seeds), "final_model": summary.get("final_model"),
            "stages": {s["stage"]: {k: s.get(k) for k in ("status", "steps", "final_loss", "tokens_per_s")}
                       for s in summary.get("stages", [])},
            "evals": json.loads(json.dumps(evals, default=str))}
