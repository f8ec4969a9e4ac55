"""The ``generate`` stage: every selected seed, routed to its teacher(s), k samples each.

Work is keyed by (seed, teacher, prompt, sampling, sample index) — see
:mod:`siqkit.generate.prompts`. How many requests the engine holds and how often the store
commits are separate: a streaming engine (vLLM, transformers' continuous batching) pulls
requests as it frees room for them, other backends get ``batch_size`` requests per call,
and finished samples are committed in small transactions (``generate.commit_rows`` samples
or ``generate.commit_seconds`` seconds, whichever comes first). A key is the table's
primary key, so ``kill -9`` at any moment loses at most the requests in flight and the last
few seconds of finished ones, and a rerun never duplicates a key: it skips keys already
done and redoes only those missing or that ended in a backend error. Raw text is always
kept; the parsed reasoning/answer and the parse status (``ok``, ``truncated``,
``no_answer`` …) sit beside it.

The progress bar shows samples/s, tokens/s and the ETA; without a terminal the same line
is logged every 30 seconds. Each teacher's totals (samples/s, tokens/s) go to ``teacher_runs``.

Teachers see the question, the images and the seed's source and split — never its gold
answer or other metadata.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from siqkit.generate.prompts import render_messages, sampling_dict, work_key
from siqkit.generate.routing import Router
from siqkit.progress import console, make_progress
from siqkit.records import Generation, Seed, TeacherRun
from siqkit.store import Store, seeded_hash
from siqkit.teachers.base import DEFAULT_BATCH, Sampling, TeacherInput, TeacherOutput, iter_outputs
from siqkit.teachers.identity import teacher_identity
from siqkit.teachers.parse import parse_cot
from siqkit.teachers.registry import load_teacher

if TYPE_CHECKING:
    from siqkit.recipe import Recipe

log = logging.getLogger("siqkit.generate")


@dataclass
class _Work:
    key: str
    seed: Seed
    messages: list[dict]
    sample_index: int


def run_generate(store: Store, recipe: Recipe, strict: bool = False) -> dict:
    if not recipe.teachers:
        log.info("generate: the recipe names no teachers; nothing to do")
        return {"teachers": {}}
    seeds = _selected_seeds(store, recipe)
    router = Router(recipe.teachers, recipe.generate.routing)
    routed: dict[str, list[Seed]] = {t.name: [] for t in recipe.teachers}
    unrouted = 0
    for seed in seeds:
        names = router.assign(seed.source, seed.split, seed.question, bool(seed.images))
        unrouted += not names
        for name in names:
            routed[name].append(seed)
    if unrouted:
        log.warning("generate: %d selected seeds match no teacher's route and get no trace", unrouted)
    counts: dict = {"seeds": len(seeds), "unrouted": unrouted, "teachers": {}}
    for cfg in recipe.teachers:
        counts["teachers"][cfg.name] = _run_teacher(store, recipe, cfg, routed[cfg.name])
    return counts


def _selected_seeds(store: Store, recipe: Recipe) -> list[Seed]:
    """Selected seeds in a seed-determined order, limited per split by ``generate.max_seeds``."""
    gen = recipe.generate
    rows = store.con.execute(
        f"SELECT {Seed.select()}, row_number() OVER (PARTITION BY split ORDER BY {seeded_hash('id')}) AS rank "
        "FROM seeds WHERE selected ORDER BY split, rank",
        [recipe.seed],
    ).fetchall()
    out = []
    for *row, rank in rows:
        seed = Seed.from_row(row)
        if gen.splits is not None and seed.split not in gen.splits:
            continue
        if gen.max_seeds is not None and seed.split in gen.max_seeds and rank > gen.max_seeds[seed.split]:
            continue
        out.append(seed)
    return out


def _run_teacher(store: Store, recipe: Recipe, cfg, seeds: list[Seed]) -> dict:
    identity = teacher_identity(cfg)
    sampling = sampling_dict(cfg, recipe.seed)
    work: list[_Work] = []
    for seed in seeds:
        messages = render_messages(cfg, seed.question, seed.source, seed.split, len(seed.images))
        for k in range(cfg.samples):
            work.append(_Work(work_key(seed.id, identity, messages, sampling, k), seed, messages, k))
    done = {r[0] for r in store.con.execute(
        "SELECT key FROM generations WHERE teacher = ? AND finish_reason != 'error'", [cfg.name]).fetchall()}
    todo = [w for w in work if w.key not in done]
    c = {"seeds": len(seeds), "samples": len(work), "already_done": len(work) - len(todo),
         "generated": 0, "errors": 0, "parse": {}}
    if not todo:
        log.info("generate: %s: all %d samples already done; skipping", cfg.name, len(work))
        return c
    log.info("generate: %s (%s): %d samples to do, %d already done",
             cfg.name, cfg.backend, len(todo), c["already_done"])
    teacher = load_teacher(cfg)
    by_key = {w.key: w for w in todo}
    writer = _Writer(store, recipe.generate.commit_rows, recipe.generate.commit_seconds)
    meter = _Meter(cfg.name, len(todo))
    chunk = getattr(teacher, "window", None) or cfg.batch_size or DEFAULT_BATCH
    shared = (json.dumps(identity), json.dumps(sampling))  # the same in every row of this teacher
    try:
        with make_progress() as progress:
            task = progress.add_task(f"generate: {cfg.name}", total=len(todo), unit="samples")
            inputs = (_input(store, w, cfg, recipe.seed) for w in todo)
            for out in iter_outputs(teacher, inputs, chunk):
                w = by_key.pop(out.key)  # each key comes back once
                writer.add(_row(w, out, cfg.name, shared, c))
                meter.add(out.completion_tokens or 0)
                progress.update(task, advance=1, description=f"generate: {cfg.name} ({meter.tokens_per_s:,.0f} tok/s)")
                meter.maybe_log()
        writer.flush()
        seconds = meter.elapsed  # the teacher's load and close are not part of its rate
        c["generated"] = meter.done
    finally:
        try:
            writer.flush()  # finished samples are kept, whatever stopped the loop
        finally:
            teacher.close()
    c.update(seconds=round(seconds, 2), samples_per_s=round(meter.done / seconds, 2),
             tokens_per_s=round(meter.tokens / seconds, 2), completion_tokens=meter.tokens)
    store.write([TeacherRun(store.current_run("generate"), cfg.name, c["generated"], c["errors"], seconds,
                            meter.tokens, c["samples_per_s"], c["tokens_per_s"])])
    log.info("generate: %s: %d samples in %.1f s (%.1f samples/s, %.0f tok/s), %d errors, parse %s",
             cfg.name, c["generated"], seconds, c["samples_per_s"], c["tokens_per_s"], c["errors"], c["parse"])
    return c


def _row(w: _Work, out: TeacherOutput, teacher: str, shared: tuple[str, str], c: dict) -> Generation:
    """The generation of one output, its ``seconds`` left to :class:`_Writer`.

    ``shared`` is the teacher's identity and sampling, as JSON.
    """
    parsed = parse_cot(out.text, out.finish_reason, out.error)
    c["parse"][parsed.status] = c["parse"].get(parsed.status, 0) + 1
    c["errors"] += out.finish_reason == "error"
    identity, sampling = shared
    return Generation(
        key=w.key, seed_id=w.seed.id, teacher=teacher, teacher_identity=identity, prompt=json.dumps(w.messages),
        sampling=sampling, sample_index=w.sample_index, raw=out.text, reasoning=parsed.reasoning,
        answer=parsed.answer, parse_status=parsed.status, parse_reason=parsed.reason,
        finish_reason=out.finish_reason, error=out.error, prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens, created_at=datetime.now())


class _Writer:
    """Commits finished rows in small transactions: every ``rows`` rows or ``seconds`` seconds.

    Each row's ``seconds`` is the wall time since the previous commit shared among the rows
    of this one, so the column sums to the teacher's wall time.
    """

    def __init__(self, store: Store, rows: int, seconds: float):
        self.store, self.rows, self.seconds = store, rows, seconds
        self.pending: list[Generation] = []
        self.last = time.perf_counter()

    def add(self, row: Generation) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.rows or time.perf_counter() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        now = time.perf_counter()
        if self.pending:
            share = (now - self.last) / len(self.pending)
            for row in self.pending:
                row.seconds = share
            with self.store.transaction():
                self.store.write(self.pending, "INSERT OR REPLACE")
            self.pending = []
        self.last = now


class _Meter:
    """Samples and tokens done, their rates, and a log line every ``every`` seconds off a terminal."""

    def __init__(self, name: str, total: int, every: float = 30.0):
        self.name, self.total, self.every = name, total, every
        self.start = self.last_log = time.perf_counter()
        self.done = self.tokens = 0

    def add(self, tokens: int) -> None:
        self.done += 1
        self.tokens += tokens

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed

    def maybe_log(self) -> None:
        now = time.perf_counter()
        if console.is_terminal or now - self.last_log < self.every:
            return
        self.last_log = now
        rate = self.done / self.elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        log.info("generate: %s: %d/%d samples, %.2f samples/s, %.0f tok/s, eta %s",
                 self.name, self.done, self.total, rate, self.tokens_per_s, _duration(eta))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"


def _input(store: Store, w: _Work, cfg, seed: int) -> TeacherInput:
    s = cfg.sampling
    return TeacherInput(
        key=w.key, seed_id=w.seed.id, question=w.seed.question,
        images=[store.media.image(h, max_pixels=cfg.max_pixels) for h in w.seed.images], messages=w.messages,
        sampling=Sampling(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                          top_p=s.top_p, seed=seed + w.sample_index),
        sample_index=w.sample_index, metadata={"source": w.seed.source, "split": w.seed.split},
    )
