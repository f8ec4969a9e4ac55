"""The ``generate`` stage: every selected seed, routed to its teacher(s), k samples each.

Work is keyed by (seed, teacher, prompt, sampling, sample index) — see
:mod:`siqkit.generate.prompts`. Each batch's results are written in one transaction, and a
key is the table's primary key, so ``kill -9`` at any moment loses at most the batch in
flight and a rerun never duplicates a key: it skips keys already done and redoes only
those missing or that ended in a backend error. Raw text is always kept; the parsed
reasoning/answer and the parse status (``ok``, ``truncated``, ``no_answer`` …) sit beside it.

Teachers see the question, the images and the seed's source and split — never its gold
answer or other metadata.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from siqkit.generate.prompts import render_messages, sampling_dict, teacher_identity, work_key
from siqkit.generate.routing import Router
from siqkit.progress import make_progress
from siqkit.recipe import Recipe
from siqkit.store import Store
from siqkit.teachers.base import Sampling, TeacherInput
from siqkit.teachers.parse import parse_cot
from siqkit.teachers.registry import load_teacher

log = logging.getLogger("siqkit.generate")


GEN_COLUMNS = ["key", "seed_id", "teacher", "teacher_identity", "prompt", "sampling", "sample_index",
               "raw", "reasoning", "answer", "parse_status", "parse_reason", "finish_reason", "error",
               "prompt_tokens", "completion_tokens", "seconds", "created_at"]


@dataclass
class _Work:
    key: str
    seed_id: str
    question: str
    images: list[str]
    messages: list[dict]
    source: str
    split: str
    sample_index: int


def run_generate(store: Store, recipe: Recipe, strict: bool = False) -> dict:
    if not recipe.teachers:
        log.info("generate: the recipe names no teachers; nothing to do")
        return {"teachers": {}}
    seeds = _selected_seeds(store, recipe)
    router = Router(recipe.teachers, recipe.generate.routing)
    routed: dict[str, list[tuple]] = {t.name: [] for t in recipe.teachers}
    unrouted = 0
    for row in seeds:
        names = router.assign(row[1], row[2], row[3], bool(row[4]))
        unrouted += not names
        for name in names:
            routed[name].append(row)
    if unrouted:
        log.warning("generate: %d selected seeds match no teacher's route and get no trace", unrouted)
    counts: dict = {"seeds": len(seeds), "unrouted": unrouted, "teachers": {}}
    for cfg in recipe.teachers:
        counts["teachers"][cfg.name] = _run_teacher(store, recipe, cfg, routed[cfg.name])
    return counts


def _selected_seeds(store: Store, recipe: Recipe) -> list[tuple]:
    """Selected seeds in a seed-determined order, limited per split by ``generate.max_seeds``."""
    gen = recipe.generate
    rows = store.con.execute(
        "SELECT id, source, split, question, images, row_number() OVER "
        "(PARTITION BY split ORDER BY md5(CAST(? AS VARCHAR) || ':' || id)) AS rank "
        "FROM seeds WHERE selected ORDER BY split, rank",
        [recipe.seed],
    ).fetchall()
    out = []
    for row in rows:
        if gen.splits is not None and row[2] not in gen.splits:
            continue
        if gen.max_seeds is not None and row[2] in gen.max_seeds and row[5] > gen.max_seeds[row[2]]:
            continue
        out.append(row[:5])
    return out


def _run_teacher(store: Store, recipe: Recipe, cfg, seeds: list[tuple]) -> dict:
    identity = teacher_identity(cfg)
    sampling = sampling_dict(cfg, recipe.seed)
    work: list[_Work] = []
    for seed_id, source, split, question, images in seeds:
        messages = render_messages(cfg, question, source, split, len(images))
        for k in range(cfg.samples):
            key = work_key(seed_id, identity, messages, sampling, k)
            work.append(_Work(key, seed_id, question, list(images), messages, source, split, k))
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
    t_start = time.perf_counter()
    tokens = 0
    try:
        with make_progress() as progress:
            task = progress.add_task(f"generate: {cfg.name}", total=len(todo), unit="samples")
            for i in range(0, len(todo), cfg.batch_size):
                batch = todo[i: i + cfg.batch_size]
                inputs = [_input(store, w, cfg, recipe.seed) for w in batch]
                t0 = time.perf_counter()
                outputs = teacher.generate(inputs)
                per_sample = (time.perf_counter() - t0) / len(batch)
                now = datetime.now()
                rows = []
                for w, out in zip(batch, outputs):
                    parsed = parse_cot(out.text, out.finish_reason, out.error)
                    c["parse"][parsed.status] = c["parse"].get(parsed.status, 0) + 1
                    c["errors"] += out.finish_reason == "error"
                    tokens += out.completion_tokens or 0
                    rows.append((
                        w.key, w.seed_id, cfg.name, json.dumps(identity), json.dumps(w.messages),
                        json.dumps(sampling), w.sample_index, out.text, parsed.reasoning, parsed.answer,
                        parsed.status, parsed.reason, out.finish_reason, out.error,
                        out.prompt_tokens, out.completion_tokens, per_sample, now,
                    ))
                with store.transaction():  # one batch, one commit
                    store.insert("generations", GEN_COLUMNS, rows, "INSERT OR REPLACE")
                c["generated"] += len(batch)
                elapsed = time.perf_counter() - t_start
                progress.update(task, advance=len(batch),
                                description=f"generate: {cfg.name} ({tokens / elapsed:,.0f} tok/s)")
    finally:
        teacher.close()
    seconds = time.perf_counter() - t_start
    c.update(seconds=round(seconds, 2), samples_per_s=round(c["generated"] / seconds, 2),
             tokens_per_s=round(tokens / seconds, 2), completion_tokens=tokens)
    store.con.execute(
        "INSERT INTO teacher_runs VALUES ((SELECT max(id) FROM stage_runs WHERE stage = 'generate'), "
        "?, ?, ?, ?, ?, ?, ?)",
        [cfg.name, c["generated"], c["errors"], seconds, tokens, c["samples_per_s"], c["tokens_per_s"]],
    )
    log.info("generate: %s: %d samples in %.1f s (%.1f samples/s, %.0f tok/s), %d errors, parse %s",
             cfg.name, c["generated"], seconds, c["samples_per_s"], c["tokens_per_s"], c["errors"], c["parse"])
    return c


def _input(store: Store, w: _Work, cfg, seed: int) -> TeacherInput:
    s = cfg.sampling
    return TeacherInput(
        key=w.key, seed_id=w.seed_id, question=w.question,
        images=[store.media.image(h) for h in w.images], messages=w.messages,
        sampling=Sampling(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                          top_p=s.top_p, seed=seed + w.sample_index),
        sample_index=w.sample_index, metadata={"source": w.source, "split": w.split},
    )
