"""The ``train`` stage of a recipe run: the curated dataset in, a trained student out.

A student with ``build`` (no checkpoint) is first built from scratch into
``RUN_DIR/train/student-init/`` (:func:`siqkit.train.scratch.build_student`). It reads
the curate stage's export (``RUN_DIR/datasets/<train.dataset>/``), picks the held-out
evaluation seeds from the store (selected seeds of the ``eval.splits`` splits, a
deterministic sample of ``eval.per_task`` per task), and runs the curriculum
(:func:`siqkit.train.curriculum.train_curriculum`) in ``RUN_DIR/train/``: each stage's
adapter and merged model, checkpoints, plots, and an evaluation before training and after
every stage, all written to the store (``train_stages``, ``train_steps``, ``eval_runs``,
``eval_outputs``). A seed used in training is refused for evaluation.
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


def task_sql(task_by: str) -> str:
    """The SQL expression of a seed's task (``eval.task_by``) over the seeds table ``s``."""
    if task_by == "source":
        return "s.source"
    return f"coalesce(json_extract_string(s.metadata, '$.{task_by.removeprefix('metadata.')}'), s.source)"


def eval_seeds(store: Store, recipe: Recipe) -> list[dict]:
    """Held-out seeds for evaluation, ``eval.per_task`` of each task (see :class:`EvalConfig`),
    each with its task, images, gold answer, caption and a teacher trace; interleaved by task,
    so the first rows of a side-by-side cover every task."""
    ev = recipe.eval
    task = task_sql(ev.task_by)
    rows = store.con.execute(
        f"""WITH c AS (
              SELECT s.id, s.question, s.images, s.answer, json_extract_string(s.metadata, '$.caption') AS caption,
                     {task} AS task, md5(CAST(? AS VARCHAR) || ':' || s.id) AS h
              FROM seeds s WHERE s.selected AND list_contains(?, s.split)),
            r AS (SELECT *, row_number() OVER (PARTITION BY task ORDER BY h) AS rn FROM c
                  WHERE ? IS NULL OR list_contains(?, task))
            SELECT id, question, images, answer, caption, task, rn,
                   (SELECT g.raw FROM generations g WHERE g.seed_id = r.id AND g.finish_reason != 'error'
                    ORDER BY g.teacher, g.sample_index LIMIT 1)
            FROM r WHERE rn <= ? ORDER BY rn, task""",
        [recipe.seed, ev.splits, ev.tasks, ev.tasks, ev.per_task]).fetchall()
    if ev.max_seeds is not None and rows:
        per = max(1, ev.max_seeds // len({r[5] for r in rows}))
        rows = [r for r in rows if r[6] <= per][: ev.max_seeds]
    return [{"seed_id": sid, "question": q, "images": [str(store.media.find(h)) for h in images],
             "gold": gold, "caption": caption, "task": t, "teacher_trace": trace}
            for sid, q, images, gold, caption, t, _, trace in rows]


def run_train(store: Store, recipe: Recipe, strict: bool = False) -> dict:
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
