"""The evaluation table: every model of a run on the same held-out questions, in one place.

:func:`eval_table` reads the run store and returns one row per model, in this order:

- the student after each training stage (and before any), from the newest train or eval
  run that evaluated it (``eval_runs``), each labelled with what it is: the last stage
  before the first chain-of-thought stage is the student *before CoT distillation*, a
  ``<stage>-answer-only`` twin is the *answer-only* comparison (same rows and optimizer
  steps, answers without reasoning), and the last chain-of-thought stage is the
  *CoT-distilled* student;
- each teacher, scored on the same held-out seeds from its own traces (``annotations``):
  teachers answer the test split during generation, so this costs nothing; with routing,
  a teacher only answered the seeds routed to it, and ``seeds`` says how many;
- the exported GGUF run in llama.cpp (the export stage's ``gguf-<quant>`` evaluation).

Accuracy is correct / judged, where judged counts the seeds with a gold answer; a missing
or unparseable answer counts as wrong. Every row also has ``tasks``: the same counts per
task of the held-out seeds (``eval.task_by``), from the stored per-seed outputs, so each
model is scored per task and overall on the same questions. Numbers are whatever the run
measured: nothing is filtered or rounded before it is stored.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("model", "what", "seeds", "judged", "correct", "accuracy", "format_ok", "mean_reasoning_tokens")


def _newest_evals(store: Any, stages: list[str]) -> tuple[int | None, list[tuple]]:
    """The newest run of one of ``stages`` that wrote evaluations, and those evaluations
    (label, seeds, judged, correct, accuracy, format_ok, mean_reasoning_tokens), in order."""
    q = store.con.execute
    run = q("""SELECT max(e.stage_run) FROM eval_runs e JOIN stage_runs r ON r.id = e.stage_run
               WHERE list_contains(?, r.stage)""", [stages]).fetchone()[0]
    if run is None:
        return None, []
    return run, q("""SELECT after_stage, seeds, judged, correct, accuracy, format_ok, mean_reasoning_tokens
                     FROM eval_runs WHERE stage_run = ? ORDER BY rowid""", [run]).fetchall()


def _scores(found: list[tuple]) -> dict[str, dict]:
    """``{task: {seeds, judged, correct, accuracy}}`` from (task, seeds, judged, correct) rows."""
    return {t: {"seeds": n, "judged": j, "correct": c, "accuracy": c / j if j else None}
            for t, n, j, c in found if t is not None}


def output_tasks(store: Any, run: int, label: str) -> dict[str, dict]:
    """Per-task counts of one evaluation (``label``) of ``run``, from ``eval_outputs``."""
    return _scores(store.con.execute(
        """SELECT task, count(*), count(correct), count(*) FILTER (WHERE correct) FROM eval_outputs
           WHERE stage_run = ? AND after_stage = ? GROUP BY task ORDER BY task""", [run, label]).fetchall())


def _student_rows(store: Any) -> tuple[list[dict], int | None]:
    """Rows of the newest train/eval run that evaluated the student, and that run's id."""
    q = store.con.execute
    run, evals = _newest_evals(store, ["train", "eval"])
    if run is None:
        return [], None
    # the stages' data kinds label the rows; a store the train stage never wrote has none
    data = dict(q("""SELECT stage, data FROM train_stages WHERE stage_run = (SELECT max(stage_run)
                     FROM train_stages) AND status = 'done'""").fetchall())
    cot = [s for s, d in data.items() if d == "cot" and not s.endswith("-answer-only")]
    order = [s for s in data if not s.endswith("-answer-only")]
    before_cot = None
    if cot:
        first = order.index(cot[0])
        before_cot = f"after-{order[first - 1]}" if first > 0 else "before"
    rows = []
    for label, seeds, judged, correct, acc, fmt, rtok in evals:
        stage = label.removeprefix("after-")
        if label == "before":
            what = "before training"
        elif stage.endswith("-answer-only"):
            what = f"answer-only: same rows and steps as {stage.removesuffix('-answer-only')}, no reasoning"
        else:
            what = f"after {stage} ({data.get(stage, '?')})"
        if label == before_cot:
            what += "; before CoT distillation"
        if cot and label == f"after-{cot[-1]}":
            what += "; CoT-distilled"
        rows.append({"model": f"student {label}", "role": "student", "what": what, "seeds": seeds,
                     "judged": judged, "correct": correct, "accuracy": acc, "format_ok": fmt,
                     "mean_reasoning_tokens": rtok, "label": label, "tasks": output_tasks(store, run, label)})
    return rows, run


def _teacher_rows(store: Any, run: int) -> list[dict]:
    """Each teacher on the seeds of the student evaluation ``run``, from its annotated traces."""
    q = store.con.execute
    seeds_total = q("SELECT count(DISTINCT seed_id) FROM eval_outputs WHERE stage_run = ?", [run]).fetchone()[0]
    rows = []
    for teacher, seeds, judged, correct, fmt, rtok in q(
        """SELECT g.teacher, count(DISTINCT g.seed_id), count(a.correct), count(*) FILTER (WHERE a.correct),
                  avg(CASE WHEN g.parse_status = 'ok' THEN 1.0 ELSE 0.0 END), avg(a.reasoning_tokens)
           FROM generations g JOIN annotations a ON a.key = g.key
           WHERE g.seed_id IN (SELECT DISTINCT seed_id FROM eval_outputs WHERE stage_run = ?)
           GROUP BY g.teacher ORDER BY g.teacher""", [run]).fetchall():
        rows.append({"model": f"teacher {teacher}", "role": "teacher",
                     "what": f"its traces of the {seeds} of these {seeds_total} seeds routed to it",
                     "seeds": seeds, "judged": judged, "correct": correct,
                     "accuracy": correct / judged if judged else None, "format_ok": fmt,
                     "mean_reasoning_tokens": rtok, "label": f"teacher-{teacher}",
                     "tasks": _scores(q("""
                        SELECT e.task, count(DISTINCT g.seed_id), count(a.correct), count(*) FILTER (WHERE a.correct)
                        FROM generations g JOIN annotations a ON a.key = g.key
                        JOIN (SELECT DISTINCT seed_id, task FROM eval_outputs WHERE stage_run = ?) e
                          ON e.seed_id = g.seed_id
                        WHERE g.teacher = ? GROUP BY e.task ORDER BY e.task""", [run, teacher]).fetchall())})
    return rows


def _gguf_rows(store: Any) -> list[dict]:
    run, evals = _newest_evals(store, ["export"])
    return [{"model": f"exported {label.removeprefix('gguf-')} GGUF", "role": "gguf",
             "what": "the exported file in llama.cpp (with its mmproj for images)", "seeds": seeds,
             "judged": judged, "correct": correct, "accuracy": acc, "format_ok": fmt,
             "mean_reasoning_tokens": rtok, "label": label, "tasks": output_tasks(store, run, label)}
            for label, seeds, judged, correct, acc, fmt, rtok in evals]


def eval_table(store: Any) -> list[dict]:
    """The rows described in the module docstring (empty when nothing was evaluated)."""
    students, run = _student_rows(store)
    if run is None:
        return _gguf_rows(store)
    return students + _teacher_rows(store, run) + _gguf_rows(store)


def task_names(rows: list[dict]) -> list[str]:
    """The tasks of the table's rows, sorted; empty when the evaluation had none."""
    return sorted({t for r in rows for t in r.get("tasks") or {}})


def cells(row: dict, tasks: list[str] | None = None, counts: bool = True) -> dict[str, str]:
    """A row's numbers as text, the same in every view: accuracy as a percentage, per task
    (``tasks``, a key per task; with its counts unless ``counts`` is false) and overall; "-"
    when absent."""
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    out = {}
    for t in tasks or []:
        score = (row.get("tasks") or {}).get(t)
        out[t] = "-" if score is None else fmt(score["accuracy"], ".1%")
        if counts and score is not None and score["accuracy"] is not None:
            out[t] += f" ({score['correct']:,}/{score['judged']:,})"
    return {**out, "accuracy": fmt(row["accuracy"], ".1%"), "correct": f"{row['correct']:,} / {row['judged']:,}",
            "format_ok": fmt(row["format_ok"], ".0%"), "reasoning_tokens": fmt(row["mean_reasoning_tokens"], ".0f")}


def header(rows: list[dict]) -> list[str]:
    """Column titles of :func:`cells` after model and what: one per task, then the overall ones."""
    return [*task_names(rows), "overall", "correct / judged", "format ok", "reasoning tokens"]


def markdown(rows: list[dict]) -> str:
    """The table as Markdown, numbers as the store has them (accuracy as a percentage)."""
    tasks = task_names(rows)
    head = ["model", "what", *header(rows)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        lines.append("| " + " | ".join([r["model"], r["what"], *cells(r, tasks).values()]) + " |")
    return "\n".join(lines) + "\n"
