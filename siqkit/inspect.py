"""``siqkit inspect``: what a run folder holds, per stage, per source and split, and why rows were lost.

:func:`summarize` gathers it (``--json`` prints that); :func:`print_summary` draws it as tables
that fit the terminal: names are never cut, and below :data:`WIDE` columns the tables drop
their vertical rules and the evaluation table moves each model's description under the table,
so at 80 columns every model is one line.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from siqkit.annotate.stage import teacher_summary
from siqkit.curate.stage import curation_summary
from siqkit.evaluate.table import eval_table
from siqkit.errors import SiqkitError
from siqkit.records import Annotation, Curation, Generation, Seed
from siqkit.store import SCHEMA_VERSION, Store


def summarize(run_dir: str | Path) -> dict:
    """Per-stage status and counts, seeds by source and split, quarantine and drop reasons, teachers,
    curation, and the evaluation table (:mod:`siqkit.evaluate.table`)."""
    store = Store.open(run_dir, read_only=True)
    try:
        q = store.con.execute
        by_source: dict[str, dict] = {}
        for src, split, total, selected in q(
            "SELECT source, split, count(*), count(*) FILTER (WHERE selected) FROM seeds GROUP BY ALL ORDER BY ALL"
        ).fetchall():
            by_source.setdefault(src, {})[split] = {"stored": total, "selected": selected}
        by_split = {
            split: {"stored": total, "selected": selected}
            for split, total, selected in q(
                "SELECT split, count(*), count(*) FILTER (WHERE selected) FROM seeds GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        }
        quarantine = _nested(q("SELECT stage, reason, count(*) FROM quarantine GROUP BY ALL ORDER BY ALL").fetchall())
        quarantine_by_source = _nested(
            q("SELECT source, reason, count(*) FROM quarantine GROUP BY ALL ORDER BY ALL").fetchall()
        )
        drops = _nested(q("SELECT stage, reason, count(*) FROM drops GROUP BY ALL ORDER BY ALL").fetchall())
        media = q("SELECT count(*), coalesce(sum(size_bytes), 0) FROM media").fetchone()
        return {
            "run_dir": str(run_dir),
            "schema_version": SCHEMA_VERSION,
            "stages": store.last_stage_runs(),
            "seeds": {
                "stored": sum(v["stored"] for v in by_split.values()),
                "selected": sum(v["selected"] for v in by_split.values()),
                "by_source": by_source,
                "by_split": by_split,
            },
            "media": {"images": media[0], "bytes": int(media[1])},
            "quarantine": {"total": sum(sum(v.values()) for v in quarantine.values()),
                           "by_stage": quarantine, "by_source": quarantine_by_source},
            "drops": {"total": sum(sum(v.values()) for v in drops.values()), "by_stage": drops},
            "teachers": teacher_summary(store),
            "curation": curation_summary(store),
            "evaluation": eval_table(store),
        }
    finally:
        store.close()


def trace(run_dir: str | Path, key: str) -> dict[str, dict]:
    """Every record the run holds about one trace (a generation key, or a unique prefix of one):
    its seed, the generation, its annotation and the curate stage's decision; a record the run
    has not written yet is absent."""
    store = Store.open(run_dir, read_only=True)
    try:
        keys = [k for (k,) in store.con.execute(
            "SELECT key FROM generations WHERE starts_with(key, ?) ORDER BY key LIMIT 6", [key]).fetchall()]
        if len(keys) != 1:
            what = "no trace" if not keys else f"{'more than 5' if len(keys) > 5 else len(keys)} traces"
            raise SiqkitError(f"{run_dir}: {what} with a key starting '{key}'; give more of the key "
                              "(a trace's key is the `id` of its row in RUN_DIR/datasets/*/data.jsonl)")
        generation = store.read(Generation, "key = ?", keys)[0]
        found = {"seed": store.read(Seed, "id = ?", [generation.seed_id]), "generation": [generation],
                 "annotation": store.read(Annotation, "key = ?", keys), "curation": store.read(Curation, "key = ?", keys)}
        return {name: dataclasses.asdict(records[0]) for name, records in found.items() if records}
    finally:
        store.close()


def print_trace(records: dict[str, dict], console: Console | None = None) -> None:
    """One two-column table per record of :func:`trace`; long texts wrap, nothing is cut."""
    from siqkit.progress import out

    console = console or out
    for name, fields in records.items():
        t = _table(name, ["field", "value"], console, keep=("field",))
        for k, v in fields.items():
            t.add_row(k, "-" if v is None else v if isinstance(v, str) else json.dumps(v, default=str,
                                                                                      ensure_ascii=False))
        console.print(t)


def _nested(rows: list[tuple]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for outer, inner, n in rows:
        out.setdefault(str(outer), {})[str(inner)] = n
    return out


WIDE = 120
"""Terminal width from which tables keep their full layout (the evaluation's ``what`` column)."""


def number(v: int | float) -> str:
    """A count or measurement as a person reads it: 4,100 · 12.35 · 0.395."""
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def _table(title: str, columns: list[str], console: Console, right: tuple[str, ...] = (), keep: tuple[str, ...] = (),
           caption: str | None = None) -> Table:
    """A table whose ``keep`` columns are never wrapped or cut, and whose headers wrap between
    words but never lose a letter; compact below :data:`WIDE` columns."""
    wide = console.width >= WIDE
    t = Table(title=title, caption=caption, box=box.HEAVY_HEAD if wide else None, header_style="bold underline",
              pad_edge=wide)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", no_wrap=col in keep,
                     min_width=max(len(w) for w in col.split()))
    return t


def print_summary(s: dict, console: Console | None = None) -> None:
    """The human view of ``siqkit inspect``: one table per subject."""
    from siqkit.progress import out

    console = console or out
    t = _table(f"stages in {s['run_dir']}", ["stage", "status", "finished", "seconds"], console, keep=("stage",))
    for stage, info in s["stages"].items():
        seconds = info["counts"].get("seconds")
        t.add_row(stage, info["status"], info["finished_at"] or "-", "-" if seconds is None else number(seconds))
    console.print(t)
    t = _table(f"seeds: {s['seeds']['selected']:,} selected of {s['seeds']['stored']:,} stored",
               ["source", "split", "stored", "selected"], console, right=("stored", "selected"), keep=("source",))
    for src, splits in s["seeds"]["by_source"].items():
        for split, n in splits.items():
            t.add_row(src, split, f"{n['stored']:,}", f"{n['selected']:,}")
    console.print(t)
    if s["teachers"]:
        wide = console.width >= WIDE
        cols = ["teacher", "traces", "parse fail", "errors", "train acc", "test acc", "e/m/h", "samples/s"]
        t = _table("teachers", cols, console, right=tuple(cols[1:]), keep=("teacher",),
                   caption="acc: of the traces graded against gold; e/m/h: traces by difficulty (easy/medium/hard)")
        for name, info in s["teachers"].items():
            acc = info.get("accuracy", {})
            diff = info.get("difficulty", {})
            t.add_row(name, f"{info.get('traces', 0):,}", f"{info.get('parse_failures', 0):,}",
                      f"{info.get('errors', 0):,}", _acc(acc.get("train"), wide), _acc(acc.get("test"), wide),
                      "/".join(f"{diff.get(b, 0):,}" for b in ("easy", "medium", "hard")),
                      f"{(info.get('throughput') or {}).get('samples_per_s') or 0:,.1f}")
        console.print(t)
    cur = s.get("curation") or {}
    if cur:
        t = _table(f"curation: {cur['kept']:,} kept of {cur['considered']:,} traces", ["layer", "reason", "count"],
                   console, right=("count",), keep=("layer",))
        for layer, reasons in cur["by_reason"].items():
            for reason, n in reasons.items():
                t.add_row(layer, reason, f"{n:,}")
        console.print(t)
    for title, data in (("quarantined rows", s["quarantine"]["by_source"]), ("dropped", s["drops"]["by_stage"])):
        if not data:
            continue
        t = _table(title, ["where", "reason", "count"], console, right=("count",), keep=("where",))
        for where, reasons in data.items():
            for reason, n in reasons.items():
                t.add_row(where, reason, f"{n:,}")
        console.print(t)
    _print_evaluation(s.get("evaluation") or [], console)


def _print_evaluation(rows: list[dict], console: Console) -> None:
    """The table of :mod:`siqkit.evaluate.table`: per task and overall. Below :data:`WIDE`
    columns a task's cell is its accuracy alone (the counts are in the wide view and ``--json``)."""
    from siqkit.evaluate.table import cells, task_names

    if not rows:
        return
    wide = console.width >= WIDE
    tasks = task_names(rows)
    seeds = max(((r["seeds"] or 0) for r in rows if r["role"] == "student"), default=0)
    cols = ["model", *(["what"] if wide else []), *tasks, "overall", "correct",
            *(["format ok", "reasoning tokens"] if wide or not tasks else [])]
    per = f" ({len(tasks)} tasks)" if tasks else ""
    t = _table(f"held-out accuracy: the same {seeds:,} test questions{per} for every model", cols, console,
               right=tuple(cols[1 + wide:]), keep=("model", "overall", "correct"),
               caption="accuracy = correct / questions with a gold answer; a missing answer counts as wrong")
    for r in rows:
        c = cells(r, tasks, counts=wide)
        by_task = [c[k] for k in tasks]
        t.add_row(r["model"], *([r["what"]] if wide else []), *by_task, c["accuracy"], c["correct"],
                  *([c["format_ok"], c["reasoning_tokens"]] if wide or not tasks else []))
    console.print(t)
    if not wide:  # each model's description, wrapped beside its name
        notes = Table.grid(padding=(0, 1))
        notes.add_column(no_wrap=True, style="bold")
        notes.add_column()
        for r in rows:
            notes.add_row(f"  {r['model']}:", r["what"])
        console.print(notes)


def _acc(a: dict | None, wide: bool) -> str:
    if not a or a["accuracy"] is None:
        return "-"
    return f"{a['accuracy']:.1%}{' ' if wide else chr(10)}of {a['graded']:,}"  # narrow: two lines, whole
