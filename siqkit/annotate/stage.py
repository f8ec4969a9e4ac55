"""The ``annotate`` stage: answer quality, judge verdicts, task labels, difficulty, statistics.

For every generation (trace) not yet annotated under the current settings:

- **answer quality** against the seed's gold answer with :func:`~siqkit.annotate.normalize.check_answer`
  (yes/no, numbers with tolerance, option letters, short strings); ``correct`` is NULL
  when the seed has no gold answer;
- **judge** (optional, ``annotate.judge: TEACHER``): that teacher, through its own backend,
  reads the question, the images and the trace and answers JSON
  ``{"difficulty": 1-5, "quality": 1-5, "tags": [3-6 lowercase tags]}``; it judges the traces
  without gold (or all of them with ``judge_all``). Malformed JSON is re-asked
  ``judge_retries`` times with the error quoted, then recorded in ``judge_error``;
- **task labels**: 3–6 lowercase tags from rules on the question, source and answer
  (:func:`~siqkit.annotate.labels.task_labels`), in ``labels``; the judge's tags, when there
  are some, are kept apart in ``judge_tags``;
- **reasoning statistics**: whitespace tokens, steps (and the rule that counted them),
  answer length;
- **difficulty** per (seed, teacher), from the pass rate over that teacher's k samples, the
  judge's score and/or the seed's own 1–5 ``difficulty`` (its metadata) — the rules are in
  :mod:`siqkit.annotate.difficulty`; ``difficulty_source``
  says which was used for each trace.

Rows are written in chunks, each one transaction, so a crash loses at most a chunk and a
rerun continues where it stopped; changing the settings re-annotates everything.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

import pyarrow as pa

from siqkit.annotate.difficulty import combine_difficulty
from siqkit.annotate.labels import parse_judge_json, task_labels
from siqkit.annotate.normalize import check_answer, infer_kind
from siqkit.annotate.stats import reasoning_stats
from siqkit.hashing import digest
from siqkit.progress import track
from siqkit.records import Annotation, Generation, Seed
from siqkit.store import Store
from siqkit.teachers.base import DEFAULT_BATCH, Sampling, TeacherInput
from siqkit.teachers.identity import teacher_identity
from siqkit.teachers.registry import load_teacher

if TYPE_CHECKING:
    from siqkit.recipe import Recipe

log = logging.getLogger("siqkit.annotate")

CHUNK = 512
JUDGE_SYSTEM = (
    "You grade one reasoning trace written by a teacher model for a question about an image. "
    "Reply with a JSON object only, no prose: "
    '{"difficulty": <1-5, how hard the question is>, "quality": <1-5, how correct, grounded and '
    'clear the reasoning is>, "tags": [3 to 6 lowercase task tags such as "counting", "ocr", "chart"]}'
)


def run_annotate(store: Store, recipe: Recipe, strict: bool = False) -> dict:
    cfg = recipe.annotate
    judge_cfg = next((t for t in recipe.teachers if t.name == cfg.judge), None)
    settings = {"answer_kind": cfg.answer_kind, "tolerance": cfg.tolerance, "judge_all": cfg.judge_all,
                "judge": teacher_identity(judge_cfg) if judge_cfg else None}
    sh = digest(settings, 16)
    n = len(Generation.columns())
    rows = [(Generation.from_row(r[:n]), Seed.from_row(r[n:])) for r in store.con.execute(
        f"""SELECT {Generation.select("g")}, {Seed.select("s")}
            FROM generations g JOIN seeds s ON s.id = g.seed_id
            LEFT JOIN annotations a ON a.key = g.key
            WHERE a.key IS NULL OR a.settings != ? ORDER BY g.key""", [sh]).fetchall()]
    counts: dict = {"annotated": len(rows), "judged": 0, "judge_errors": 0}
    if not rows:
        log.info("annotate: every trace is already annotated with these settings")
    judge = load_teacher(judge_cfg) if judge_cfg and rows else None
    try:
        for i in track(range(0, len(rows), CHUNK) if rows else [], "annotate", unit="chunks"):
            chunk = rows[i: i + CHUNK]
            verdicts = _judge(store, judge, judge_cfg, chunk, cfg, recipe.seed) if judge else {}
            counts["judged"] += len(verdicts)
            counts["judge_errors"] += sum(1 for v in verdicts.values() if isinstance(v, str))
            out = [_annotate(g, seed, verdicts.get(g.key), cfg, sh) for g, seed in chunk]
            with store.transaction():
                store.write(out, "INSERT OR REPLACE")
    finally:
        if judge is not None:
            judge.close()
    _difficulty(store)
    counts["teachers"] = teacher_summary(store)
    log.info("annotate: %d traces annotated, %d judged (%d judge errors)",
             counts["annotated"], counts["judged"], counts["judge_errors"])
    return counts


def _annotate(g: Generation, seed: Seed, verdict, cfg, sh: str) -> Annotation:
    gold = seed.answer
    correct, detail = check_answer(g.answer, gold, cfg.answer_kind, cfg.tolerance)
    kind = None if gold is None or not str(gold).strip() else (
        infer_kind(str(gold)) if cfg.answer_kind == "auto" else cfg.answer_kind)
    stats = reasoning_stats(g.reasoning, g.answer)
    ok = isinstance(verdict, dict)
    return Annotation(
        key=g.key, seed_id=g.seed_id, teacher=g.teacher, settings=sh, correct=correct, correct_detail=detail,
        answer_kind=kind, judge_difficulty=verdict["difficulty"] if ok else None,
        judge_quality=verdict["quality"] if ok else None, judge_tags=verdict["tags"] if ok else None,
        judge_error=verdict if isinstance(verdict, str) else None,
        labels=task_labels(seed.question, seed.source, gold, has_image=bool(seed.images)),
        reasoning_tokens=stats.tokens, answer_tokens=stats.answer_tokens, steps=stats.steps,
        step_rule=stats.step_rule,
    )


def _judge(store: Store, judge, judge_cfg, chunk: list[tuple[Generation, Seed]], cfg, seed: int) -> dict:
    """Verdict dict or error string per generation key, for the traces that need judging."""
    todo = [(g, s) for g, s in chunk if cfg.judge_all or s.answer is None or not str(s.answer).strip()]
    verdicts: dict = {}
    pending = {g.key: ((g, s), _judge_messages(g, s)) for g, s in todo}
    for attempt in range(cfg.judge_retries + 1):
        if not pending:
            break
        inputs = [
            TeacherInput(key=f"judge:{k}:{attempt}", seed_id=g.seed_id, question=s.question,
                         images=[store.media.image(h, max_pixels=judge_cfg.max_pixels) for h in s.images],
                         messages=msgs,
                         sampling=Sampling(max_new_tokens=cfg.judge_max_new_tokens, temperature=0.0,
                                           seed=seed))
            for k, ((g, s), msgs) in pending.items()
        ]
        chunk = getattr(judge, "window", None) or judge_cfg.batch_size or DEFAULT_BATCH
        outputs = []
        for j in range(0, len(inputs), chunk):
            outputs += judge.generate(inputs[j: j + chunk])
        retry = {}
        for (k, (pair, msgs)), out in zip(list(pending.items()), outputs):
            result = parse_judge_json(out.text) if out.finish_reason != "error" else f"judge failed: {out.error}"
            verdicts[k] = result
            if isinstance(result, str) and out.finish_reason != "error":
                retry[k] = (pair, msgs + [
                    {"role": "assistant", "content": out.text},
                    {"role": "user", "content": f"That was not valid ({result}). Reply with the JSON object only."},
                ])
        pending = retry
    return verdicts


def _judge_messages(g: Generation, seed: Seed) -> list[dict]:
    text = f"Question: {seed.question}\n"
    if seed.answer is not None and str(seed.answer).strip():
        text += f"Reference answer: {seed.answer}\n"
    text += f"Trace by teacher '{g.teacher}':\n{g.raw}"
    content = [{"type": "image"} for _ in seed.images] + [{"type": "text", "text": text}]
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]


def _difficulty(store: Store) -> None:
    """Difficulty per (seed, teacher) from its samples' verdicts and the judge's mean score."""
    groups: dict[tuple, list] = defaultdict(list)
    priors: dict[str, int | None] = {}
    for key, seed_id, teacher, correct, jd, prior in store.con.execute(
        """SELECT a.key, a.seed_id, a.teacher, a.correct, a.judge_difficulty,
                  TRY_CAST(json_extract(s.metadata, '$.difficulty') AS INTEGER)
           FROM annotations a JOIN seeds s ON s.id = a.seed_id"""
    ).fetchall():
        groups[(seed_id, teacher)].append((key, correct, jd))
        priors[seed_id] = prior if prior is not None and 1 <= prior <= 5 else None
    cols: dict[str, list] = {k: [] for k in ("key", "pass_rate", "n", "level", "bucket", "source")}
    for (seed_id, _), members in groups.items():
        scores = [jd for _, _, jd in members if jd is not None]
        judge = round(sum(scores) / len(scores)) if scores else None
        d = combine_difficulty([c for _, c, _ in members], judge, prior=priors[seed_id])
        for key, _, _ in members:
            cols["key"].append(key)
            cols["pass_rate"].append(d.pass_rate if d else None)
            cols["n"].append(d.samples if d else 0)
            cols["level"].append(d.level if d else None)
            cols["bucket"].append(d.bucket if d else None)
            cols["source"].append(d.source if d else None)
    table = pa.table(cols, schema=pa.schema([("key", pa.string()), ("pass_rate", pa.float64()),
                                             ("n", pa.int32()), ("level", pa.int32()),
                                             ("bucket", pa.string()), ("source", pa.string())]))
    with store.transaction() as con:
        con.register("_difficulty", table)
        con.execute("""UPDATE annotations SET pass_rate = d.pass_rate, samples_judged = d.n,
                       difficulty = d.level, difficulty_bucket = d.bucket, difficulty_source = d.source
                       FROM _difficulty d WHERE annotations.key = d.key""")
        con.unregister("_difficulty")


def teacher_summary(store: Store) -> dict:
    """Per teacher: traces, parse outcomes, accuracy against gold, difficulty buckets, throughput."""
    out: dict = {}
    for teacher, n, ok, errors, truncated in store.con.execute(
        """SELECT teacher, count(*), count(*) FILTER (WHERE parse_status = 'ok'),
                  count(*) FILTER (WHERE finish_reason = 'error'),
                  count(*) FILTER (WHERE parse_status = 'truncated')
           FROM generations GROUP BY teacher ORDER BY teacher""").fetchall():
        out[teacher] = {"traces": n, "parsed_ok": ok, "parse_failures": n - ok, "errors": errors,
                        "truncated": truncated, "parse": {}}
    for teacher, status, n in store.con.execute(
            "SELECT teacher, parse_status, count(*) FROM generations GROUP BY ALL ORDER BY ALL").fetchall():
        out[teacher]["parse"][status] = n
    for teacher, split, graded, correct in store.con.execute(
        """SELECT a.teacher, s.split, count(a.correct), count(*) FILTER (WHERE a.correct)
           FROM annotations a JOIN seeds s ON s.id = a.seed_id GROUP BY ALL ORDER BY ALL""").fetchall():
        acc = out.setdefault(teacher, {}).setdefault("accuracy", {})
        acc[split] = {"graded": graded, "correct": correct,
                      "accuracy": round(correct / graded, 4) if graded else None}
    for teacher, bucket_, n in store.con.execute(
            "SELECT teacher, difficulty_bucket, count(*) FROM annotations GROUP BY ALL ORDER BY ALL").fetchall():
        out.setdefault(teacher, {}).setdefault("difficulty", {})[str(bucket_)] = n
    for teacher, sps, tps in store.con.execute(
        """SELECT teacher, arg_max(samples_per_s, stage_run), arg_max(tokens_per_s, stage_run)
           FROM teacher_runs GROUP BY teacher""").fetchall():
        out.setdefault(teacher, {})["throughput"] = {"samples_per_s": sps, "tokens_per_s": tps}
    return out
