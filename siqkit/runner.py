"""Running a recipe: which stages, in which order, with their settings and counts recorded.

Every stage in :data:`siqkit.STAGES` has a function ``(store, recipe, strict) -> counts``
in :data:`STAGE_RUNNERS`. :func:`run_recipe` runs the stages a command asks for
(:func:`select_stages`: all of them, ``--only`` one, or ``--from`` one to the end) in
pipeline order, in the recipe's run folder under its lock; each stage's resolved settings
(the recipe sections in :data:`STAGE_SECTIONS`) and its counts go into ``stage_runs``,
so ``siqkit inspect`` can show what ran with what. :func:`plan` says what a run would do
without running anything (``siqkit check``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from siqkit import STAGES
from siqkit.archs import VISION_ARCHS
from siqkit.errors import RecipeError
from siqkit.progress import setup_logging
from siqkit.recipe import Recipe
from siqkit.annotate.stage import run_annotate
from siqkit.curate.stage import run_curate
from siqkit.evaluate.stage import run_eval
from siqkit.export.stage import run_export
from siqkit.generate.stage import run_generate
from siqkit.seeds.stage import run_seeds
from siqkit.train.stage import run_train
from siqkit.seeds.sources import build_source
from siqkit.store import RunLock, Store, store_fault
from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.registry import missing_packages

log = logging.getLogger("siqkit")

StageFn = Callable[[Store, Recipe, bool], dict]
STAGE_RUNNERS: dict[str, StageFn] = {
    "seeds": run_seeds, "generate": run_generate, "annotate": run_annotate, "curate": run_curate,
    "train": run_train, "eval": run_eval, "export": run_export,
}
STAGE_SECTIONS = {  # recipe sections each stage reads, saved with its run
    "seeds": ("seeds",), "generate": ("teachers", "generate"), "annotate": ("annotate", "teachers"),
    "curate": ("curate",), "train": ("student", "train", "eval"), "eval": ("student", "train", "eval"),
    "export": ("export", "eval"),
}


def select_stages(only: str | None, start: str | None) -> list[str]:
    """The stages a command asks for, in pipeline order; an unknown one is an error."""
    if only and start:
        raise RecipeError("--only and --from: give one or the other")
    for flag, name in (("--only", only), ("--from", start)):
        if name is None:
            continue
        if name not in STAGES:
            raise RecipeError(f"{flag} {name}: unknown stage; expected one of {', '.join(STAGES)}")
    if only:
        return [only]
    first = STAGES.index(start) if start else 0
    return list(STAGES[first:])


def run_recipe(recipe: Recipe, only: str | None = None, start: str | None = None,
               strict: bool = False, command: str = "siqkit run") -> Path:
    """Run the chosen stages of a validated recipe in its run folder; return the folder."""
    stages = select_stages(only, start)
    run_dir = recipe.run_dir
    lock = RunLock(run_dir)
    lock.acquire(command)
    try:
        setup_logging(run_dir / "siqkit.log")
        if recipe.is_tiny:
            from siqkit.tiny_run import build_twins

            build_twins(recipe)
        if "generate" in stages or ("annotate" in stages and recipe.annotate.judge):
            missing = missing_packages(recipe.teachers)
            if missing:  # before any stage: not after an hour of seeds
                raise TeacherLoadError(missing[0])
        store = Store.open(run_dir, create=True)
        try:
            stale = store.mark_interrupted()
            if stale:
                log.warning("%d stage run(s) left running by a process that died are marked interrupted", stale)
            log.info("run folder %s; stages: %s", run_dir, ", ".join(stages))
            for stage in stages:
                try:
                    _run_stage(store, recipe, stage, STAGE_RUNNERS[stage], strict)
                except Exception as e:  # noqa: BLE001 - store faults become one line, others pass
                    fault = store_fault(run_dir, e)
                    if fault is None:
                        raise
                    raise fault from None
        finally:
            store.close()
    finally:
        lock.release()
    return run_dir


def _run_stage(store: Store, recipe: Recipe, stage: str, fn: StageFn, strict: bool) -> dict:
    settings = {"seed": recipe.seed, "recipe": str(recipe.path) if recipe.path else None}
    dumped = recipe.model_dump(mode="json")
    for section in STAGE_SECTIONS.get(stage, ()):
        settings[section] = dumped.get(section)
    run_id = store.begin_stage(stage, settings)
    t0 = time.perf_counter()
    try:
        counts = fn(store, recipe, strict)
    except BaseException as e:
        store.end_stage(run_id, {}, error=f"{type(e).__name__}: {e}")
        raise
    counts["seconds"] = round(time.perf_counter() - t0, 2)
    store.end_stage(run_id, counts)
    log.info("%s: done in %.1f s", stage, counts["seconds"])
    return counts


def plan(recipe: Recipe) -> dict:
    """What ``siqkit run`` would do: stages, models, data sources and their sizes."""
    stages = []
    for stage in STAGES:
        if stage == "seeds":
            status = "will run"
            detail = f"{len(recipe.seeds.sources)} sources, seed {recipe.seed}"
        elif stage in ("generate", "annotate") and not recipe.teachers:
            status, detail = "nothing to do", "no teachers in the recipe"
        elif stage == "generate":
            status = "will run"
            detail = f"{len(recipe.teachers)} teachers, routing: {recipe.generate.routing}"
        elif stage == "annotate":
            status = "will run"
            detail = f"judge: {recipe.annotate.judge}" if recipe.annotate.judge else "gold answers, rules"
        elif stage == "curate":
            c = recipe.curate
            mix = c.selection.difficulty.mix
            status = "will run"
            detail = (f"splits {', '.join(c.splits)}; "
                      + (f"dedup at Jaccard {c.dedup.threshold:g}" if c.dedup.enabled else "no dedup")
                      + "; mix " + ("/".join(f"{mix.get(b, 0):g}" for b in ("easy", "medium", "hard")) if mix else "none")
                      + ("; reasoning length by difficulty" if c.selection.reasoning_length else "")
                      + f"; {len(c.subsets)} subsets")
        elif stage in ("train", "eval", "export") and recipe.student is None and recipe.export.model is None:
            status, detail = "nothing to do", "no student in the recipe"
        elif stage == "train":
            status = "will run"
            detail = " -> ".join(s.name + (" (+ answer-only twin)" if s.answer_only_baseline else "")
                                 for s in recipe.train.stages) + f" on datasets/{recipe.train.dataset}"
        elif stage == "eval":
            status = "will run" if recipe.student is not None else "nothing to do"
            ev = recipe.eval
            cap = f", at most {ev.max_seeds} in all" if ev.max_seeds else ""
            detail = (f"{ev.per_task} held-out seeds of {', '.join(ev.splits)} per task (by {ev.task_by}){cap}: "
                      "every student checkpoint, the teachers on the same seeds")
        else:
            ex = recipe.export
            status = "will run"
            detail = (ex.quant + (", verified" if ex.verify else "")
                      + (f"; also {', '.join(ex.compare)}, for comparison" if ex.compare else ""))
        stages.append({"stage": stage, "status": status, "detail": detail})
    sources = []
    for cfg in recipe.seeds.sources:
        info = build_source(cfg, recipe.seed).describe()
        sources.append({"name": cfg.name, "type": cfg.type, "path": str(cfg.path or ""),
                        "rows": info.get("rows"), "size_bytes": info.get("size_bytes"),
                        "splits": info.get("splits"), "max": cfg.max, "weight": cfg.weight})
    models = [{"role": "teacher", "name": t.name, "backend": t.backend,
               "model": str(t.path or t.callable or t.model or ("(tiny twin)" if recipe.is_tiny else "")),
               "samples": t.samples}
              for t in recipe.teachers]
    st = recipe.student
    if st is not None:
        b = st.build
        if b is not None:
            model = f"built from scratch: {b.arch}, hidden {b.hidden_size}, {b.layers} layers"
            if b.vision_pretrain_steps and b.arch in VISION_ARCHS:
                model += f", vision pre-trained for {b.vision_pretrain_steps} steps"
        else:
            model = str(st.path or "(tiny twin)")
        models.append({"role": "student", "name": (b.arch if b else st.arch) or "student", "backend": "transformers",
                       "model": model, "samples": "-"})
    return {"recipe": str(recipe.path), "run_dir": str(recipe.run_dir), "seed": recipe.seed,
            "stages": stages, "sources": sources, "models": models,
            "max_total": recipe.seeds.max_total,
            "warnings": [] if recipe.is_tiny else missing_packages(recipe.teachers)}
