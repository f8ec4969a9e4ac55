"""Load a student for one stage (4-bit NF4 + LoRA, LoRA, full, frozen parts) and merge it after.

Every parameter belongs to one *part*, decided by its name (:func:`part_of`):

- ``projector``: ``multi_modal_projector`` (LLaVA), ``connector`` (SmolVLM/Idefics3),
  ``merger`` and ``deepstack_merger_list`` (Qwen-VL's patch mergers);
- ``vision``: ``visual``, ``vision_tower``, ``vision_model`` (what is not the projector);
- ``language``: everything else (embeddings, decoder layers, LM head).

A stage freezes some parts. The language model, when trained, gets LoRA adapters on its
linear layers (``qlora`` over a bitsandbytes 4-bit NF4 base with double quantisation,
``lora`` over a bf16/fp32 base) or trains in full (``full``). An unfrozen vision tower or
projector always trains in full; under LoRA it is a peft ``modules_to_save`` module, so
it lands in the adapter. The vision tower, projector and LM head are never quantised
(they are small, and bitsandbytes' CPU kernels fail on layers narrower than 64).
Trainable weights are kept in fp32; the forward pass runs under autocast in bf16/fp16.

After training, :func:`merge_stage` reloads the stage's input checkpoint in its own dtype
(never 4-bit), applies the adapter or the trained weights, and saves a plain
safetensors checkpoint with the tokenizer and processor files: the next stage's input,
and what export reads.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siqkit.errors import SiqkitError

log = logging.getLogger(__name__)

_PROJECTOR = re.compile(r"(?:^|\.)(?:multi_modal_projector|connector|merger|deepstack_merger_list|mm_projector)(?:\.|$)")
_VISION = re.compile(r"(?:^|\.)(?:visual|vision_tower|vision_model|vision_embed_tokens)(?:\.|$)")
# Modules bitsandbytes leaves unquantised (matched by transformers from the start of a name).
SKIP_QUANT = [
    r"(?:.*\.)?(?:visual|vision_tower|vision_model|multi_modal_projector|connector|vision_embed_tokens)",
    "lm_head",
]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class StudentLoadError(SiqkitError):
    """The student checkpoint cannot be loaded or set up as the stage asks."""


def part_of(name: str) -> str:
    """``vision``, ``projector`` or ``language`` for a parameter or module name."""
    if _PROJECTOR.search(name):
        return "projector"
    if _VISION.search(name):
        return "vision"
    return "language"


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def load_processor_for(path: str | Path, vision: bool, trust_remote_code: bool = False) -> Any:
    """The student's processor (vision) or tokenizer (text-only), loaded offline."""
    from transformers import AutoTokenizer

    from siqkit.models.processors import load_processor

    common = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    return load_processor(path, **common) if vision else AutoTokenizer.from_pretrained(path, **common)


@dataclass
class Student:
    """A student set up for one stage."""

    model: Any
    processor: Any  # processor for vision students, tokenizer for text-only ones
    vision: bool
    uses_lora: bool
    quantized: bool
    parts: dict[str, int] = field(default_factory=dict)  # parameters per part
    trainable: dict[str, int] = field(default_factory=dict)  # trainable parameters per part

    def trainable_state(self) -> dict:
        """Trainable tensors by parameter name (LoRA weights and fully trained parts)."""
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}


def _auto_class(vision: bool):
    import transformers

    return transformers.AutoModelForImageTextToText if vision else transformers.AutoModelForCausalLM


def lora_targets(model: Any, target_modules: str | list[str]) -> list[str]:
    """Full names of the language model's linear layers that get LoRA adapters."""
    import torch

    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or part_of(name) != "language":
            continue
        if name.split(".")[-1] in ("lm_head", "embed_out", "output"):
            continue
        if target_modules != "all-linear" and name.split(".")[-1] not in target_modules:
            continue
        names.append(name)
    if not names:
        raise StudentLoadError(f"lora.target_modules {target_modules!r}: no language-model linear layer matches")
    return names


def _whole_modules(model: Any, parts: set[str]) -> list[str]:
    """The largest modules whose parameters all belong to ``parts`` (peft ``modules_to_save``)."""
    import torch

    chosen: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(c + ".") for c in chosen):
            continue
        if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            continue  # peft wraps callable modules only; take the list's members instead
        params = [f"{name}.{n}" for n, _ in module.named_parameters()]
        if params and all(part_of(p) in parts for p in params):
            chosen.append(name)
    return chosen


def load_student(path: str | Path, *, method: str, freeze: list[str], lora: Any, precision: str,
                 device: str, gradient_checkpointing: bool, trust_remote_code: bool = False,
                 seed: int = 0) -> Student:
    """Load ``path`` for a stage: quantised or not, parts frozen, LoRA attached as asked."""
    import torch
    from transformers import BitsAndBytesConfig

    from siqkit.models.checkpoints import is_vision_checkpoint

    vision = is_vision_checkpoint(path, trust_remote_code)
    dtype = torch_dtype(precision)
    quantize = method == "qlora"
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=SKIP_QUANT,
        )
    try:
        processor = load_processor_for(path, vision, trust_remote_code)
        model = _auto_class(vision).from_pretrained(
            path, device_map={"": device}, trust_remote_code=trust_remote_code, local_files_only=True, **kwargs
        )
    except Exception as exc:  # noqa: BLE001 - say which checkpoint failed, and why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StudentLoadError(f"student {path}: cannot load: {type(exc).__name__}: {first}") from exc
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    parts: dict[str, int] = {}
    for n, p in model.named_parameters():
        parts[part_of(n)] = parts.get(part_of(n), 0) + p.numel()
    train_parts = {p for p in parts if p not in freeze}
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # the transformers 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    uses_lora = "language" in train_parts and method in ("lora", "qlora")
    if uses_lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)  # LoRA's A matrices are drawn at random
        extra = _whole_modules(model, train_parts - {"language"})
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora_targets(model, lora.target_modules),
            modules_to_save=extra or None, task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    else:
        for n, p in model.named_parameters():
            if part_of(n) in train_parts and p.dtype.is_floating_point:
                p.requires_grad_(True)
    trainable: dict[str, int] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            if p.dtype != torch.float32:
                p.data = p.data.float()  # optimizer state and updates in fp32
            part = "language" if "lora_" in n else part_of(n.removeprefix("base_model.model."))
            trainable[part] = trainable.get(part, 0) + p.numel()
    return Student(model=model, processor=processor, vision=vision, uses_lora=uses_lora, quantized=quantize,
                   parts=parts, trainable=trainable)


def copy_support_files(src: str | Path, dst: str | Path) -> None:
    """Copy a checkpoint's tokenizer, processor and template files (not its weights)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not f.is_file() or f.name.startswith(".") or f.suffix in WEIGHT_SUFFIXES or f.name in WEIGHT_INDEXES:
            continue
        shutil.copy2(f, dst / f.name)


def merge_stage(input_dir: str | Path, out_dir: str | Path, *, adapter_dir: str | Path | None = None,
                trained: dict | None = None, trust_remote_code: bool = False) -> Path:
    """Write the stage's merged model: input weights + adapter (or trained weights), safetensors."""
    from siqkit.models.checkpoints import is_vision_checkpoint

    input_dir, out_dir = Path(input_dir), Path(out_dir)
    vision = is_vision_checkpoint(input_dir, trust_remote_code)
    model = _auto_class(vision).from_pretrained(input_dir, dtype="auto", trust_remote_code=trust_remote_code,
                                                local_files_only=True, device_map={"": "cpu"})
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if trained:
        params = dict(model.named_parameters())
        missing = [n for n in trained if n not in params]
        if missing:
            raise StudentLoadError(f"{input_dir}: trained weights do not fit this model: {missing[:3]}")
        import torch

        with torch.no_grad():
            for n, value in trained.items():
                params[n].copy_(value.to(params[n].dtype))
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    copy_support_files(input_dir, tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
