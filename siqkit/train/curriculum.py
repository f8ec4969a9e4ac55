"""The train stage: run the curriculum's stages in order, each from the previous one's output.

:func:`train_curriculum` reads the curated traces folder and, for each stage of
``train.stages``:

1. builds the stage's examples (:func:`~siqkit.train.data.build_examples`) and renders
   them with the student's chat template;
2. resolves ``auto`` settings with the memory planner (``train.vram``, else the GPU's
   total memory; on a CPU without a budget: micro-batch 4 or less, no checkpointing,
   QLoRA) and records where each value came from;
3. loads the current model with the stage's frozen parts and method, trains it
   (:func:`~siqkit.train.loop.run_loop`: checkpoints every ``save_every`` steps, resumes
   from the newest one), and writes ``adapter/`` (peft format, LoRA stages) or
   ``trained.safetensors`` (the fully trained parts) and ``merged/`` (a plain
   safetensors checkpoint, the next stage's input);
4. evaluates the merged model on the held-out seeds, when there are some (and the base
   student once before the first stage).

A ``cot`` stage with ``answer_only_baseline`` also trains its answer-only twin
(``<stage>-answer-only``) from the same input model for the same optimizer steps, and
evaluates it; the twin does not feed later stages.

A stage whose trainable parts the student lacks (``align`` trains only the projector; a
text-only student has none) or that has no examples is skipped, with the reason
recorded. A finished stage is skipped on rerun if its settings, data and input model
are unchanged (its fingerprint, :func:`stage_identity`); when they changed, its old folder
is kept aside as ``<stage>.stale-<time>`` and the stage runs again, and so do the later
ones. An unfinished stage (a crash, ``kill -9``) resumes from its newest checkpoint, also
with another micro-batch/accumulation split of the same batch, another device or precision
(:data:`LAYOUT`); when anything else changed, the run stops with one line naming it, and
``train.restart_changed: true`` starts the stage again instead.

Run folder layout (``out_dir``)::

    stages/01-align/  log.jsonl  checkpoints/step-000050/  adapter/ | trained.safetensors  merged/  stage.json
    stages/03-reason-answer-only/   (a stage's answer-only twin, with ``answer_only_baseline``)
    eval/00-before/   eval.json  side_by_side.md  images/
    plots/loss.png  plots/eval.png
    summary.json
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from siqkit.errors import SiqkitError
from siqkit.hashing import digest
from siqkit.train.config import PARTS, StageConfig, StudentConfig, TrainConfig
from siqkit.train.data import Encoder, build_examples, load_traces
from siqkit.train.loop import LoopSettings, run_loop
from siqkit.train.watch import StageWatch

log = logging.getLogger(__name__)

CPU_MICRO_BATCH = 4


def _device(cfg: TrainConfig) -> str:
    import torch

    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_stage(stage: StageConfig, cfg: TrainConfig, model_path: Path, train_parts: set[str], device: str,
                  precision: str, image_sizes: list[list[tuple[int, int]]] | None = None) -> tuple[LoopSettings, dict]:
    """Loop settings and method for a stage, with ``auto`` filled in; and where each came from.

    ``image_sizes`` (``(width, height)`` per image, a list per example) let the planner count
    the stage's image tokens.
    """
    from siqkit.train.memory import PlanError, explain_misfit, human, parse_size, plan_memory

    method = stage.method
    fixed_ckpt = None if cfg.gradient_checkpointing == "auto" else cfg.gradient_checkpointing
    fixed_mb = None if cfg.micro_batch == "auto" else cfg.micro_batch
    needs_plan = method == "auto" or fixed_ckpt is None or fixed_mb is None
    budget = parse_size(cfg.vram) if cfg.vram else None
    if budget is None and device.startswith("cuda"):
        import torch

        budget = torch.cuda.get_device_properties(torch.device(device)).total_memory
    info: dict[str, Any] = {"plan_source": "recipe"}
    if needs_plan and budget is not None:
        quant = {"auto": ("none", "4bit"), "qlora": ("4bit",)}.get(method, ("none",))
        plan = plan_memory(
            model_path, budget, cfg.max_seq_len, batch_size=cfg.batch_size, lora_r=cfg.lora.r,
            lora_dropout=cfg.lora.dropout > 0, target_modules=cfg.lora.target_modules,
            train_parts=tuple(sorted(train_parts)), quantization=quant, precision=precision,
            lora=method != "full", checkpointing=(fixed_ckpt,) if fixed_ckpt is not None else (False, True),
            micro_batch=fixed_mb, loss=cfg.loss, image_sizes=image_sizes, max_image_pixels=cfg.max_image_pixels,
        )
        if not plan.fits:
            raise PlanError(f"stage '{stage.name}': {explain_misfit(plan)} (train.* keys)")
        if method == "auto":
            method = plan.method
        fixed_ckpt = plan.gradient_checkpointing if fixed_ckpt is None else fixed_ckpt
        fixed_mb = plan.micro_batch if fixed_mb is None else fixed_mb
        info = {"plan_source": f"planner for {human(budget)}", "estimate_bytes": plan.estimate_bytes}
        if plan.images:
            info["image_tokens"] = plan.images
    elif needs_plan:
        method = "qlora" if method == "auto" else method
        fixed_ckpt = False if fixed_ckpt is None else fixed_ckpt
        fixed_mb = min(CPU_MICRO_BATCH, cfg.batch_size) if fixed_mb is None else fixed_mb
        info = {"plan_source": "defaults (no memory budget on this device)"}
    accum = cfg.grad_accum if cfg.grad_accum != "auto" else math.ceil(cfg.batch_size / fixed_mb)
    settings = LoopSettings(
        micro_batch=fixed_mb, grad_accum=accum, epochs=stage.epochs, max_steps=stage.max_steps,
        learning_rate=stage.learning_rate or cfg.learning_rate, weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio, scheduler=cfg.scheduler, max_grad_norm=cfg.max_grad_norm,
        save_every=cfg.save_every, keep_checkpoints=cfg.keep_checkpoints, seed=cfg.seed, batching=cfg.batching,
        order=stage.order, precision=precision, device=device, loss=cfg.loss,
    )
    info.update(method=method, gradient_checkpointing=fixed_ckpt)
    return settings, info


# Settings that may change between a crash and the rerun: the loop re-cuts each step's
# examples into the new micro-batches (siqkit.train.loop.step_batches); they change speed,
# memory and rounding, not what the stage learns.
LAYOUT = ("micro_batch", "grad_accum", "device", "precision", "loss", "save_every", "keep_checkpoints")


class StageChanged(SiqkitError):
    """A stage's checkpoints were written with settings, data or a model this run does not have."""


def stage_identity(stage: StageConfig, cfg: TrainConfig, student: StudentConfig, settings: LoopSettings,
                   info: dict, model_path: Path, examples: list, text_only: bool) -> dict:
    """What a stage's result depends on, flat and named as in the recipe (its fingerprint digests it)."""
    from siqkit.models.checkpoints import model_identity

    flat = {f"stage.{k}": v for k, v in stage.model_dump(mode="json").items()}
    flat.update({k: v for k, v in asdict(settings).items() if k not in LAYOUT})
    flat.update({f"lora.{k}": v for k, v in cfg.lora.model_dump(mode="json").items()})
    flat.update({
        "batch_size": settings.micro_batch * settings.grad_accum, "method": info["method"],
        "max_seq_len": cfg.max_seq_len, "max_image_pixels": cfg.max_image_pixels, "text_only": text_only,
        "image_text": student.image_text, "input model": model_identity(model_path),
        "data": digest([e.key for e in examples], 16),
    })
    return flat


def _differences(old: dict, new: dict) -> str:
    if not old:
        return "settings this version of siqkit did not record (an older checkpoint)"
    keys = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
    named = {"data": "other data (the stage's examples changed)", "input model": "another input model"}
    shown = [named.get(k) or f"{k} {old.get(k)} (now {new.get(k)})" for k in keys[:3]]
    return ", ".join(shown) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _present_parts(model_path: Path) -> set[str]:
    from siqkit.train.memory import model_shape

    return {p for p, n in model_shape(model_path).params.items() if n}


def _stale(stage_dir: Path, why: str) -> None:
    if stage_dir.exists():
        aside = stage_dir.with_name(f"{stage_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        stage_dir.rename(aside)
        log.warning("%s: %s; kept the old folder as %s and training the stage again", stage_dir.name, why, aside.name)


def _read_history(stage_dir: Path) -> list[dict]:
    path = stage_dir / "log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def run_stage(position: int, stage: StageConfig, student: StudentConfig, cfg: TrainConfig, rows: list,
              model_path: Path, out_dir: Path, text_only: bool) -> dict:
    """Train one stage from ``model_path``; return its record (``merged_dir`` is the next input)."""
    from siqkit.train.checkpoint import latest_checkpoint, read_state
    from siqkit.train.images import image_sizes
    from siqkit.train.qlora import load_student, merge_stage, resolve_precision

    stage_dir = out_dir / "stages" / f"{position:02d}-{stage.name}"
    record: dict[str, Any] = {"position": position, "stage": stage.name, "data": stage.data,
                              "frozen": list(stage.freeze), "input_model": str(model_path)}
    examples, drops = build_examples(rows, stage, text_only=text_only, image_text=student.image_text, seed=cfg.seed)
    train_parts = _present_parts(model_path) - set(stage.freeze)
    if not train_parts:
        missing = ", ".join(p for p in PARTS if p not in stage.freeze)
        return {**record, "status": "skipped", "reason": f"the student has no {missing} to train",
                "dropped": dict(drops), "merged_dir": str(model_path)}
    if not examples:
        return {**record, "status": "skipped", "reason": f"no examples for data '{stage.data}' ({dict(drops)})",
                "dropped": dict(drops), "merged_dir": str(model_path)}

    device = _device(cfg)
    precision = resolve_precision(cfg.precision, device)
    sizes = [image_sizes(ex.images) for ex in examples] if any(ex.images for ex in examples) else None
    settings, info = resolve_stage(stage, cfg, model_path, train_parts, device, precision, sizes)
    identity = stage_identity(stage, cfg, student, settings, info, model_path, examples, text_only)
    fingerprint = digest(identity, 16)
    done_file = stage_dir / "stage.json"
    if done_file.is_file():
        done = json.loads(done_file.read_text())
        if done.get("fingerprint") == fingerprint and Path(done["merged_dir"]).is_dir():
            log.info("stage %s: already trained with these settings, skipped", stage.name)
            return {**done, "history": _read_history(stage_dir)}
        _stale(stage_dir, "settings, data or input model changed since it was trained")
    ckpt = latest_checkpoint(stage_dir / "checkpoints")
    if ckpt is not None and read_state(ckpt).get("fingerprint") != fingerprint:
        if not cfg.restart_changed:
            raise StageChanged(f"stage '{stage.name}': {ckpt.name} was written with "
                               f"{_differences(read_state(ckpt).get('identity') or {}, identity)}; the stage would "
                               "have to start again: set train.restart_changed: true (siqkit run: --set "
                               "train.restart_changed=true) to do that, the old folder kept aside")
        _stale(stage_dir, "its checkpoints were written with other settings, data or input model")
    stage_dir.mkdir(parents=True, exist_ok=True)

    import torch

    loaded = load_student(model_path, method=info["method"], freeze=list(stage.freeze), lora=cfg.lora,
                          precision=precision, device=device, gradient_checkpointing=info["gradient_checkpointing"],
                          trust_remote_code=student.trust_remote_code, seed=cfg.seed)
    encoder = Encoder(loaded.processor, vision=loaded.vision, max_seq_len=cfg.max_seq_len,
                      max_image_pixels=cfg.max_image_pixels)
    kept, encoded = [], []
    for ex in examples:
        enc = encoder.encode(ex)
        if enc is None:
            drops["prompt longer than max_seq_len"] += 1
        elif enc.target == 0:
            drops["no target tokens"] += 1
        else:
            kept.append(ex)
            encoded.append(enc)
    if not kept:
        return {**record, "status": "skipped", "reason": f"no example fits train.max_seq_len ({dict(drops)})",
                "dropped": dict(drops), "merged_dir": str(model_path)}
    log.info("stage %s: %d examples, method %s, micro-batch %d x %d, checkpointing %s (%s)", stage.name, len(kept),
             info["method"], settings.micro_batch, settings.grad_accum, info["gradient_checkpointing"],
             info["plan_source"])
    if info.get("image_tokens"):
        im = info["image_tokens"]
        log.info("stage %s: images take %d-%d tokens each (median %d), up to %d in a row, of max_seq_len %d",
                 stage.name, im["per_image_min"], im["per_image_max"], im["per_image_median"], im["per_row_max"],
                 cfg.max_seq_len)

    with StageWatch(stage.name, stage_dir, every=settings.save_every, report_to=cfg.report_to,
                    config={**identity, **{k: getattr(settings, k) for k in LAYOUT}}) as watch:
        result = run_loop(loaded.model, encoder, kept, encoded, settings, stage_dir, fingerprint, watch, identity)
    adapter_dir, trained = None, None
    if loaded.uses_lora:
        adapter_dir = stage_dir / "adapter"
        loaded.model.save_pretrained(str(adapter_dir))
    else:
        from safetensors.torch import save_file

        trained = {n: t.to("cpu").contiguous() for n, t in loaded.trainable_state().items()}
        save_file(trained, str(stage_dir / "trained.safetensors"))
    del loaded, encoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    merged = merge_stage(model_path, stage_dir / "merged", adapter_dir=adapter_dir, trained=trained,
                         trust_remote_code=student.trust_remote_code)
    record.update(
        status="done", reason=None, method=info["method"], plan_source=info["plan_source"],
        quantization="4bit" if info["method"] == "qlora" else "none", precision=precision,
        micro_batch=settings.micro_batch, grad_accum=settings.grad_accum,
        gradient_checkpointing=info["gradient_checkpointing"], dropped=dict(drops), loss=cfg.loss,
        image_tokens=info.get("image_tokens"),
        adapter_dir=str(adapter_dir) if adapter_dir else None, merged_dir=str(merged), fingerprint=fingerprint,
        **{k: v for k, v in result.items() if k != "history"},
    )
    done_file.write_text(json.dumps(record, indent=1) + "\n")
    return {**record, "history": result["history"]}


def train_curriculum(student_cfg: StudentConfig, train_cfg: TrainConfig, data_dir: str | Path,
                     out_dir: str | Path, *, store: Any = None, eval_seeds: Iterable[Any] | None = None,
                     stage_run: int | None = None) -> dict:
    """Run every stage of ``train_cfg`` on the traces in ``data_dir``; see the module docstring.

    ``eval_seeds`` are held-out seeds (see :func:`siqkit.evaluate.evaluate_student`); a seed
    the training data uses is refused before anything trains; each evaluation is
    :func:`siqkit.evaluate.evaluate.evaluate_checkpoint`. With ``store``, stages and steps are
    written to its tables (:mod:`siqkit.train.tables`), evaluations to evaluation's
    (:mod:`siqkit.evaluate.tables`), in one transaction.
    """
    from siqkit.evaluate.evaluate import as_seed, check_held_out, evaluate_checkpoint
    from siqkit.models.checkpoints import is_vision_checkpoint
    from siqkit.train.plots import plot_evals, plot_losses

    out_dir = Path(out_dir)
    base = Path(student_cfg.path)
    if not (base / "config.json").is_file():
        raise SiqkitError(f"student.path: no checkpoint at {base} (models are never downloaded; give a local folder)")
    rows = load_traces(data_dir)
    train_ids = {r.seed_id for r in rows}
    seeds = [as_seed(s) for s in eval_seeds] if eval_seeds is not None else []
    check_held_out(seeds, train_ids)
    vision = is_vision_checkpoint(base, student_cfg.trust_remote_code)
    text_only = (not vision) if student_cfg.text_only is None else student_cfg.text_only
    out_dir.mkdir(parents=True, exist_ok=True)

    evals: list[dict] = []

    def evaluate(model_path: Path, label: str) -> None:
        if seeds:
            evals.append(evaluate_checkpoint(
                model_path, label, len(evals), seeds, train_ids, out_dir, text_only=text_only,
                max_new_tokens=train_cfg.eval_max_new_tokens, batch_size=train_cfg.eval_batch_size,
                image_text=student_cfg.image_text, device=_device(train_cfg), table_rows=train_cfg.eval_table_rows))

    if train_cfg.evaluate_before:
        evaluate(base, "before")
    current, stages = base, []
    for position, stage in enumerate(train_cfg.stages, 1):
        record = run_stage(position, stage, student_cfg, train_cfg, rows, current, out_dir, text_only)
        stages.append(record)
        if record["status"] != "done":
            continue
        if stage.answer_only_baseline:  # same input, rows, steps and batch; answer-only targets
            twin = stage.model_copy(update={"name": f"{stage.name}-answer-only", "data": "answer",
                                            "max_steps": record["steps"], "answer_only_baseline": False})
            baseline = run_stage(position, twin, student_cfg, train_cfg, rows, current, out_dir, text_only)
            stages.append({**baseline, "baseline_of": stage.name})
        current = Path(record["merged_dir"])
        if not stage.evaluate:
            continue
        evaluate(current, f"after-{stage.name}")
        if stage.answer_only_baseline and baseline["status"] == "done":
            evaluate(Path(baseline["merged_dir"]), f"after-{twin.name}")
    plots = {"loss": str(plot_losses([(s["stage"], s.get("history") or []) for s in stages],
                                     out_dir / "plots" / "loss.png"))}
    if evals:
        plots["eval"] = str(plot_evals(evals, out_dir / "plots" / "eval.png"))
    summary = {"student": str(base), "text_only": text_only, "vision": vision, "data_dir": str(data_dir),
               "train_seeds": len(train_ids), "stages": stages, "evals": evals, "final_model": str(current),
               "plots": plots}
    brief = {**summary, "stages": [{k: v for k, v in s.items() if k != "history"} for s in stages],
             "evals": [{k: v for k, v in e.items() if k != "rows"} for e in evals]}
    (out_dir / "summary.json").write_text(json.dumps(brief, indent=1) + "\n")
    if store is not None:
        from siqkit.train.tables import write_results

        summary["store_rows"] = write_results(store, summary, stage_run)
    return summary
