"""Merge a LoRA adapter into its full-precision base checkpoint, one weight shard at a time.

Students are trained with QLoRA on a 4-bit base, but a 4-bit base cannot take a merge
without rounding the update away, so the merge goes into the full-precision checkpoint the
4-bit base was made from. Each safetensors shard of the base is read, every LoRA target in
it gets ``W + scale * B @ A`` (computed in fp32 on the CPU), and the shard is written out
under the same name: memory stays at one shard plus the adapter, whatever the model size.
The result is a normal Hugging Face folder (config, tokenizer and processor files copied
from the base) that :func:`siqkit.export.export_model` takes as it is.

Adapter module names follow the model classes (``model.language_model.layers…`` in recent
transformers) while older checkpoints store ``model.layers…``; both are compared in one
canonical spelling, and a LoRA module that matches no base weight is an error, never skipped.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from siqkit.errors import SiqkitError
from siqkit.export.cards import write_folder_card

_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class MergeError(SiqkitError, ValueError):
    """The adapter cannot be merged into this base (4-bit base, unsupported adapter, mismatch)."""


def canonical(name: str) -> str:
    """One spelling for a module path, whichever transformers version saved it."""
    for old, new in (("model.language_model.", "model."), ("language_model.model.", "model."),
                     ("language_model.lm_head", "lm_head")):
        if name.startswith(old):
            name = new + name[len(old):]
    for part in ("visual.", "vision_tower.", "multi_modal_projector."):
        if name.startswith("model." + part):
            name = name[len("model."):]
    return name


def _is_4bit(cfg: dict) -> bool:
    q = cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config") or {}
    if q.get("load_in_4bit") or q.get("_load_in_4bit") or q.get("bnb_4bit_quant_type"):
        return True
    if q.get("quant_method") in ("bitsandbytes", "gptq", "awq") and not q.get("load_in_8bit"):
        return True
    return False


def _shards(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise MergeError(f"no safetensors weights in {folder}")
    return files


def _read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise MergeError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise MergeError(f"only LoRA adapters can be merged, not {cfg.get('peft_type')}")
    if cfg.get("use_dora"):
        raise MergeError("DoRA adapters are not supported by the shard-wise merge; merge with peft instead")
    if cfg.get("fan_in_fan_out"):
        raise MergeError("fan_in_fan_out adapters (GPT-2 style Conv1D) are not supported")
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise MergeError(f"no adapter_model.safetensors in {adapter_dir}")
    tensors = {}
    with safe_open(weights_file, framework="pt") as f:
        for key in f.keys():
            tensors[key] = f.get_tensor(key).to(torch.float32)
    return cfg, tensors


def _scale(cfg: dict, module: str) -> float:
    short = module.rsplit(".", 1)[-1]
    r = next((v for k, v in (cfg.get("rank_pattern") or {}).items() if module.endswith(k) or short == k), cfg["r"])
    alpha = next((v for k, v in (cfg.get("alpha_pattern") or {}).items() if module.endswith(k) or short == k),
                 cfg.get("lora_alpha", r))
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def _plan(cfg: dict, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """canonical module -> {A, B, scale, embedding}; canonical weight name -> replacement tensor."""
    deltas: dict[str, dict] = {}
    replace: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = key.removeprefix("base_model.model.")
        for kind in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
            marker = f".{kind}."
            if marker in name or name.endswith(f".{kind}"):
                module = name.split(marker)[0] if marker in name else name[: -len(kind) - 1]
                slot = deltas.setdefault(canonical(module), {"module": module})
                slot["A" if kind.endswith("A") else "B"] = value
                slot["embedding"] = kind.startswith("lora_embedding")
                break
        else:
            if "lora_magnitude_vector" in name:
                raise MergeError("DoRA adapters are not supported by the shard-wise merge")
            # modules_to_save, saved embedding layers and trained biases replace the base tensor
            for wrapper in (".modules_to_save.default.", ".modules_to_save.", ".base_layer."):
                name = name.replace(wrapper, ".")
            replace[canonical(name)] = value
    for module, slot in deltas.items():
        if "A" not in slot or "B" not in slot:
            raise MergeError(f"adapter has an incomplete LoRA pair for {slot['module']}")
        slot["scale"] = _scale(cfg, slot["module"])
    return deltas, replace


def merge_lora(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
) -> Path:
    """Merge the LoRA adapter in ``adapter_dir`` into the base checkpoint ``base_dir``; write ``out_dir``.

    ``dtype`` ("float32", "bfloat16", "float16") sets the stored weights' type; by default
    each weight keeps the base checkpoint's type. A 4-bit (bitsandbytes/GPTQ/AWQ) base is
    refused. Returns ``out_dir`` as a Path.
    """
    base, adapter, out = Path(base_dir), Path(adapter_dir), Path(out_dir)
    cfg_file = base / "config.json"
    if not cfg_file.is_file():
        raise MergeError(f"{base} is not a Hugging Face model folder (no config.json)")
    cfg = json.loads(cfg_file.read_text())
    if _is_4bit(cfg):
        raise MergeError(
            f"{base} is a 4-bit quantized checkpoint; merging a LoRA into it would round the update away. "
            "Merge into the full-precision (bf16/fp32) checkpoint the 4-bit training base was loaded from"
        )
    if dtype is not None and dtype not in _DTYPES:
        raise MergeError(f"dtype {dtype!r} not supported; choose one of {', '.join(_DTYPES)}")
    if out.resolve() == base.resolve():
        raise MergeError("out_dir must differ from base_dir")
    acfg, tensors = _read_adapter(adapter)
    deltas, replace = _plan(acfg, tensors)
    out.mkdir(parents=True, exist_ok=True)

    used: set[str] = set()
    for shard in _shards(base):
        merged: dict[str, torch.Tensor] = {}
        with safe_open(base / shard, framework="pt") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                w = f.get_tensor(key)
                if w.dtype in (torch.uint8, torch.int8) and key.endswith(".weight"):
                    raise MergeError(f"{key} in {base} is stored quantized ({w.dtype}); "
                                     "merge into a full-precision base")
                stem = key[: -len(".weight")] if key.endswith(".weight") else None
                target_dtype = _DTYPES[dtype] if dtype else w.dtype
                ckey = canonical(key)
                if ckey in replace:
                    if replace[ckey].shape != w.shape:
                        raise MergeError(f"adapter tensor for {key} has shape {tuple(replace[ckey].shape)}, "
                                         f"base {tuple(w.shape)}")
                    w = replace[ckey]
                    used.add(ckey)
                if stem is not None and canonical(stem) in deltas:
                    d = deltas[canonical(stem)]
                    update = d["B"] @ d["A"]
                    if d["embedding"]:
                        update = update.T
                    if update.shape != w.shape:
                        raise MergeError(f"LoRA update for {key} has shape {tuple(update.shape)}, "
                                         f"weight {tuple(w.shape)}")
                    w = w.to(torch.float32) + d["scale"] * update
                    used.add(canonical(stem))
                merged[key] = w.to(target_dtype).contiguous() if w.is_floating_point() else w
        save_file(merged, out / shard, metadata={**metadata, "format": "pt"})
        del merged
    missing = [d["module"] for name, d in deltas.items() if name not in used]
    missing += [name for name in replace if name not in used]
    if missing:
        raise MergeError(f"adapter modules with no matching base weight: {', '.join(sorted(missing)[:8])}")

    for item in base.iterdir():
        if item.is_file() and not item.name.endswith(_WEIGHT_FILES):
            shutil.copy2(item, out / item.name)
    if dtype:
        merged_cfg = json.loads((out / "config.json").read_text())
        merged_cfg["dtype"] = dtype
        (out / "config.json").write_text(json.dumps(merged_cfg, indent=2) + "\n")
    (out / "siqkit_merge.json").write_text(json.dumps({
        "base": str(base), "adapter": str(adapter), "lora_modules": len(deltas), "replaced_tensors": len(replace),
        "r": acfg.get("r"), "lora_alpha": acfg.get("lora_alpha"), "use_rslora": bool(acfg.get("use_rslora")),
        "adapter_base_model": acfg.get("base_model_name_or_path"),
    }, indent=2) + "\n")
    (out / "README.md").unlink(missing_ok=True)  # the base's card, copied above, describes the base
    write_folder_card(out, "merged", base=base, title=f"{out.name} (merged)",
                      facts={"base": str(base), "adapter": str(adapter), "LoRA rank": acfg.get("r"),
                             "LoRA alpha": acfg.get("lora_alpha")})
    return out
