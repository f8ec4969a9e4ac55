"""The ``export`` stage of a recipe run: the trained student to GGUF, verified.

It takes the train stage's final merged model (``RUN_DIR/train/summary.json``), or
``export.model`` when given, and calls the same code as ``siqkit export``
(:func:`siqkit.export.api.export_model`): native GGUF, quantization, an mmproj for
vision-language students that have one, verification against the Hugging Face model
(an f16 mismatch fails the stage), a Modelfile and a model card with the run's lineage; and
Hub cards (:mod:`siqkit.export.cards`) in the train run's adapter and merged folders.
Files land in ``RUN_DIR/export/``; ``export.compare`` writes more quants beside the
shipped one. With ``export.evaluate`` each exported file is then evaluated in
llama-cpp-python on the same held-out seeds as the student (``eval_runs`` label
``gguf-<quant>``; outputs in ``RUN_DIR/export/eval/gguf-<quant>/``), so the table shows what
each quant costs.

The shipped quant's verdict joins its agreement checks against the Hugging Face model (top-1
and greedy, :mod:`siqkit.export.verify`) and, when evaluated, its held-out accuracy drop
against the student, overall and per task, at most ``export.max_accuracy_drop``; the drop is
added to its ``.export.json``. With ``require_quant_agreement`` a missed verdict fails the
stage after every file is written and evaluated (the table shows why); without it, a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from siqkit.errors import SiqkitError
from siqkit.store import Store

if TYPE_CHECKING:
    from siqkit.recipe import Recipe

log = logging.getLogger("siqkit.export")


def final_model(recipe: Recipe) -> Path:
    """The model the export stage exports: ``export.model``, else the train stage's final model."""
    if recipe.export.model is not None:
        return recipe.export.model
    summary = recipe.run_dir / "train" / "summary.json"
    if not summary.is_file():
        raise SiqkitError(f"export: no trained model ({summary} is missing); run the train stage first, "
                          "or set export.model to a model folder")
    return Path(json.loads(summary.read_text())["final_model"])


def run_export(store: Store, recipe: Recipe, strict: bool = False) -> dict:
    from siqkit.export.api import export_model
    from siqkit.export.mmproj import MMPROJ_ARCHS

    if recipe.student is None and recipe.export.model is None:
        log.info("export: the recipe names no student and no export.model; nothing to do")
        return {"exported": False}
    model = final_model(recipe)
    cfg = recipe.export
    model_type = json.loads((model / "config.json").read_text()).get("model_type")
    name = cfg.name or recipe.run.name
    out_dir = recipe.run_dir / "export"
    mmproj = out_dir / f"{name}.mmproj-f16.gguf" if cfg.mmproj and model_type in MMPROJ_ARCHS else None
    base = recipe.student.path if recipe.student is not None and recipe.student.build is None else None
    lineage = {"base_model": base, "recipe": str(recipe.path), "run": str(recipe.run_dir), "model": str(model),
               "dataset": recipe.train.dataset, "train": store.last_stage_runs().get("train", {}).get("counts")}
    if recipe.export.model is None:  # Hub cards for the train run's adapters and merged models
        from siqkit.export.cards import write_training_cards

        write_training_cards(store, base)
    gguf = out_dir / f"{name}.{cfg.quant}.gguf"
    result = export_model(model, gguf, cfg.quant, mmproj, verify=cfg.verify, name=name, lineage=lineage)
    counts = {"model": str(model), "files": result.get("files"), "passed": result.get("passed"),
              "seconds": result.get("seconds")}
    others = [q for q in dict.fromkeys(cfg.compare) if q != cfg.quant]
    for q in others:  # the shipped file's mmproj serves them too; no Modelfile or card of their own
        extra = export_model(model, out_dir / f"{name}.{q}.gguf", q, None, verify=cfg.verify, name=name,
                             modelfile=False, card=False)
        counts["files"] += [f for f in extra.get("files") or [] if f["quant"] == q]
    failures = [] if not cfg.verify else [f"{cfg.quant}: {x}" for f in result["files"] if f["quant"] == cfg.quant
                                          for x in (f.get("verify") or {}).get("failures") or []]
    if cfg.evaluate and recipe.student is not None:
        files = {q: out_dir / f"{name}.{q}.gguf" for q in [cfg.quant, *others]}
        results = evaluate_ggufs(store, recipe, files, mmproj)
        evals = {q: {k: r[k] for k in ("label", "seeds", "judged", "correct", "accuracy", "format_ok", "tasks")}
                 for q, r in results.items()}
        counts["eval"] = evals.get(cfg.quant, {})
        counts["compare"] = {q: evals[q] for q in others if q in evals}
        drop = accuracy_drop(store, model, results[cfg.quant]) if results else {}
        if drop:
            counts["accuracy_drop"] = drop
            failures += [f"{cfg.quant} answers {d:.1%} of {where} worse than the student (at most "
                         f"{cfg.max_accuracy_drop:.1%})" for where, d in drop.items() if d > cfg.max_accuracy_drop + 1e-9]
            _add_verdict(gguf, drop, cfg.max_accuracy_drop)
    counts["verdict"] = {"quant": cfg.quant, "passed": not failures, "failures": failures}
    if failures:
        where = gguf.with_name(gguf.name + ".export.json")
        if recipe.is_tiny or not cfg.require_quant_agreement:
            # a random twin (or a barely trained student) has no confident choices for a quant
            # to keep; an f16 mismatch still fails inside export_model
            log.warning("export: %s missed its bar%s: %s; see %s", cfg.quant,
                        " on the untrained --tiny twin" if recipe.is_tiny else "", "; ".join(failures), where)
        else:
            raise SiqkitError(f"export: {cfg.quant} failed its verdict: {'; '.join(failures)}; see {where}, "
                              "or ship a wider quant (export.quant)")
    return counts


def accuracy_drop(store: Store, model: Path, gguf_eval: dict) -> dict[str, float]:
    """How much held-out accuracy the exported file lost (``gguf_eval``, an
    :func:`~siqkit.evaluate.evaluate.evaluate_student` result) against the newest student
    evaluation of ``model`` on the same seeds: ``{"overall": ..., "task <name>": ...}``; empty
    when the student was not evaluated on them."""
    from siqkit.evaluate.table import output_tasks

    found = store.con.execute(
        """SELECT stage_run, after_stage, accuracy FROM eval_runs WHERE model_dir = ?
           ORDER BY stage_run DESC LIMIT 1""", [str(model)]).fetchone()
    if not found:
        return {}
    run, label, accuracy = found
    seeds = [r[0] for r in store.con.execute(
        "SELECT seed_id FROM eval_outputs WHERE stage_run = ? AND after_stage = ?", [run, label]).fetchall()]
    if sorted(seeds) != sorted(r["seed_id"] for r in gguf_eval["rows"]):
        return {}
    out = {"overall": (accuracy or 0.0) - (gguf_eval["accuracy"] or 0.0)}
    mine = gguf_eval["tasks"]
    for task, score in output_tasks(store, run, label).items():
        if task in mine:
            out[f"task {task}"] = (score["accuracy"] or 0.0) - (mine[task]["accuracy"] or 0.0)
    return out


def _add_verdict(gguf: Path, drop: dict[str, float], limit: float) -> None:
    """Record the held-out accuracy drop in the file's ``.export.json`` beside its agreement checks."""
    path = gguf.with_name(gguf.name + ".export.json")
    if path.is_file():
        data = json.loads(path.read_text())
        data["accuracy_drop"] = {"max": limit, "measured": drop, "passed": all(d <= limit + 1e-9 for d in drop.values())}
        path.write_text(json.dumps(data, indent=2) + "\n")


def evaluate_ggufs(store: Store, recipe: Recipe, files: dict[str, Path], mmproj: Path | None) -> dict[str, dict]:
    """Each exported file (by quant) in llama.cpp on the held-out seeds the student was
    evaluated on, recorded as ``gguf-<quant>``; the :func:`evaluate_student` results by quant."""
    from siqkit.evaluate.evaluate import evaluate_student
    from siqkit.evaluate.heldout import eval_seeds, training_seed_ids
    from siqkit.evaluate.stage import record_evals

    seeds = eval_seeds(store, recipe)
    if not seeds:
        log.info("export: no held-out seeds to evaluate %s on", ", ".join(p.name for p in files.values()))
        return {}
    train_ids = training_seed_ids(recipe.run_dir / "datasets" / recipe.train.dataset)
    cfg = recipe.train
    results = {}
    for quant, gguf in files.items():
        label = f"gguf-{quant}"
        results[quant] = evaluate_student(
            gguf, seeds, train_ids, max_new_tokens=cfg.eval_max_new_tokens,
            text_only=None if mmproj is not None else True, image_text=recipe.student.image_text, mmproj=mmproj,
            table_rows=cfg.eval_table_rows, label=label, out_dir=recipe.run_dir / "export" / "eval" / label)
        log.info("eval %s: accuracy %s, format %.2f", label, results[quant]["accuracy"], results[quant]["format_ok"])
    record_evals(store, "export", list(results.values()), recipe.run_dir)
    return results
