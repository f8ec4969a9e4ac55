"""Training checkpoints: trainable weights, optimizer, scheduler, RNG and data position.

A checkpoint is a folder ``checkpoints/step-000050/``:

- ``trainable.safetensors``: every trainable tensor (LoRA weights, fully trained parts);
- ``optimizer.safetensors``: the optimizer's per-parameter state tensors, keyed
  ``<param index>.<name>`` (AdamW's ``exp_avg``, ``exp_avg_sq``, ``step``);
- ``rng.safetensors``: torch's CPU (and CUDA) random generator states;
- ``state.json``: step, data position (micro-batch cursor, epoch, batch in epoch), the
  scheduler's state, the optimizer's param groups, the settings fingerprint and the
  settings it digests (``identity``), the micro-batch split, device and precision it was
  written with (``layout``), and the loss so far.

No pickle anywhere: tensors go to safetensors, everything else to JSON. The folder is
written as ``step-N.tmp`` and renamed when complete, so a ``kill -9`` while saving
leaves the previous checkpoint as the newest complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

_STEP_DIR = re.compile(r"^step-(\d+)$")


def _contiguous(tensors: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_checkpoint(root: Path, step: int, *, trainable: dict, optimizer: Any, scheduler: Any,
                    state: dict, keep: int) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically; keep the newest ``keep``."""
    import torch
    from safetensors.torch import save_file

    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_contiguous(trainable), str(tmp / "trainable.safetensors"))

    opt_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in opt_state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    save_file(_contiguous(tensors), str(tmp / "optimizer.safetensors"))

    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_file(_contiguous(rng), str(tmp / "rng.safetensors"))

    full = {**state, "step": step, "scheduler": scheduler.state_dict(),
            "optimizer": {"param_groups": opt_state["param_groups"], "scalars": scalars}}
    (tmp / "state.json").write_text(json.dumps(full, indent=1, default=_jsonable) + "\n")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's state.json")


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / "state.json").is_file():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


def load_checkpoint(ckpt: Path, *, model: Any, optimizer: Any, scheduler: Any) -> dict:
    """Restore weights, optimizer, scheduler and RNG from ``ckpt``; return its state.json."""
    import torch
    from safetensors.torch import load_file

    state = read_state(ckpt)
    trained = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = [n for n in trained if n not in params or not params[n].requires_grad]
    if unknown:
        raise ValueError(f"{ckpt}: checkpoint weights do not fit the model being trained: {unknown[:3]}")
    with torch.no_grad():
        for n, value in trained.items():
            params[n].copy_(value.to(params[n].device, params[n].dtype))

    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    opt = state["optimizer"]
    per_param: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(opt.get("scalars", {}).items()):
        idx, name = key.split(".", 1)
        per_param.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": opt["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])

    rng = load_file(str(ckpt / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return state
