"""The ``export`` stage of a recipe run: the trained student to GGUF, verified.

It takes the train stage's final merged model (``RUN_DIR/train/summary.json``), or
``export.model`` when given, and calls the same code as ``siqkit export``
(:func:`siqkit.export.api.export_model`): native GGUF, quantization, an mmproj for
vision-language students that have one, verification against the Hugging Face model
(an f16 mismatch fails the stage), a Modelfile and a model card with the run's lineage; and
Hub cards (:mod:`siqkit.export.cards`) in the train run's adapter and merged folders.
Files land in ``RUN_DIR/export/``. With ``export.evaluate`` the exported file is then
evaluated in llama-cpp-python on the same held-out seeds as the student (``eval_runs``
label ``gguf-<quant>``; outputs in ``RUN_DIR/export/eval/``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from siqkit.errors import SiqkitError
from siqkit.recipe import Recipe
from siqkit.store import Store

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
    result = export_model(model, out_dir / f"{name}.{cfg.quant}.gguf", cfg.quant, mmproj,
                          verify=cfg.verify, name=name, lineage=lineage)
    if cfg.verify and not result.get("passed", False) and (recipe.is_tiny or not cfg.require_quant_agreement):
        # a random twin (or a barely trained student) has no confident choices for a k-quant
        # to keep; an f16 mismatch still fails inside export_model
        log.warning("export: %s missed its agreement bar (f16 matched)%s; see %s", cfg.quant,
                    " on the untrained --tiny twin" if recipe.is_tiny else "",
                    out_dir / f"{name}.{cfg.quant}.gguf.export.json")
    elif cfg.verify and not result.get("passed", False):
        raise SiqkitError(f"export: {cfg.quant} failed its agreement check against the Hugging Face model; "
                          f"see {out_dir / (name + '.' + cfg.quant + '.gguf.export.json')}")
    counts = {"model": str(model), "files": result.get("files"), "passed": result.get("passed"),
              "seconds": result.get("seconds")}
    if cfg.evaluate and recipe.student is not None:
        counts["eval"] = evaluate_gguf(store, recipe, out_dir / f"{name}.{cfg.quant}.gguf", mmproj)
    return counts


def evaluate_gguf(store: Store, recipe: Recipe, gguf: Path, mmproj: Path | None) -> dict:
    """Accuracy of the exported file in llama.cpp on the held-out seeds the student was evaluated on."""
    from siqkit.evaluate.evaluate import evaluate_student
    from siqkit.evaluate.stage import record_evals
    from siqkit.train.data import training_seed_ids
    from siqkit.train.stage import eval_seeds

    seeds = eval_seeds(store, recipe)
    if not seeds:
        log.info("export: no held-out seeds to evaluate %s on", gguf.name)
        return {}
    label = f"gguf-{recipe.export.quant}"
    train_ids = training_seed_ids(recipe.run_dir / "datasets" / recipe.train.dataset)
    cfg = recipe.train
    result = evaluate_student(gguf, seeds, train_ids, max_new_tokens=cfg.eval_max_new_tokens,
                              text_only=None if mmproj is not None else True, image_text=recipe.student.image_text,
                              mmproj=mmproj, table_rows=cfg.eval_table_rows, label=label,
                              out_dir=recipe.run_dir / "export" / "eval")
    record_evals(store, "export", [result], recipe.run_dir)
    log.info("eval %s: accuracy %s, format %.2f", label, result["accuracy"], result["format_ok"])
    return {k: result[k] for k in ("label", "seeds", "judged", "correct", "accuracy", "format_ok")}
