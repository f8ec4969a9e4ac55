"""The training loop of one stage: gradient accumulation, assistant-only loss, checkpoints, resume.

The data stream is the concatenation of the epochs' micro-batch plans
(:func:`siqkit.train.data.plan_batches`), so optimizer step ``k`` always trains on
micro-batches ``(k-1)·accum … k·accum-1`` of that stream: the data position is a
function of the step. A resumed run loads the newest complete checkpoint and carries on
at the next step with the same micro-batches, learning-rate schedule and RNG state.

A checkpoint records the split the data order was planned with. A run that resumes with
another split of the same effective batch (say 2 x 8 after 1 x 16 on a larger GPU), or on
another device or precision, keeps that order: each step trains on the same examples, cut
into micro-batches of the new size (:func:`step_batches`). Only the rounding and LoRA
dropout's random masks differ from an uninterrupted run.

The loss of a step is the mean over every target token of its micro-batches (not the
mean of per-micro-batch means), so accumulation gives the same gradient as one big batch.
It is computed without the full logits (:mod:`siqkit.train.loss`: the LM head and the
cross-entropy run in chunks, or fused on CUDA); ``loss="plain"`` is the reference path.

``log.jsonl`` in the stage folder gets one line per optimizer step: loss, learning rate,
gradient norm, tokens, seconds and the example keys of each micro-batch. Lines past the
checkpoint a run resumes from are dropped first, so the log always matches the weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siqkit.train.checkpoint import latest_checkpoint, load_checkpoint, read_state, save_checkpoint
from siqkit.train.data import IGNORE, Encoded, Encoder, Example, plan_batches
from siqkit.train.loss import target_loss

log = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    """What the loop needs, resolved (no ``auto`` left)."""

    micro_batch: int
    grad_accum: int
    epochs: float
    max_steps: int | None
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    scheduler: str
    max_grad_norm: float
    save_every: int
    keep_checkpoints: int
    seed: int
    batching: str
    order: str
    precision: str
    device: str
    loss: str = "auto"  # auto, chunked or plain: how the loss meets the LM head (siqkit.train.loss)


class ResumeMismatch(RuntimeError):
    """A checkpoint was written with other settings or data than this run's."""


def data_stream(encoded: list[Encoded], examples: list[Example], s: LoopSettings,
                micro_batch: int | None = None) -> list[list[int]]:
    """Every micro-batch the stage trains on, in order (whole epochs, then the fraction),
    planned with ``micro_batch`` (default: the settings')."""
    lengths = [e.length for e in encoded]
    groups = [1 if ex.images else 0 for ex in examples]
    diffs = [ex.difficulty for ex in examples]
    stream: list[list[int]] = []
    for epoch in range(math.ceil(s.epochs)):
        plan = plan_batches(lengths, micro_batch=micro_batch or s.micro_batch, seed=s.seed, epoch=epoch,
                            order=s.order, batching=s.batching, groups=groups, difficulty=diffs)
        share = min(1.0, s.epochs - epoch)
        stream.extend(plan[: max(1, round(share * len(plan)))])
    return stream


def step_batches(encoded: list[Encoded], examples: list[Example], s: LoopSettings,
                 order: tuple[int, int] | None = None) -> list[list[list[int]]]:
    """The micro-batches of every optimizer step.

    ``order`` is the ``(micro_batch, grad_accum)`` the data order was planned with (a
    checkpoint's, when a run resumes with another split of the same batch); each step's
    examples are then the same, re-cut into micro-batches of the settings' size (longest
    first, never mixing rows with and without images), so the step's gradient is the same.
    """
    mb, accum = order or (s.micro_batch, s.grad_accum)
    stream = data_stream(encoded, examples, s, micro_batch=mb)
    steps = [stream[i : i + accum] for i in range(0, len(stream), accum)]
    if mb == s.micro_batch:
        return steps
    out = []
    for step in steps:
        rows = sorted((i for b in step for i in b), key=lambda i: (bool(examples[i].images), -encoded[i].length))
        cut: list[list[int]] = []
        for has_images in (False, True):
            members = [i for i in rows if bool(examples[i].images) == has_images]
            cut.extend(members[j : j + s.micro_batch] for j in range(0, len(members), s.micro_batch))
        out.append(cut)
    return out


def lr_schedule(total: int, warmup: int, kind: str):
    """The learning-rate multiplier per step: linear warm-up, then constant, linear or cosine decay."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant" or total <= warmup:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def peak_memory_bytes(device: str) -> int:
    """Peak memory so far: allocated GPU memory on CUDA, the process's peak RSS on CPU."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _truncate_log(path: Path, step: int) -> list[dict]:
    if not path.is_file():
        return []
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in kept if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def run_loop(model: Any, encoder: Encoder, examples: list[Example], encoded: list[Encoded], s: LoopSettings,
             stage_dir: Path, fingerprint: str, progress: Any = None, identity: dict | None = None) -> dict:
    """Train until the stage's last step, resuming from its newest checkpoint; return its numbers.

    ``progress(step, total, row)`` is called after every optimizer step with its log row.
    ``identity`` (the settings the fingerprint digests) is stored in each checkpoint, so a
    refused resume can name what changed.
    """
    import torch

    ckpt_root = stage_dir / "checkpoints"
    ckpt = latest_checkpoint(ckpt_root)
    layout = (read_state(ckpt).get("layout") or {}) if ckpt is not None else {}
    order = (layout["order_micro_batch"], layout["order_grad_accum"]) if layout else (s.micro_batch, s.grad_accum)
    if order[0] * order[1] != s.micro_batch * s.grad_accum:
        raise ResumeMismatch(f"{ckpt}: written with batch {order[0]} x {order[1]}, this run has "
                             f"{s.micro_batch} x {s.grad_accum}; the effective batch must stay the same")
    steps = step_batches(encoded, examples, s, order)
    total = len(steps) if s.max_steps is None else min(len(steps), s.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    warmup = int(s.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(total, warmup, s.scheduler))
    log_path = stage_dir / "log.jsonl"
    here = {"micro_batch": s.micro_batch, "grad_accum": s.grad_accum, "device": s.device, "precision": s.precision}

    torch.manual_seed(s.seed)
    start, resumed_from = 0, None
    if ckpt is not None:
        found = read_state(ckpt).get("fingerprint")
        if found != fingerprint:
            raise ResumeMismatch(f"{ckpt}: written with other settings or data (fingerprint {found} != {fingerprint})")
        state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
        start, resumed_from = state["step"], str(ckpt)
        log.info("resuming from %s (step %d of %d)", ckpt, start, total)
        changed = [f"{k} {layout[k]} -> {v}" for k, v in here.items() if k in layout and layout[k] != v]
        if changed:
            log.info("resumed with %s; every step trains on the same examples as before", ", ".join(changed))
    history = _truncate_log(log_path, start)
    micro_batches = sum(len(x) for x in steps)

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(s.precision)
    device_type = "cuda" if s.device.startswith("cuda") else "cpu"
    autocast = (lambda: torch.autocast(device_type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device_type) if s.precision == "fp16" else None
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    model.train()
    tokens_run, seconds_run = 0, 0.0
    with log_path.open("a") as log_fh:
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            chunk = steps[step - 1]
            batches = [encoder.collate([examples[i] for i in mb], [encoded[i] for i in mb]) for mb in chunk]
            n_target = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
            loss_sum, n_tokens = 0.0, 0
            for batch in batches:
                batch = {k: v.to(s.device) if hasattr(v, "to") else v for k, v in batch.items()}
                labels = batch.pop("labels")
                n_tokens += int(batch["attention_mask"].sum())
                with autocast():
                    loss = target_loss(model, batch, labels, loss=s.loss)
                scaled = loss / max(1, n_target)
                (scaler.scale(scaled) if scaler else scaled).backward()
                loss_sum += float(loss.detach())
                del loss, scaled
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = (torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm) if s.max_grad_norm > 0
                         else torch.zeros(()))
            lr = scheduler.get_last_lr()[0]
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            tokens_run += n_tokens
            seconds_run += seconds
            cursor = sum(len(x) for x in steps[:step])
            row = {"step": step, "loss": loss_sum / max(1, n_target), "lr": lr, "grad_norm": float(grad_norm),
                   "tokens": n_tokens, "target_tokens": n_target, "seconds": round(seconds, 4),
                   "batches": [[examples[i].key for i in mb] for mb in chunk]}
            history.append(row)
            log_fh.write(json.dumps(row) + "\n")
            log_fh.flush()
            if progress is not None:
                progress(step, total, row)
            if step % s.save_every == 0 or step == total:
                save_checkpoint(
                    ckpt_root, step, keep=s.keep_checkpoints, optimizer=optimizer, scheduler=scheduler,
                    trainable={n: p for n, p in model.named_parameters() if p.requires_grad},
                    state={"fingerprint": fingerprint, "total_steps": total, "micro_batch_cursor": cursor,
                           "micro_batches": micro_batches, "loss": row["loss"], "identity": identity or {},
                           "layout": {**here, "order_micro_batch": order[0], "order_grad_accum": order[1]}},
                )
    losses = [r["loss"] for r in history]
    return {
        "steps": total, "resumed_from": resumed_from, "resumed_at_step": start if resumed_from else None,
        "examples": len(examples), "micro_batches": micro_batches,
        "tokens": sum(r["tokens"] for r in history), "target_tokens": sum(r["target_tokens"] for r in history),
        "tokens_per_s": tokens_run / seconds_run if seconds_run else None,
        "peak_memory_bytes": peak_memory_bytes(s.device), "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None, "history": history,
    }
