"""The memory planner: quantisation, micro-batch, accumulation and checkpointing for a budget.

``siqkit plan-memory --model PATH --vram 8GB --seq 2048`` and the train stage's ``auto``
settings call :func:`plan_memory`. The model is built from its ``config.json`` on
PyTorch's meta device (no weights are read), so its exact parameter counts per part are
known; the estimate of a candidate setting is the sum of:

- **weights**: NF4 with double quantisation costs 4.127 bits per quantised weight (4 bits,
  an 8-bit absmax per 64 weights, an fp32 constant per 256 absmaxes); everything that is
  not a language-model linear layer (embeddings, norms, LM head, vision tower, projector)
  stays in the compute dtype;
- **trainable**: LoRA weights (``r·(in+out)`` per targeted layer) and fully trained parts
  at 16 bytes per parameter (fp32 weight, gradient and AdamW's two moments);
- **activations**: per layer and token, ``6h + 2·kv + 4·i`` values in the compute dtype
  (norm outputs, q/k/v, attention output, residual, MLP gate/up/product), plus
  ``6h + i`` for LoRA dropout's copies; with gradient checkpointing only each layer's
  input is kept, plus one layer's activations during recomputation. Attention scores are
  not counted (PyTorch's SDPA kernels do not store them), nor is a frozen vision tower's
  forward pass (nothing before it needs gradients, so it keeps no activations);
- **logits**: ``seq · vocab`` values in the compute dtype, plus the fp32 copy and its
  gradient that the loss needs;
- **overhead**: 0.5 GiB for the CUDA context and allocator, then 10% on top of everything.

Candidates (4-bit or not, checkpointing or not, micro-batch 1…batch size in powers of
two) are scored by expected speed (larger micro-batches, no recomputation, no
dequantisation are faster); the best one that fits is chosen. "8GB" means 8 GiB, as GPU
makers label their cards.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siqkit.errors import SiqkitError

GIB = 1 << 30
NF4_BYTES = 4.127 / 8
OVERHEAD_BYTES = GIB // 2
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": GIB, "gb": GIB, "gib": GIB, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


class PlanError(SiqkitError):
    """No setting fits the memory budget, or the budget is malformed."""


def parse_size(text: str | int) -> int:
    """``"8GB"``, ``"8GiB"``, ``"7500MB"``, ``"24G"`` or a byte count -> bytes (GB = GiB)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read memory size {text!r}; write e.g. 8GB, 7500MB or 24GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass
class ModelShape:
    """What the estimate needs to know about a model, from its config."""

    model_type: str
    vision: bool
    params: dict[str, int]  # per part: vision, projector, language
    quantizable: int  # language-model linear weights (what 4-bit quantises)
    lora_per_rank: int  # LoRA parameters per unit of rank over all targeted layers
    hidden: int
    layers: int
    intermediate: int
    kv_dim: int
    vocab: int


def model_shape(model_path: str | Path, target_modules: str | list[str] = "all-linear",
                trust_remote_code: bool = False) -> ModelShape:
    """Count a checkpoint's parameters per part without loading its weights."""
    import torch
    from transformers import AutoConfig

    from siqkit.train.qlora import _auto_class, is_vision_checkpoint, lora_targets, part_of

    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise PlanError(f"{path}: no config.json (give a local checkpoint folder)")
    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    vision = is_vision_checkpoint(path, trust_remote_code)
    with torch.device("meta"):
        model = _auto_class(vision).from_config(cfg, trust_remote_code=trust_remote_code)
    params: dict[str, int] = {}
    for n, p in model.named_parameters():
        params[part_of(n)] = params.get(part_of(n), 0) + p.numel()
    modules = dict(model.named_modules())
    targets = lora_targets(model, target_modules)
    quantizable = sum(modules[t].weight.numel() for t in lora_targets(model, "all-linear"))
    lora_per_rank = sum(modules[t].in_features + modules[t].out_features for t in targets)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv = getattr(text, "num_key_value_heads", None) or heads
    return ModelShape(
        model_type=cfg.model_type, vision=vision, params=params, quantizable=quantizable,
        lora_per_rank=lora_per_rank, hidden=text.hidden_size, layers=text.num_hidden_layers,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size), kv_dim=kv * head_dim,
        vocab=text.vocab_size,
    )


def estimate(shape: ModelShape, *, quantized: bool, micro_batch: int, checkpointing: bool, seq_len: int,
             lora_r: int = 16, lora_dropout: bool = True, train_parts: tuple[str, ...] = ("language",),
             precision: str = "bf16", lora: bool = True) -> dict[str, float]:
    """Bytes per component for one setting (see the module docstring)."""
    w = 4 if precision == "fp32" else 2
    total_params = sum(shape.params.values())
    full_parts = [p for p in train_parts if p != "language" or not lora]
    full_trained = sum(shape.params.get(p, 0) for p in full_parts)
    if quantized:
        weights = shape.quantizable * NF4_BYTES + (total_params - shape.quantizable - full_trained) * w
    else:
        weights = (total_params - full_trained) * w
    lora_params = shape.lora_per_rank * lora_r if ("language" in train_parts and lora) else 0
    trainable = 16 * (lora_params + full_trained)
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    per_token = w * (6 * h + 2 * kv + 4 * i) + (w * (6 * h + i) if lora_params and lora_dropout else 0)
    tokens = seq_len * micro_batch
    if checkpointing:
        activations = tokens * (shape.layers * w * h + per_token)
    else:
        activations = tokens * shape.layers * per_token
    logits = tokens * shape.vocab * (w + 8)
    subtotal = weights + trainable + activations + logits + OVERHEAD_BYTES
    return {"weights": weights, "trainable": trainable, "activations": activations, "logits": logits,
            "overhead": OVERHEAD_BYTES + 0.1 * subtotal, "total": 1.1 * subtotal}


@dataclass
class Plan:
    """The planner's choice for a budget, with its estimate and the candidates it weighed."""

    model: str
    budget_bytes: int
    seq_len: int
    quantization: str  # "4bit" or "none"
    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    fits: bool
    estimate_bytes: float
    breakdown: dict[str, float]
    precision: str
    candidates: list[dict] = field(default_factory=list)

    @property
    def method(self) -> str:
        """The stage method this plan means when the language model trains with LoRA."""
        return "qlora" if self.quantization == "4bit" else "lora"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _speed(quantized: bool, checkpointing: bool, micro_batch: int) -> float:
    # Rough relative throughput: recomputation costs about a third of a forward+backward,
    # dequantising NF4 weights some 15%, and batching helps with diminishing returns.
    return (0.75 if checkpointing else 1.0) * (0.85 if quantized else 1.0) * (micro_batch / (micro_batch + 1))


def plan_memory(model_path: str | Path, vram_bytes: int | str, seq_len: int, *, batch_size: int = 16,
                lora_r: int = 16, lora_dropout: bool = True, target_modules: str | list[str] = "all-linear",
                train_parts: tuple[str, ...] = ("language",), quantization: tuple[str, ...] = ("none", "4bit"),
                precision: str = "bf16", lora: bool = True, checkpointing: tuple[bool, ...] = (False, True),
                micro_batch: int | None = None) -> Plan:
    """Choose quantisation, micro-batch, accumulation and checkpointing that fit ``vram_bytes``.

    ``quantization``, ``checkpointing`` and ``micro_batch`` restrict the candidates (the
    train stage passes what the recipe fixes). When nothing fits, the returned plan has
    ``fits=False`` and is the smallest candidate.
    """
    try:
        budget = parse_size(vram_bytes)
    except ValueError as e:
        raise PlanError(str(e)) from None
    if seq_len < 1 or batch_size < 1:
        raise PlanError("seq and batch size must be at least 1")
    shape = model_shape(model_path, target_modules)
    sizes = [micro_batch] if micro_batch else [2**k for k in range(int(math.log2(batch_size)) + 1)]
    cands = []
    for q in quantization:
        for ckpt in checkpointing:
            for mb in sizes:
                est = estimate(shape, quantized=q == "4bit", micro_batch=mb, checkpointing=ckpt, seq_len=seq_len,
                               lora_r=lora_r, lora_dropout=lora_dropout, train_parts=train_parts,
                               precision=precision, lora=lora)
                cands.append({"quantization": q, "gradient_checkpointing": ckpt, "micro_batch": mb,
                              "estimate_bytes": est["total"], "fits": est["total"] <= budget,
                              "speed": _speed(q == "4bit", ckpt, mb), "breakdown": est})
    fitting = [c for c in cands if c["fits"]]
    best = (max(fitting, key=lambda c: (c["speed"], -c["estimate_bytes"])) if fitting
            else min(cands, key=lambda c: c["estimate_bytes"]))
    return Plan(
        model=str(model_path), budget_bytes=budget, seq_len=seq_len, quantization=best["quantization"],
        micro_batch=best["micro_batch"], grad_accum=math.ceil(batch_size / best["micro_batch"]),
        gradient_checkpointing=best["gradient_checkpointing"], fits=best["fits"],
        estimate_bytes=best["estimate_bytes"], breakdown=best["breakdown"], precision=precision,
        candidates=sorted(cands, key=lambda c: (-c["fits"], -c["speed"], c["estimate_bytes"])),
    )


def plan_memory_command(model: str | Path, vram: str, seq: int, *, batch_size: int = 16, lora_r: int = 16,
                        console: Any = None) -> Plan:
    """Print the plan for ``siqkit plan-memory`` as tables; return it."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    plan = plan_memory(model, vram, seq, batch_size=batch_size, lora_r=lora_r)
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    table = Table(title=f"{model}: {human(plan.estimate_bytes)} of {human(plan.budget_bytes)} ({verdict})")
    table.add_column("component")
    table.add_column("estimate", justify="right")
    for key, value in plan.breakdown.items():
        table.add_row(key, human(value))
    table.add_section()
    table.add_row("quantization", "4-bit NF4 (QLoRA)" if plan.quantization == "4bit" else "none (LoRA, bf16)")
    table.add_row("micro-batch x accumulation", f"{plan.micro_batch} x {plan.grad_accum} = "
                  f"{plan.micro_batch * plan.grad_accum} sequences of {seq}")
    table.add_row("gradient checkpointing", "on" if plan.gradient_checkpointing else "off")
    console.print(table)
    others = Table(title="candidates, best first")
    for col in ("quantization", "checkpointing", "micro-batch", "estimate", "fits"):
        others.add_column(col)
    for c in plan.candidates[:8]:
        others.add_row(c["quantization"], "on" if c["gradient_checkpointing"] else "off", str(c["micro_batch"]),
                       human(c["estimate_bytes"]), "yes" if c["fits"] else "no")
    console.print(others)
    if not plan.fits:
        console.print("nothing fits: lower --seq, use a smaller model, or give more memory")
    return plan
