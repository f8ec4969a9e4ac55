"""Which seeds evaluation uses, and which it must refuse.

:func:`eval_seeds` draws the held-out seeds from the run store: selected seeds of the
``eval.splits`` splits, grouped by task (``eval.task_by``: a seed's source, or a metadata
field, :func:`task_sql`), a deterministic sample of ``eval.per_task`` of each (the recipe's
seed picks it), ``eval.tasks`` limiting which and ``eval.max_seeds`` capping the total. The
train, eval and export stages all evaluate on these same seeds.

:func:`training_seed_ids` reads the seed ids a curated dataset trains on, which
:func:`~siqkit.evaluate.evaluate.check_held_out` refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from siqkit.errors import SiqkitError
from siqkit.store import Store, seeded_hash

if TYPE_CHECKING:
    from siqkit.recipe import Recipe

TRACES_FILE = "data.jsonl"  # what the curate stage exports and the train stage reads


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
                     {task} AS task, {seeded_hash('s.id')} AS h
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


def training_seed_ids(data_dir: str | Path) -> set[str]:
    """The seed ids of a curated dataset (a folder with ``data.jsonl``, or the file itself):
    the seeds its student trained on, which evaluation refuses."""
    path = Path(data_dir)
    if path.is_dir():
        path = path / TRACES_FILE
    if not path.is_file():
        raise SiqkitError(f"{path}: training data not found (expected {TRACES_FILE}, which the curate stage "
                          "writes); without it the held-out seeds cannot be checked")
    ids: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                ids.add(str(json.loads(text)["seed_id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SiqkitError(f"{path}:{n}: expected a JSON object with a 'seed_id'") from None
    return ids
