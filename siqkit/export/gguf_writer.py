"""Write a Hugging Face (vision-)language model folder's text model as a GGUF file.

Supported ``model_type`` values (config.json) and the llama.cpp architecture each becomes:
``llama`` -> llama, ``qwen2`` -> qwen2, ``qwen3`` -> qwen3, ``qwen2_vl`` and ``qwen2_5_vl``
-> qwen2vl (M-RoPE sections), ``qwen3_vl`` -> qwen3vl (interleaved M-RoPE, deepstack),
``smolvlm`` and ``idefics3`` -> llama. For vision-language checkpoints only the language
model is written here; its vision tower goes to a separate mmproj file (``mmproj.py``).

Weights are read tensor by tensor from the safetensors files (sharded or not), renamed to
llama.cpp's GGUF names, and stored as f32/f16/bf16 or q8_0. Llama's Q and K projections are
permuted from the Hugging Face rotate-half layout to the interleaved pairs llama.cpp's llama
graph rotates; Qwen graphs use the rotate-half ("neox") layout and take them as they are.

The result is checked against the Hugging Face model in llama-cpp-python by the tests
(greedy continuations equal, token for token).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import safe_open

from siqkit.archs import GGUF_ARCH_OF, SUPPORTED_GGUF_ARCHS
from siqkit.errors import SiqkitError
from siqkit.export.tokenizer_gguf import read_vocab

DTYPES = ("f32", "f16", "bf16", "q8_0")

_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}

# Where vision-language checkpoints keep their language model, and what is not part of it.
_TEXT_PREFIXES = ("model.language_model.", "model.text_model.", "language_model.model.")
_OTHER_PREFIXES = ("visual.", "model.visual.", "model.vision_model.", "model.connector.", "vision_tower.",
                   "model.vision_tower.", "multi_modal_projector.", "model.multi_modal_projector.")

# Hugging Face per-layer module path -> GGUF tensor kind.
_LAYER_TENSORS = {
    "input_layernorm": gguf.MODEL_TENSOR.ATTN_NORM,
    "self_attn.q_proj": gguf.MODEL_TENSOR.ATTN_Q,
    "self_attn.k_proj": gguf.MODEL_TENSOR.ATTN_K,
    "self_attn.v_proj": gguf.MODEL_TENSOR.ATTN_V,
    "self_attn.o_proj": gguf.MODEL_TENSOR.ATTN_OUT,
    "self_attn.q_norm": gguf.MODEL_TENSOR.ATTN_Q_NORM,
    "self_attn.k_norm": gguf.MODEL_TENSOR.ATTN_K_NORM,
    "post_attention_layernorm": gguf.MODEL_TENSOR.FFN_NORM,
    "mlp.gate_proj": gguf.MODEL_TENSOR.FFN_GATE,
    "mlp.up_proj": gguf.MODEL_TENSOR.FFN_UP,
    "mlp.down_proj": gguf.MODEL_TENSOR.FFN_DOWN,
}
_GLOBAL_TENSORS = {
    "model.embed_tokens": gguf.MODEL_TENSOR.TOKEN_EMBD,
    "model.norm": gguf.MODEL_TENSOR.OUTPUT_NORM,
    "lm_head": gguf.MODEL_TENSOR.OUTPUT,
}


class GGUFExportError(SiqkitError, ValueError):
    """The checkpoint cannot be written as GGUF (unsupported architecture or settings)."""


@dataclass(frozen=True)
class TextHParams:
    """The config.json values a GGUF text model needs (``arch`` is the llama.cpp architecture)."""

    arch: str
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    context: int
    rope_theta: float
    rms_eps: float
    tie_embeddings: bool
    rope_type: str
    rope: dict = field(default_factory=dict, compare=False)
    model_type: str = ""
    rope_sections: tuple[int, ...] = ()
    deepstack_layers: int = 0

    @classmethod
    def from_config(cls, top: dict) -> TextHParams:
        model_type = top.get("model_type")
        if model_type not in GGUF_ARCH_OF:
            raise GGUFExportError(
                f"cannot write GGUF for model_type {model_type!r}; supported: {', '.join(SUPPORTED_GGUF_ARCHS)}"
            )
        arch = GGUF_ARCH_OF[model_type]
        cfg = top.get("text_config") or top
        heads = cfg["num_attention_heads"]
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or top.get("rope_parameters") or {}
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        sections: tuple[int, ...] = ()
        if arch in ("qwen2vl", "qwen3vl"):
            # llama.cpp takes four M-RoPE sections (time, height, width, extra)
            sections = tuple(int(x) for x in rope.get("mrope_section", ()))
            if not sections:
                raise GGUFExportError(f"{model_type}: rope_parameters.mrope_section missing in config.json")
            sections = (sections + (0, 0, 0, 0))[:4]
        deepstack = len((top.get("vision_config") or {}).get("deepstack_visual_indexes") or ())
        tie = top.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
        return cls(
            model_type=model_type,
            rope_sections=sections,
            deepstack_layers=deepstack if arch == "qwen3vl" else 0,
            arch=arch,
            vocab_size=cfg["vocab_size"],
            hidden=cfg["hidden_size"],
            layers=cfg["num_hidden_layers"],
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate=cfg["intermediate_size"],
            context=cfg.get("max_position_embeddings", 4096),
            rope_theta=float(theta),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(tie),
            rope_type=rope.get("rope_type", rope.get("type", "default")) or "default",
            rope=dict(rope),
        )


def _permute_for_llama(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rotate-half (HF) -> interleaved pairs (llama.cpp LLAMA rope) for a Q/K weight or bias."""
    shape = w.shape
    return w.reshape(n_heads, 2, shape[0] // n_heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _llama3_rope_factors(hp: TextHParams) -> np.ndarray:
    """Per-frequency divisors for Llama-3.1 "llama3" rope scaling (llama.cpp's rope_freqs tensor).

    Transformers divides each inverse frequency by ``factor`` for long wavelengths, keeps
    short ones, and blends in between; llama.cpp divides by the stored factor instead.
    """
    r = hp.rope
    factor, low, high = float(r["factor"]), float(r.get("low_freq_factor", 1.0)), float(r.get("high_freq_factor", 4.0))
    old_ctx = float(r.get("original_max_position_embeddings", 8192))
    factors = []
    for i in range(0, hp.head_dim, 2):
        freq = 1.0 / hp.rope_theta ** (i / hp.head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _iter_safetensors(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"no safetensors weights in {folder}")
    for name in files:
        with safe_open(folder / name, framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key).to(torch.float32).numpy()


def _text_key(key: str) -> str | None:
    """A checkpoint key in the plain causal-LM naming (``model.layers.…``); None for vision parts."""
    if key.startswith(_OTHER_PREFIXES):
        return None
    for prefix in _TEXT_PREFIXES:
        if key.startswith(prefix):
            return "model." + key[len(prefix):]
    if key.startswith("language_model.lm_head."):
        return key[len("language_model."):]
    return key


def _gguf_name(key: str, hp: TextHParams) -> tuple[str, gguf.MODEL_TENSOR] | None:
    """Map a Hugging Face tensor key to its GGUF name (None: not part of the GGUF text model)."""
    key = _text_key(key)
    if key is None:
        return None
    stem, _, suffix = key.rpartition(".")
    if stem in _GLOBAL_TENSORS:
        kind = _GLOBAL_TENSORS[stem]
        return f"{gguf.TENSOR_NAMES[kind]}.{suffix}", kind
    parts = stem.split(".")
    if len(parts) >= 4 and parts[0] == "model" and parts[1] == "layers":
        bid, module = int(parts[2]), ".".join(parts[3:])
        kind = _LAYER_TENSORS.get(module)
        if kind is not None:
            return f"{gguf.TENSOR_NAMES[kind].format(bid=bid)}.{suffix}", kind
    if "rotary_emb" in key:
        return None
    raise GGUFExportError(f"tensor {key!r} has no GGUF mapping for {hp.model_type}")


def _encode(data: np.ndarray, dtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
    """Store norms and biases (1-D) in f32, matrices in the requested type."""
    if data.ndim < 2 or dtype == "f32":
        return data.astype(np.float32), None
    if dtype == "f16":
        return data.astype(np.float16), None
    if dtype == "bf16":
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16), gguf.GGMLQuantizationType.BF16
    if data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None  # rows not a multiple of the q8_0 block


def _write_hparams(w: gguf.GGUFWriter, hp: TextHParams) -> None:
    w.add_context_length(hp.context)
    w.add_embedding_length(hp.hidden)
    w.add_block_count(hp.layers)
    w.add_feed_forward_length(hp.intermediate)
    w.add_head_count(hp.heads)
    w.add_head_count_kv(hp.kv_heads)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.hidden // hp.heads or hp.arch in ("qwen3", "qwen3vl"):
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
    w.add_vocab_size(hp.vocab_size)
    if hp.rope_sections:
        w.add_rope_dimension_sections(list(hp.rope_sections))
    if hp.deepstack_layers:
        w.add_num_deepstack_layers(hp.deepstack_layers)
    if hp.rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(hp.rope["factor"]))


def _check_rope(hp: TextHParams) -> None:
    supported = {"default", "linear"} | ({"llama3"} if hp.arch == "llama" else set())
    if hp.rope_type not in supported:
        raise GGUFExportError(
            f"rope type {hp.rope_type!r} is not supported for {hp.arch}; supported: {', '.join(sorted(supported))}"
        )


def write_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    dtype: str = "f16",
    *,
    name: str | None = None,
    pre: str | None = None,
) -> Path:
    """Write the (language) model in ``model_dir`` (a Hugging Face folder) to ``out_path`` as GGUF.

    ``dtype``: "f16", "bf16", "f32" or "q8_0" for the weight matrices (norms stay f32).
    ``name`` sets ``general.name`` (default: the folder name); ``pre`` overrides the
    detected llama.cpp pre-tokenizer name. Returns ``out_path`` as a Path.
    """
    if dtype not in DTYPES:
        raise GGUFExportError(f"dtype {dtype!r} not supported; choose one of {', '.join(DTYPES)}")
    folder = Path(model_dir)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise GGUFExportError(f"no config.json in {folder}")
    hp = TextHParams.from_config(json.loads(cfg_file.read_text()))
    _check_rope(hp)
    vocab = read_vocab(folder, vocab_size=hp.vocab_size, pre=pre)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out, hp.arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or folder.name)
    writer.add_file_type(_FILE_TYPES[dtype])
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_hparams(writer, hp)
    vocab.write(writer)
    if hp.rope_type == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_factors(hp))

    seen: set[str] = set()
    for key, data in _iter_safetensors(folder):
        mapped = _gguf_name(key, hp)
        if mapped is None:
            continue
        gname, kind = mapped
        if kind == gguf.MODEL_TENSOR.OUTPUT and hp.tie_embeddings:
            continue  # llama.cpp reuses token_embd when output is absent
        if hp.arch == "llama" and kind == gguf.MODEL_TENSOR.ATTN_Q:
            data = _permute_for_llama(data, hp.heads)
        elif hp.arch == "llama" and kind == gguf.MODEL_TENSOR.ATTN_K:
            data = _permute_for_llama(data, hp.kv_heads)
        encoded, raw_dtype = _encode(data, dtype)
        writer.add_tensor(gname, encoded, raw_dtype=raw_dtype)
        seen.add(gname)
    if "token_embd.weight" not in seen:
        raise GGUFExportError(f"no embedding weights (model.embed_tokens.weight) in {folder}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def tiny_gguf(arch: str, out_dir: str | Path, *, dtype: str = "f16", **tiny_kwargs) -> Path:
    """Build a tiny twin of ``arch`` (a supported model_type) and write its GGUF; returns the GGUF path.

    The Hugging Face twin is kept beside it in ``out_dir/<arch>-hf`` for comparisons;
    ``tiny_kwargs`` go to :func:`siqkit.models.twins.make_tiny`. Takes about a second.
    """
    from siqkit.models.twins import make_tiny

    if arch not in SUPPORTED_GGUF_ARCHS:
        raise GGUFExportError(f"no GGUF twin for {arch!r}; supported: {', '.join(SUPPORTED_GGUF_ARCHS)}")
    out = Path(out_dir)
    hf_dir = make_tiny(arch, out / f"{arch}-hf", **tiny_kwargs)
    return write_gguf(hf_dir, out / f"{arch}-{dtype}.gguf", dtype=dtype, name=f"tiny-{arch}")
