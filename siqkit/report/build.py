"""``siqkit report RUN_DIR``: one self-contained HTML file about a run.

Everything is inside the file: plots are PNG images and example images are data URLs, so
the report can be mailed or archived alone. Sections appear for the stages that ran:
stage counts and drop reasons, the seed pool, teacher accuracy, difficulty and label
distributions, reasoning lengths, the evaluation table, training and export, and side-by-side
examples chosen deterministically, wrong ones included: per held-out question its image,
question and gold answer, each teacher's trace, and the answers of the student before CoT
distillation, its answer-only twin, the CoT-distilled student and the exported GGUF (from
``eval_outputs``); before any evaluation, the teachers' traces alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from siqkit import __version__
from siqkit.annotate.stage import teacher_summary
from siqkit.inspect import number
from siqkit.report import plots
from siqkit.store import Store

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b8c0cc}main{max-width:1100px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:18px 0;box-shadow:0 1px 2px #0001}
h2{font-size:17px;margin:0 0 10px}table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7ec;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{max-width:100%;border:1px solid #eee;border-radius:4px}
.ex{display:grid;grid-template-columns:96px 1fr;gap:12px;border-top:1px solid #e4e7ec;padding:10px 0}
.ex img{width:96px;image-rendering:pixelated;border:1px solid #ddd}.ex pre{white-space:pre-wrap;margin:4px 0;
font:12px/1.4 ui-monospace,Menlo,monospace;background:#f6f7f9;padding:6px;border-radius:4px;max-height:180px;overflow:auto}
.who{margin-top:6px;font-weight:600}table.answers{width:100%}table.answers td:first-child{width:45%}
.ex details pre{max-height:120px}ul.counts{margin:4px 0;padding-left:16px;font-size:12px;columns:2}summary{cursor:pointer;color:#6b7280;font-size:12px}
.ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}.muted{color:#6b7280}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _img(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


class _Raw(str):
    """Table cell content that is HTML already (its text escaped where it was built)."""


def _cell(v) -> str:
    return v if isinstance(v, _Raw) else _e(v)


def _table(head: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    out = ["<table><tr>", *[f"<th>{_e(h)}</th>" for h in head], "</tr>"]
    for r in rows:
        cells = [f'<td class="n">{_e(f"{v:,}" if isinstance(v, int) else v)}</td>' if i in numeric
                 else f"<td>{_cell(v)}</td>" for i, v in enumerate(r)]
        out += ["<tr>", *cells, "</tr>"]
    return "".join(out) + "</table>"


def build_report(run_dir: str | Path, out: str | Path | None = None, examples: int = 12) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) and return its path."""
    run_dir = Path(run_dir)
    store = Store.open(run_dir, read_only=True)
    try:
        sections = [_stages(store), _seeds(store)]
        traces = store.con.execute("SELECT count(*) FROM generations").fetchone()[0]
        if traces:
            sections += [_teachers(store), _annotations(store), _curation(store)]
        sections += [_evaluation(store), _training(store, run_dir), _export(run_dir)]
        if traces:
            sections.append(_examples(store, examples))
    finally:
        store.close()
    out = Path(out) if out else run_dir / "report.html"
    body = "\n".join(s for s in sections if s)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>siqkit report: {_e(run_dir.name)}"
            f"</title><style>{CSS}</style></head><body><header><h1>siqkit run: {_e(run_dir.name)}</h1>"
            f"<p>{_e(run_dir)} · siqkit {__version__}</p></header><main>{body}</main></body></html>")
    out.write_text(page, encoding="utf-8")
    return out


def _stages(store: Store) -> str:
    rows = []
    for stage, info in store.last_stage_runs().items():
        counts = {k: v for k, v in info["counts"].items() if k not in ("seconds",)}
        seconds = info["counts"].get("seconds")
        rows.append([stage, info["status"], info["finished_at"] or "-", "-" if seconds is None else number(seconds),
                     _counts_cell(counts)])
    drops = store.con.execute("SELECT stage, reason, count(*) FROM drops GROUP BY ALL ORDER BY 3 DESC").fetchall()
    quarantine = store.con.execute(
        "SELECT source, reason, count(*) FROM quarantine GROUP BY ALL ORDER BY 3 DESC").fetchall()
    parts = ["<section id=stages><h2>Stages</h2>",
             _table(["stage", "status", "finished", "seconds", "counts"], rows)]
    if quarantine:
        parts.append("<h3>Quarantined input rows</h3>" + _table(["source", "reason", "rows"],
                                                                   [list(r) for r in quarantine], {2}))
    if drops:
        parts.append("<h3>Dropped items</h3>" + _table(["stage", "reason", "items"], [list(r) for r in drops], {2}))
    return "".join(parts) + "</section>"


def _counts_cell(counts: dict, shown: int = 6) -> _Raw:
    """A stage's numeric counts: the first few inline, every one (by its full key) when unfolded."""
    flat: list[tuple[str, str]] = []

    def walk(node, path):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, path + [str(k)])
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and v:
                flat.append((".".join(path + [str(k)]), number(v)))

    walk(counts, [])
    inline = ", ".join(f"{_e('.'.join(k.split('.')[-2:]))}: {v}" for k, v in flat[:shown])
    if len(flat) <= shown:
        return _Raw(inline)
    every = "".join(f"<li>{_e(k)}: {v}</li>" for k, v in flat)
    return _Raw(f"{inline}<details><summary>all {len(flat)} counts</summary><ul class=counts>{every}</ul></details>")


def _seeds(store: Store) -> str:
    rows = store.con.execute("SELECT source, split, count(*), count(*) FILTER (WHERE selected) "
                             "FROM seeds GROUP BY ALL ORDER BY ALL").fetchall()
    if not rows:
        return ""
    groups: dict[str, dict[str, float]] = {}
    for src, split, _, sel in rows:
        groups.setdefault(src, {})[split] = sel
    return ("<section id=seeds><h2>Seed pool</h2><div class=plots>"
            + _img(plots.bars(groups, "selected seeds by source and split", "seeds"), "seeds by source")
            + "</div>" + _table(["source", "split", "stored", "selected"], [list(r) for r in rows], {2, 3})
            + "</section>")


def _teachers(store: Store) -> str:
    summary = teacher_summary(store)
    acc = {t: {split: a["accuracy"] or 0.0 for split, a in s.get("accuracy", {}).items()}
           for t, s in summary.items()}
    rows = []
    for t, s in summary.items():
        parse = ", ".join(f"{k}: {v:,}" for k, v in s.get("parse", {}).items())
        accs = ", ".join(f"{sp}: {a['accuracy']:.1%} of {a['graded']:,}" for sp, a in s.get("accuracy", {}).items()
                         if a["accuracy"] is not None) or "no gold answers"
        tp = s.get("throughput") or {}
        rows.append([t, s.get("traces", 0), parse, accs, f"{tp.get('samples_per_s') or 0:,.1f}",
                     f"{tp.get('tokens_per_s') or 0:,.0f}"])
    plot = _img(plots.bars(acc, "teacher accuracy against gold answers", "accuracy", percent=True),
                "teacher accuracy") if any(acc.values()) else ""
    return ("<section id=teachers><h2>Teachers</h2><div class=plots>" + plot + "</div>"
            + _table(["teacher", "traces", "parse", "accuracy", "samples/s", "tokens/s"], rows, {1})
            + "</section>")


def _annotations(store: Store) -> str:
    if not store.con.execute("SELECT count(*) FROM annotations").fetchone()[0]:
        return ""
    diff: dict[str, dict[str, int]] = {}
    for t, b, n in store.con.execute("SELECT teacher, coalesce(difficulty_bucket, 'unknown'), count(*) "
                                     "FROM annotations GROUP BY ALL").fetchall():
        diff.setdefault(t, {})[b] = n
    labels = store.con.execute("SELECT label, count(*) FROM (SELECT unnest(labels) AS label FROM annotations) "
                               "GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 20").fetchall()
    lengths: dict[str, list[float]] = {}
    for t, n in store.con.execute("SELECT teacher, reasoning_tokens FROM annotations "
                                  "WHERE reasoning_tokens IS NOT NULL").fetchall():
        lengths.setdefault(t, []).append(n)
    imgs = [_img(plots.stacked(diff, ["easy", "medium", "hard", "unknown"], "difficulty by teacher"),
                 "difficulty distribution"),
            _img(plots.top_counts(labels, "most frequent task labels"), "task labels"),
            _img(plots.histogram(lengths, "reasoning length", "whitespace tokens"), "reasoning length")]
    return "<section id=annotations><h2>Annotation</h2><div class=plots>" + "".join(imgs) + "</div></section>"


def _curation(store: Store) -> str:
    """Drops by layer and reason; difficulty and label distributions before and after selection."""
    if not store.con.execute("SELECT count(*) FROM curation").fetchone()[0]:
        return ""
    reasons = store.con.execute("SELECT layer, reason, count(*) FROM curation WHERE NOT kept "
                                "GROUP BY ALL ORDER BY 1, 3 DESC").fetchall()
    diff: dict[str, dict[str, int]] = {"before": {}, "after": {}}
    for kept, b, n in store.con.execute("SELECT kept, coalesce(difficulty_bucket, 'unknown'), count(*) "
                                        "FROM curation GROUP BY ALL").fetchall():
        diff["before"][b] = diff["before"].get(b, 0) + n
        if kept:
            diff["after"][b] = n
    labels: dict[str, dict[str, float]] = {}
    for label, before, after in store.con.execute(
            """SELECT label, count(*), count(*) FILTER (WHERE kept)
               FROM (SELECT unnest(labels) AS label, kept FROM curation)
               GROUP BY ALL ORDER BY 2 DESC, 1 LIMIT 12""").fetchall():
        labels[label] = {"before": before, "after": after}
    lengths = {b: {"before": before, "after": after or 0.0} for b, before, after in store.con.execute(
        """SELECT coalesce(c.difficulty_bucket, 'unknown') AS b, avg(a.reasoning_tokens),
                  avg(a.reasoning_tokens) FILTER (WHERE c.kept)
           FROM curation c JOIN annotations a ON a.key = c.key GROUP BY b
           ORDER BY list_position(['easy', 'medium', 'hard', 'unknown'], b)""").fetchall()}
    kept, total = store.con.execute("SELECT count(*) FILTER (WHERE kept), count(*) FROM curation").fetchone()
    imgs = [_img(plots.stacked(diff, ["easy", "medium", "hard", "unknown"], "difficulty before and after curation"),
                 "difficulty before and after"),
            _img(plots.bars(labels, "task labels before and after curation", "traces"), "labels before and after"),
            _img(plots.bars(lengths, "reasoning length by difficulty, before and after curation",
                            "mean whitespace tokens"), "reasoning length by difficulty")]
    return (f"<section id=curation><h2>Curation</h2><p>{kept:,} of {total:,} traces kept.</p>"
            "<div class=plots>" + "".join(imgs) + "</div>"
            + _table(["layer", "reason", "dropped"], [list(r) for r in reasons], {2}) + "</section>")


def _evaluation(store: Store) -> str:
    """The evaluation table (students, teachers, exported GGUF on the same held-out seeds)."""
    from siqkit.evaluate.table import cells, eval_table, header, task_names

    rows = eval_table(store)
    if not rows:
        return ""
    judged = [(r["model"], r["role"], r["accuracy"]) for r in rows if r["accuracy"] is not None]
    plot = _img(plots.accuracy_bars(judged, "held-out accuracy"), "held-out accuracy") if judged else ""
    tasks, head = task_names(rows), header(rows)
    table = _table(["model", "what", *head], [[r["model"], r["what"], *cells(r, tasks).values()] for r in rows],
                   set(range(2, 2 + len(head))))
    return ("<section id=evaluation><h2>Held-out evaluation</h2><p>Every model on the same test questions, "
            "never trained on; teachers only on the questions routed to them.</p><div class=plots>" + plot
            + "</div>" + table + "</section>")


def _vision_pretraining(run_dir: Path) -> str:
    """One sentence on a built student's vision pre-training, when it had one."""
    path = run_dir / "train" / "student-init" / "vision_pretrain.json"
    if not path.is_file():
        return ""
    v = json.loads(path.read_text())
    where = f"{v['held_out']} held-out images" if v["held_out"] else "its training images"
    return (f"<p>The student was built from scratch. Before any stage, its vision tower learned to "
            f"predict the caption words of {v['images'] - v['held_out']:,} images ({v['steps']:,} steps): "
            f"it then names {v['recall_after']:.0%} of the caption words of {_e(where)} "
            f"({v['recall_before']:.0%} before).</p>")


def _training(store: Store, run_dir: Path) -> str:
    """Loss curves of the student's stages and its held-out evaluations (latest train run)."""
    run = store.con.execute("SELECT max(stage_run) FROM train_steps").fetchone()[0]
    series: dict[str, list[tuple[float, float]]] = {}
    offset = 0
    for stage in [r[0] for r in store.con.execute(
            "SELECT stage FROM train_stages WHERE stage_run IS NOT DISTINCT FROM ? ORDER BY position", [run]).fetchall()]:
        pts = store.con.execute("SELECT step, loss FROM train_steps WHERE stage_run IS NOT DISTINCT FROM ? "
                                "AND stage = ? ORDER BY step", [run, stage]).fetchall()
        series[stage] = [(offset + step, loss) for step, loss in pts]
        offset += max((p[0] for p in pts), default=0)
    evals = store.con.execute(
        """SELECT after_stage, seeds, accuracy, format_ok, mean_reasoning_tokens FROM eval_runs
           WHERE stage_run IS NOT DISTINCT FROM ? ORDER BY rowid""", [run]).fetchall()
    rows = [[a, n, "-" if acc is None else f"{acc:.1%}", f"{fmt:.1%}", f"{tok:.1f}"] for a, n, acc, fmt, tok in evals]
    plot = _img(plots.curves(series, "training loss by stage", "step", "loss"), "training loss") if series else ""
    return ("<section id=training><h2>Student training</h2>" + _vision_pretraining(run_dir)
            + "<div class=plots>" + plot + "</div>"
            + _table(["evaluated after", "held-out seeds", "accuracy", "format adherence", "reasoning tokens"],
                     rows, {1}) + "</section>")


def _export(run_dir: Path) -> str:
    """Each exported GGUF with its agreement against the Hugging Face model."""
    rows = []
    for summary in sorted((run_dir / "export").glob("*.export.json")):
        data = json.loads(summary.read_text())
        for f in data.get("files", []):
            v = (f.get("verify") or {}).get("text") or {}
            rows.append([Path(f["path"]).name, f["quant"], f"{f['size_bytes']:,}",
                         f"{v['greedy_agreement']:.2f}" if "greedy_agreement" in v else "-",
                         f"{v['top1']:.3f}" if "top1" in v else "-",
                         f"{v['logit_err_rel']:.4f}" if "logit_err_rel" in v else "-",
                         "yes" if (f.get("verify") or {}).get("passed") else "no"])
    if not rows:
        return ""
    return ("<section id=export><h2>Export</h2>"
            + _table(["file", "quant", "bytes", "greedy agreement", "top-1", "logit error (rel.)", "passed"], rows)
            + "</section>")


def _student_columns(store: Store) -> list[dict]:
    """The evaluated models shown beside each example: ``model``, ``what``, ``role`` and
    ``outputs`` ({seed_id: (answer, correct, parse_status, reasoning)}). The student before CoT distillation, its answer-only twin, the
    CoT-distilled student and the exported GGUF when the table marks them; every student
    evaluation otherwise. Each model's outputs come from the newest run that evaluated it."""
    from siqkit.evaluate.table import eval_table

    rows = [r for r in eval_table(store) if r["role"] in ("student", "gguf") and r.get("label")]
    marked = [r for r in rows if r["role"] == "gguf"
              or any(m in r["what"] for m in ("before CoT", "answer-only", "CoT-distilled"))]
    if not any(r["role"] == "student" for r in marked):
        marked = rows
    out = []
    for r in marked:
        outputs = store.con.execute(
            """SELECT seed_id, answer, correct, parse_status, reasoning FROM eval_outputs
               WHERE after_stage = ? AND stage_run IS NOT DISTINCT FROM
                     (SELECT max(stage_run) FROM eval_outputs WHERE after_stage = ?)""",
            [r["label"], r["label"]]).fetchall()
        if outputs:
            out.append({"model": r["model"], "what": r["what"], "role": r["role"],
                        "outputs": {o[0]: o[1:] for o in outputs}})
    return out


def _pick_seeds(store: Store, students: list[dict], n: int) -> list[str]:
    """Seeds to show, deterministically: with evaluations, held-out seeds of each source where
    the main student (CoT-distilled, else the last one) is wrong, then right; without, each
    teacher's wrong traces, then right ones. Ordered by id within each group."""
    groups: list[list[str]] = []
    if students:
        own = [c for c in students if c["role"] == "student"] or students
        main = next((c for c in own if "CoT-distilled" in c["what"]), own[-1])["outputs"]
        by_source: dict[str, dict[bool, list[str]]] = {}
        for seed_id, source in store.con.execute(
                "SELECT id, source FROM seeds WHERE list_contains(?, id) ORDER BY source, id", [sorted(main)]).fetchall():
            by_source.setdefault(source, {False: [], True: []})[bool(main[seed_id][1])].append(seed_id)
        groups = [g[v] for g in by_source.values() for v in (False, True)]
    else:
        for teacher in [r[0] for r in store.con.execute("SELECT DISTINCT teacher FROM annotations ORDER BY 1").fetchall()]:
            for verdict in (False, True):
                groups.append([r[0] for r in store.con.execute(
                    "SELECT DISTINCT seed_id FROM annotations WHERE teacher = ? AND correct = ? ORDER BY 1",
                    [teacher, verdict]).fetchall()])
    groups = [g for g in groups if g]
    picked: list[str] = []
    each = max(1, n // max(1, len(groups)))
    for g in groups:
        picked += [s for s in g[:each] if s not in picked]
    for g in groups:  # fill up from what is left, if some groups were short
        picked += [s for s in g[each:] if s not in picked][: max(0, n - len(picked))]
    return picked[:n]


def _mark(correct) -> str:
    if correct is None:
        return '<span class=muted>not checked</span>'
    return '<span class=ok>correct</span>' if correct else '<span class=bad>wrong</span>'


def _examples(store: Store, n: int) -> str:
    """Side by side, per example: image, question, gold, each teacher's trace and verdict, and
    each evaluated model's answer on the same question (see :func:`_student_columns`)."""
    students = _student_columns(store)
    seeds = _pick_seeds(store, students, n)
    if not seeds:
        return ""
    what = ("held-out questions: each teacher's trace, then the student before CoT distillation, its "
            "answer-only twin, the CoT-distilled student and the exported GGUF; where the CoT-distilled "
            "student is wrong first" if students else "teacher traces; wrong answers first")
    parts = [f"<section id=examples><h2>Side-by-side examples</h2><p class=muted>{_e(what)}.</p>"]
    for seed_id in seeds:
        question, gold, images, source, split = store.con.execute(
            "SELECT question, answer, images, source, split FROM seeds WHERE id = ?", [seed_id]).fetchone()
        thumbs = "".join(_thumb(store, h) for h in (images or [])[:2])
        traces = store.con.execute(
            """SELECT g.teacher, g.reasoning, g.answer, a.correct, g.parse_status, a.difficulty_bucket
               FROM generations g LEFT JOIN annotations a ON a.key = g.key WHERE g.seed_id = ?
               QUALIFY row_number() OVER (PARTITION BY g.teacher ORDER BY g.sample_index, g.key) = 1
               ORDER BY g.teacher""", [seed_id]).fetchall()
        body = [f"<b>{_e(question)}</b> <span class=muted>gold: {_e(gold)} · {_e(source)} / {_e(split)}</span>"]
        for teacher, reasoning, answer, correct, status, bucket in traces:
            body.append(f"<div class=who>teacher {_e(teacher)} <span class=muted>· difficulty: {_e(bucket)} · "
                        f"parse: {_e(status)}</span></div><pre>{_e(reasoning)}</pre>"
                        f"answer: <b>{_e(answer)}</b> {_mark(correct)}")
        rows = []
        for col in students:
            if seed_id not in col["outputs"]:
                continue
            answer, correct, status, reasoning = col["outputs"][seed_id]
            said = _e(answer) if answer is not None else f"<span class=muted>no answer ({_e(status)})</span>"
            why = (f"<details><summary>reasoning</summary><pre>{_e(reasoning)}</pre></details>"
                   if reasoning else "")
            rows.append(f"<tr><td>{_e(col['model'])}<div class=muted>{_e(col['what'])}</div></td><td><b>{said}</b> "
                        f"{_mark(correct)}{why}</td></tr>")
        if rows:
            body.append("<table class=answers><tr><th>model</th><th>answer</th></tr>" + "".join(rows) + "</table>")
        parts.append(f"<div class=ex><div>{thumbs}</div><div>{''.join(body)}</div></div>")
    return "".join(parts) + "</section>"


def _thumb(store: Store, digest: str) -> str:
    im = store.media.image(digest)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return f'<img class="example" alt="seed image" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
