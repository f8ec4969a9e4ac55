"""Write the vision side of a Hugging Face vision-language checkpoint as a llama.cpp mmproj GGUF.

llama.cpp runs images through a separate "clip" GGUF (the mmproj): the vision encoder plus
the projector that maps image features into the language model's embedding space. Supported:

- ``qwen2_vl``  -> projector ``qwen2vl_merger``: LayerNorm ViT, quick-GELU MLP, 2x2 patch merger;
- ``qwen2_5_vl`` -> ``qwen2.5vl_merger``: RMSNorm ViT with SwiGLU MLP and window attention
  (llama.cpp fixes the window at 112 pixels, as in every released Qwen2.5-VL);
- ``qwen3_vl``  -> ``qwen3vl_merger``: ViT with patch bias, learned position grid, fused QKV
  and deepstack mergers whose features are added to early language-model layers.

The Conv3d patch embedding (two temporal frames) becomes two Conv2d kernels that llama.cpp
applies to the same image and adds, which is what the Conv3d does on a still image (the
processor repeats it). Tensors are written in f16 (norms, biases and position tables in f32):
llama.cpp's quantizer is not applied to the mmproj.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np

from siqkit.export.gguf_writer import GGUFExportError, _iter_safetensors

MMPROJ_ARCHS = {"qwen2_vl": "qwen2vl_merger", "qwen2_5_vl": "qwen2.5vl_merger", "qwen3_vl": "qwen3vl_merger"}
"""Hugging Face model_type -> llama.cpp projector type."""

LLAMA_CPP_QWEN25_WINDOW = 112
_VISION_PREFIXES = ("model.visual.", "visual.")


def _processor_settings(folder: Path) -> dict:
    """Image processor settings, from processor_config.json (nested) or preprocessor_config.json."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            cfg = json.loads(path.read_text())
            cfg = cfg.get("image_processor", cfg)
            if "image_mean" in cfg:
                return cfg
    raise GGUFExportError(f"no image processor settings (preprocessor_config.json) in {folder}")


def pixel_limits(proc: dict) -> tuple[int, int]:
    """(min_pixels, max_pixels) of a Qwen-VL image processor, in either settings layout."""
    size = proc.get("size") or {}
    lo = proc.get("min_pixels") or size.get("shortest_edge") or 56 * 56
    hi = proc.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280
    return int(lo), int(hi)


def _split_qkv(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = w.shape[0] // 3
    return w[:n], w[n : 2 * n], w[2 * n :]


def _wa_pattern(full_blocks: list[int], depth: int) -> int:
    """llama.cpp's n_wa_pattern: every n-th block attends fully, the others in windows."""
    if not full_blocks:
        raise GGUFExportError("qwen2_5_vl: vision_config.fullatt_block_indexes is empty")
    n = full_blocks[0] + 1
    if sorted(full_blocks) != [i for i in range(depth) if (i + 1) % n == 0]:
        raise GGUFExportError(
            f"qwen2_5_vl: full-attention blocks {full_blocks} are not every {n}th block, "
            "which is the only pattern llama.cpp's encoder runs"
        )
    return n


def _tensor_name(rest: str, model_type: str, deepstack_layers: list[int]) -> list[str] | None:
    """GGUF name(s) for a vision key (without its prefix); a list of 3 for a split QKV."""
    parts = rest.split(".")
    suffix = parts[-1]
    if parts[0] == "blocks":
        bid, module = int(parts[1]), ".".join(parts[2:-1])
        names = {
            "norm1": "ln1", "norm2": "ln2", "attn.proj": "attn_out",
            "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down",  # qwen2_vl
            "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",  # qwen2_5_vl
            "mlp.linear_fc1": "ffn_up", "mlp.linear_fc2": "ffn_down",  # qwen3_vl
        }
        if module == "attn.qkv":
            if model_type == "qwen3_vl":
                return [f"v.blk.{bid}.attn_qkv.{suffix}"]
            return [f"v.blk.{bid}.attn_{x}.{suffix}" for x in "qkv"]
        if module in names:
            return [f"v.blk.{bid}.{names[module]}.{suffix}"]
    elif parts[0] == "merger":
        module = ".".join(parts[1:-1])
        names = {"ln_q": "v.post_ln", "norm": "v.post_ln", "mlp.0": "mm.0", "mlp.2": "mm.2",
                 "linear_fc1": "mm.0", "linear_fc2": "mm.2"}
        if module in names:
            return [f"{names[module]}.{suffix}"]
    elif parts[0] == "deepstack_merger_list":
        layer = deepstack_layers[int(parts[1])]
        module = {"norm": "norm", "linear_fc1": "fc1", "linear_fc2": "fc2"}.get(".".join(parts[2:-1]))
        if module:
            return [f"v.deepstack.{layer}.{module}.{suffix}"]
    elif rest == "patch_embed.proj.bias":
        return ["v.patch_embd.bias"]
    elif rest == "pos_embed.weight":
        return ["v.position_embd.weight"]
    return None


def write_mmproj(model_dir: str | Path, out_path: str | Path, *, name: str | None = None) -> Path:
    """Write the vision encoder and projector of the checkpoint in ``model_dir`` as an mmproj GGUF.

    Raises :class:`GGUFExportError` naming the supported architectures for any other model.
    Returns ``out_path`` as a Path.
    """
    folder = Path(model_dir)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise GGUFExportError(f"no config.json in {folder}")
    cfg = json.loads(cfg_file.read_text())
    model_type = cfg.get("model_type")
    if model_type not in MMPROJ_ARCHS:
        raise GGUFExportError(
            f"cannot write an mmproj for model_type {model_type!r}; supported: {', '.join(MMPROJ_ARCHS)}"
        )
    vc, tc = cfg["vision_config"], cfg.get("text_config") or cfg
    proc = _processor_settings(folder)
    patch, merge = int(vc["patch_size"]), int(vc.get("spatial_merge_size", 2))
    width = int(vc.get("embed_dim") or vc["hidden_size"])
    ffn = int(vc.get("intermediate_size") or width * vc.get("mlp_ratio", 4))
    proj_dim = int(vc.get("out_hidden_size") or (vc["hidden_size"] if model_type == "qwen2_vl" else tc["hidden_size"]))
    depth = int(vc["depth"])
    deepstack = [int(i) for i in vc.get("deepstack_visual_indexes") or ()]
    min_px, max_px = pixel_limits(proc)
    factor = patch * merge

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(out, "clip")
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name(name or f"{folder.name} mmproj")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type(MMPROJ_ARCHS[model_type])
    w.add_vision_image_size(max(factor, int(math.isqrt(max_px)) // factor * factor))
    w.add_vision_patch_size(patch)
    w.add_vision_embedding_length(width)
    w.add_vision_feed_forward_length(ffn)
    w.add_vision_projection_dim(proj_dim)
    w.add_vision_block_count(depth)
    w.add_vision_head_count(int(vc["num_heads"]))
    w.add_vision_attention_layernorm_eps(float(vc.get("layer_norm_eps", 1e-6)))
    w.add_vision_image_mean([float(x) for x in proc["image_mean"]])
    w.add_vision_image_std([float(x) for x in proc["image_std"]])
    w.add_vision_spatial_merge_size(merge)
    w.add_vision_min_pixels(min_px)
    w.add_vision_max_pixels(max_px)
    act = vc.get("hidden_act", "quick_gelu")
    if act == "silu":
        w.add_vision_use_silu(True)
    elif act.startswith("gelu"):
        w.add_vision_use_gelu(True)
    if model_type == "qwen2_5_vl":
        window = int(vc.get("window_size", LLAMA_CPP_QWEN25_WINDOW))
        if window != LLAMA_CPP_QWEN25_WINDOW:
            raise GGUFExportError(
                f"qwen2_5_vl: vision window_size {window}; llama.cpp's encoder uses {LLAMA_CPP_QWEN25_WINDOW}-pixel "
                "windows, so the exported mmproj would not match this model"
            )
        w.add_vision_n_wa_pattern(_wa_pattern([int(i) for i in vc.get("fullatt_block_indexes", [])], depth))
        w.add_vision_window_size(window)
    if deepstack:
        w.add_vision_is_deepstack_layers([i in deepstack for i in range(depth)])

    seen = set()
    for key, data in _iter_safetensors(folder):
        prefix = next((p for p in _VISION_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            continue
        rest = key[len(prefix):]
        if rest == "patch_embed.proj.weight":
            if data.ndim != 5 or data.shape[2] != 2:
                raise GGUFExportError(f"{key}: expected a Conv3d kernel over 2 frames, got shape {data.shape}")
            w.add_tensor("v.patch_embd.weight", data[:, :, 0].astype(np.float16))
            w.add_tensor("v.patch_embd.weight.1", data[:, :, 1].astype(np.float16))
            seen.add("v.patch_embd.weight")
            continue
        names = _tensor_name(rest, model_type, deepstack)
        if names is None:
            raise GGUFExportError(f"vision tensor {key!r} has no mmproj mapping for {model_type}")
        pieces = _split_qkv(data) if len(names) == 3 else (data,)
        for gname, piece in zip(names, pieces):
            keep_f32 = piece.ndim < 2 or gname.startswith("v.position_embd")
            w.add_tensor(gname, piece.astype(np.float32 if keep_f32 else np.float16))
            seen.add(gname)
    if "v.patch_embd.weight" not in seen or "mm.0.weight" not in seen:
        raise GGUFExportError(f"no vision tower weights (patch embedding and merger) found in {folder}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
