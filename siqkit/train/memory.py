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
- **logits** (:func:`loss_bytes`): ``w + 8`` bytes per logit (the value in the compute
  dtype, the fp32 log-probabilities and their gradient); with the default loss
  (:mod:`siqkit.train.loss`, chunked or fused: the full logits never exist) for one chunk
  of :func:`~siqkit.train.loss.chunk_tokens` rows, plus the target rows' hidden states and
  their gradient; with ``loss="plain"`` for all ``seq · micro-batch`` positions (measured
  on CPU in fp32 for both, ``tests/train/test_memory.py``);
- **images**: the vision tower's positions for the most image tokens one row has (the
  training data's image sizes after ``max_image_pixels``, counted by the student's own
  processor, :mod:`siqkit.train.images`) times the micro-batch: one layer's activations
  (``8·vh + 4·vi`` values per position) while the tower is frozen, every layer's when it
  trains, plus the projector's input when the projector trains. Pixel values are not
  counted (a few KiB per patch). Image tokens sit inside ``max_seq_len``, so they do not
  add language-model activations; a row whose image tokens alone reach ``max_seq_len``
  cannot train, and the plan says so;
- **overhead**: 0.5 GiB for the CUDA context and allocator, then 10% on top of everything.

Candidates (4-bit or not, checkpointing or not, micro-batch 1…batch size in powers of
two) are scored by expected speed (larger micro-batches, no recomputation, no
dequantisation are faster); the best one that fits is chosen. When none fits, the plan
lists the nearest changes that would (a lower ``max_image_pixels``, a shorter
``max_seq_len``, micro-batch 1, 4-bit). "8GB" means 8 GiB, as GPU makers label their cards.
The loss term matches the measured CPU peak within 1% for both losses; the chunked loss
and the image term are not yet checked against a GPU's measured peak (the numbers in
``benchmarks/RESULTS.md`` say which were).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siqkit.errors import SiqkitError
from siqkit.train.images import patches_per_token
from siqkit.train.loss import LOSSES, chunk_tokens

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
    vision_hidden: int = 0  # vision tower width, depth and MLP width (0 for text-only models)
    vision_layers: int = 0
    vision_intermediate: int = 0
    patches_per_token: int = 1  # vision-tower positions per image token (siqkit.train.images)


def model_shape(model_path: str | Path, target_modules: str | list[str] = "all-linear",
                trust_remote_code: bool = False) -> ModelShape:
    """Count a checkpoint's parameters per part without loading its weights."""
    import torch
    from transformers import AutoConfig

    from siqkit.models.checkpoints import is_vision_checkpoint
    from siqkit.train.qlora import _auto_class, lora_targets, part_of

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
    vc = getattr(cfg, "vision_config", None)
    v_hidden = (getattr(vc, "hidden_size", None) or getattr(vc, "embed_dim", None) or 0) if vc else 0
    v_layers = (getattr(vc, "depth", None) or getattr(vc, "num_hidden_layers", None) or 0) if vc else 0
    v_inter = (getattr(vc, "intermediate_size", None) or int(v_hidden * getattr(vc, "mlp_ratio", 4))) if vc else 0
    return ModelShape(
        model_type=cfg.model_type, vision=vision, params=params, quantizable=quantizable,
        lora_per_rank=lora_per_rank, hidden=text.hidden_size, layers=text.num_hidden_layers,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size), kv_dim=kv * head_dim,
        vocab=text.vocab_size, vision_hidden=v_hidden, vision_layers=v_layers, vision_intermediate=v_inter,
        patches_per_token=patches_per_token(cfg),
    )


def estimate(shape: ModelShape, *, quantized: bool, micro_batch: int, checkpointing: bool, seq_len: int,
             lora_r: int = 16, lora_dropout: bool = True, train_parts: tuple[str, ...] = ("language",),
             precision: str = "bf16", lora: bool = True, loss: str = "auto",
             image_tokens: int = 0) -> dict[str, float]:
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
    logits = loss_bytes(shape.vocab, h, tokens, w, loss)
    images = _vision_bytes(shape, image_tokens * micro_batch, train_parts, w)
    subtotal = weights + trainable + activations + logits + images + OVERHEAD_BYTES
    return {"weights": weights, "trainable": trainable, "activations": activations, "logits": logits,
            "images": images, "overhead": OVERHEAD_BYTES + 0.1 * subtotal, "total": 1.1 * subtotal}


def loss_bytes(vocab: int, hidden: int, tokens: int, w: int, loss: str = "auto") -> float:
    """Peak bytes of the loss over ``tokens`` positions (``w``: bytes per compute-dtype value).

    Per logit: the value in the compute dtype, the fp32 log-probabilities the cross-entropy
    keeps, and their fp32 gradient (``w + 8`` bytes). The plain loss holds them for every
    position; the chunked one for one chunk, plus the target rows' hidden states and their
    gradient.
    """
    if loss == "plain":
        return float(tokens * vocab * (w + 8))
    return float(min(tokens, chunk_tokens(vocab)) * vocab * (w + 8) + tokens * hidden * 2 * w)


def _vision_bytes(shape: ModelShape, image_tokens: int, train_parts: tuple[str, ...], w: int) -> float:
    """The vision tower's share for ``image_tokens`` image tokens in one micro-batch."""
    if not image_tokens or not shape.vision_hidden:
        return 0.0
    patches = image_tokens * shape.patches_per_token
    vh, vi = shape.vision_hidden, shape.vision_intermediate
    per_layer = patches * w * (8 * vh + 4 * vi)  # MHA: q, k, v, output, norms, residual; MLP
    kept = per_layer * shape.vision_layers if "vision" in train_parts else per_layer  # frozen: one layer live
    if "projector" in train_parts:
        kept += patches * vh * w * 2  # the projector's input and its first layer's output
    return float(kept)


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
    loss: str = "auto"
    images: dict | None = None  # image tokens of the training data (see count_image_tokens)
    problem: str | None = None  # why nothing fits, in one line
    would_fit: list[str] = field(default_factory=list)  # when nothing fits: changes that would
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


def count_image_tokens(processor: Any, rows: list[list[tuple[int, int]]], max_pixels: int | None) -> dict | None:
    """Image tokens of the training rows (each a list of ``(width, height)``) after the pixel cap:
    per image (min, median, max) and the most in one row. None when no row has an image."""
    from siqkit.train.images import ImageCountError, capped_size, image_token_counts

    flat = [size for row in rows for size in row]
    if not flat:
        return None
    try:
        counts = image_token_counts(processor, flat, max_pixels)
    except ImageCountError as e:
        raise PlanError(str(e)) from None
    per_row, at = [], 0
    for row in rows:
        per_row.append(sum(counts[at : at + len(row)]))
        at += len(row)
    ordered = sorted(counts)
    return {"images": len(flat), "rows": sum(1 for r in rows if r), "max_pixels": max_pixels,
            "largest_pixels": max(w * h for w, h in (capped_size(w, h, max_pixels) for w, h in flat)),
            "per_image_min": ordered[0], "per_image_median": ordered[len(ordered) // 2],
            "per_image_max": ordered[-1], "per_row_max": max(per_row)}


def plan_memory(model_path: str | Path, vram_bytes: int | str, seq_len: int, *, batch_size: int = 16,
                lora_r: int = 16, lora_dropout: bool = True, target_modules: str | list[str] = "all-linear",
                train_parts: tuple[str, ...] = ("language",), quantization: tuple[str, ...] = ("none", "4bit"),
                precision: str = "bf16", lora: bool = True, checkpointing: tuple[bool, ...] = (False, True),
                micro_batch: int | None = None, loss: str = "auto",
                image_sizes: list[list[tuple[int, int]]] | None = None, max_image_pixels: int | None = None,
                processor: Any = None, suggest: bool = True) -> Plan:
    """Choose quantisation, micro-batch, accumulation and checkpointing that fit ``vram_bytes``.

    ``quantization``, ``checkpointing`` and ``micro_batch`` restrict the candidates (the
    train stage passes what the recipe fixes). ``image_sizes`` are the training rows'
    image sizes (``(width, height)`` per image, a list per row); their tokens, after
    ``max_image_pixels``, are counted with the student's processor (loaded from
    ``model_path`` unless given). When nothing fits, the returned plan has ``fits=False``,
    is the smallest candidate, and ``would_fit`` lists the changes that would fit.
    """
    try:
        budget = parse_size(vram_bytes)
    except ValueError as e:
        raise PlanError(str(e)) from None
    if seq_len < 1 or batch_size < 1:
        raise PlanError("seq and batch size must be at least 1")
    if loss not in LOSSES:
        raise PlanError(f"loss: expected one of {', '.join(LOSSES)} (got {loss!r})")
    shape = model_shape(model_path, target_modules)
    images = None
    if shape.vision and image_sizes and any(image_sizes):
        if processor is None:
            from siqkit.train.qlora import load_processor_for

            try:
                processor = load_processor_for(model_path, True)
            except Exception as exc:  # noqa: BLE001 - a config-only folder has no processor
                raise PlanError(f"{model_path}: cannot load the processor to count image tokens "
                                f"({type(exc).__name__})") from None
        images = count_image_tokens(processor, image_sizes, max_image_pixels)
    image_tokens = images["per_row_max"] if images else 0
    sizes = [micro_batch] if micro_batch else [2**k for k in range(int(math.log2(batch_size)) + 1)]
    cands = []
    for q in quantization:
        for ckpt in checkpointing:
            for mb in sizes:
                est = estimate(shape, quantized=q == "4bit", micro_batch=mb, checkpointing=ckpt, seq_len=seq_len,
                               lora_r=lora_r, lora_dropout=lora_dropout, train_parts=train_parts,
                               precision=precision, lora=lora, loss=loss, image_tokens=image_tokens)
                cands.append({"quantization": q, "gradient_checkpointing": ckpt, "micro_batch": mb,
                              "estimate_bytes": est["total"], "fits": est["total"] <= budget,
                              "speed": _speed(q == "4bit", ckpt, mb), "breakdown": est})
    problem = None
    if image_tokens >= seq_len:
        problem = f"images take up to {image_tokens} tokens in a row, not less than max_seq_len {seq_len}"
        for c in cands:
            c["fits"] = False
    fitting = [c for c in cands if c["fits"]]
    best = (max(fitting, key=lambda c: (c["speed"], -c["estimate_bytes"])) if fitting
            else min(cands, key=lambda c: c["estimate_bytes"]))
    if not fitting and problem is None:
        problem = (f"no setting fits {human(budget)}: the smallest needs {human(best['estimate_bytes'])} "
                   f"(micro-batch {best['micro_batch']}, max_seq_len {seq_len})")
    plan = Plan(
        model=str(model_path), budget_bytes=budget, seq_len=seq_len, quantization=best["quantization"],
        micro_batch=best["micro_batch"], grad_accum=math.ceil(batch_size / best["micro_batch"]),
        gradient_checkpointing=best["gradient_checkpointing"], fits=bool(fitting),
        estimate_bytes=best["estimate_bytes"], breakdown=best["breakdown"], precision=precision, loss=loss,
        images=images, problem=problem,
        candidates=sorted(cands, key=lambda c: (-c["fits"], -c["speed"], c["estimate_bytes"])),
    )
    if not fitting and suggest:
        again = dict(batch_size=batch_size, lora_r=lora_r, lora_dropout=lora_dropout, target_modules=target_modules,
                     train_parts=train_parts, quantization=quantization, precision=precision, lora=lora,
                     checkpointing=checkpointing, micro_batch=micro_batch, loss=loss, image_sizes=image_sizes,
                     max_image_pixels=max_image_pixels, processor=processor, suggest=False)
        plan.would_fit = _what_would_fit(model_path, budget, seq_len, images, again)
    return plan


def _what_would_fit(model_path: str | Path, budget: int, seq_len: int, images: dict | None, kw: dict) -> list[str]:
    """The nearest changes that fit: a lower pixel cap, a shorter max_seq_len, micro-batch 1, 4-bit."""
    found = []
    if images:
        pixels = images["largest_pixels"] // 2
        while pixels >= 28 * 28:
            p = plan_memory(model_path, budget, seq_len, **{**kw, "max_image_pixels": pixels})
            if p.fits:
                found.append(f"max_image_pixels {pixels} ({human(p.estimate_bytes)})")
                break
            pixels //= 2
    seq = seq_len // 2
    while seq >= 128:
        p = plan_memory(model_path, budget, seq, **kw)
        if p.fits:
            found.append(f"max_seq_len {seq} ({human(p.estimate_bytes)})")
            break
        seq //= 2
    if kw["micro_batch"] and kw["micro_batch"] > 1:
        p = plan_memory(model_path, budget, seq_len, **{**kw, "micro_batch": 1})
        if p.fits:
            found.append(f"micro_batch 1 ({human(p.estimate_bytes)})")
    if "4bit" not in kw["quantization"] and kw["lora"]:
        p = plan_memory(model_path, budget, seq_len, **{**kw, "quantization": ("4bit",)})
        if p.fits:
            found.append(f"method qlora ({human(p.estimate_bytes)})")
    return found


def explain_misfit(plan: Plan) -> str:
    """One line: why nothing fits, and what would."""
    fix = ("; would fit: " + ", ".join(plan.would_fit)) if plan.would_fit else \
        "; nothing the planner can change fits: use a smaller student or more memory"
    return plan.problem + fix


def plan_memory_command(model: str | Path, vram: str, seq: int, *, batch_size: int = 16, lora_r: int = 16,
                        data: str | Path | None = None, max_image_pixels: int | None = None, loss: str = "auto",
                        console: Any = None) -> Plan:
    """Print the plan for ``siqkit plan-memory`` as tables; return it.

    ``data`` is a curated traces folder (``data.jsonl``): its images are counted in tokens.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    sizes = None
    if data is not None:
        from siqkit.train.data import load_traces
        from siqkit.train.images import image_sizes

        sizes = [image_sizes(r.images) for r in load_traces(data)]
    plan = plan_memory(model, vram, seq, batch_size=batch_size, lora_r=lora_r, loss=loss, image_sizes=sizes,
                       max_image_pixels=max_image_pixels)
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
    table.add_row("loss", "plain (full logits)" if loss == "plain" else "chunked/fused (no full logits)")
    if plan.images:
        im = plan.images
        table.add_row("image tokens", f"{im['per_image_min']}-{im['per_image_max']} per image (median "
                      f"{im['per_image_median']}), up to {im['per_row_max']} in a row; {im['images']} images")
        table.add_row("image pixel cap", str(im["max_pixels"]) if im["max_pixels"] else "none (the processor's own)")
    console.print(table)
    others = Table(title="candidates, best first")
    for col in ("quantization", "checkpointing", "micro-batch", "estimate", "fits"):
        others.add_column(col)
    for c in plan.candidates[:8]:
        others.add_row(c["quantization"], "on" if c["gradient_checkpointing"] else "off", str(c["micro_batch"]),
                       human(c["estimate_bytes"]), "yes" if c["fits"] else "no")
    console.print(others)
    if not plan.fits:
        console.print(explain_misfit(plan), soft_wrap=True)
    return plan
