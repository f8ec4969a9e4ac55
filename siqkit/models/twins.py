"""Tiny twins: randomly initialised models of a real architecture class with tiny dimensions.

A twin is written like a real checkpoint (config, safetensors weights, generation config,
tokenizer, and for vision-language models the image processor and processor), so every part
of the kit loads it by path with the ordinary ``Auto*`` classes, offline. Recipes swap a real
model for ``tiny_from(real_dir, out_dir)`` to smoke-test on a CPU in minutes.

Dimensions are the text model's; vision towers are tiny (width 32, depth 2, unless the
``vision_*`` options say otherwise) and the image processors are set so a 64x64 image
becomes a handful of visual tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, GenerationConfig, PretrainedConfig

from siqkit.archs import SUPPORTED_TINY, TEXT_ARCHS, VISION_ARCHS  # noqa: F401 - re-exported
from siqkit.models import tokenizer as tk
from siqkit.models.processors import build_processor, save_processor

IMAGE_SIZE = 64
"""Side of the test images the twins' processors are tuned for."""

VISION_WIDTH = 32
VISION_HEADS = 2
VISION_DEPTH = 2

# SmolVLM/Idefics3 tile tokens; a 64x64 image splits into at most 2x2 tiles of 32x32.
_SMOLVLM_TOKENS = ("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>") + tuple(
    f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5)
)


@dataclass(frozen=True)
class TinyDims:
    """Text-model dimensions of a twin."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass
class _Spec:
    """What one architecture needs: its model class, config and (for VL) processor."""

    model_class: type
    config: PretrainedConfig
    processor: Any | None = None
    video_processor: dict | None = None  # written when the processor was built without torchvision


def is_vision(arch: str) -> bool:
    """True for image-text architectures (load with ``AutoModelForImageTextToText``)."""
    return arch in VISION_ARCHS


def _check_arch(arch: str) -> None:
    if arch not in SUPPORTED_TINY:
        raise ValueError(f"no tiny twin for architecture {arch!r}; supported: {', '.join(SUPPORTED_TINY)}")


def _text_kwargs(d: TinyDims, vocab: int, tok, *, extra: dict | None = None) -> dict:
    if d.hidden % d.heads or d.heads % d.kv_heads:
        raise ValueError(f"hidden ({d.hidden}) must divide by heads ({d.heads}), heads by kv_heads ({d.kv_heads})")
    kw = dict(
        vocab_size=vocab,
        hidden_size=d.hidden,
        intermediate_size=d.intermediate,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    kw.update(extra or {})
    return kw


def _vision_dims(opts: dict) -> tuple[int, int, int]:
    """Vision tower width, depth and heads: the ``vision_*`` options, else the tiny defaults."""
    w = opts.get("vision_width", VISION_WIDTH)
    heads = opts.get("vision_heads", VISION_HEADS)
    if w % heads:
        raise ValueError(f"vision_width ({w}) must divide by vision_heads ({heads})")
    return w, opts.get("vision_depth", VISION_DEPTH), heads


def _mrope_section(head_dim: int, interleaved: bool) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) like the real models."""
    half = head_dim // 2
    if interleaved:  # Qwen3-VL: [24, 20, 20] at head_dim 128
        hw = half * 5 // 16
    else:  # Qwen2-VL: [16, 24, 24] at head_dim 128
        hw = half * 3 // 8
    return [half - 2 * hw, hw, hw]


def _qwen_vl_spec(arch: str, d: TinyDims, tok, opts: dict) -> _Spec:
    from transformers import Qwen2VLImageProcessorPil

    ids = {
        "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }
    vocab = len(tok)
    w, depth, vheads = _vision_dims(opts)
    if arch == "qwen2_vl":
        patch = 14
        rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope_section(d.head_dim, False)}
        text = _text_kwargs(d, vocab, tok, extra={"rope_parameters": rope})
        vision = dict(depth=depth, embed_dim=w, hidden_size=d.hidden, num_heads=vheads, mlp_ratio=2,
                      patch_size=patch, spatial_merge_size=2, temporal_patch_size=2)
        cfg = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        cls = transformers.Qwen2VLForConditionalGeneration
        proc_cls = transformers.Qwen2VLProcessor
    elif arch == "qwen2_5_vl":
        patch = 14
        rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope_section(d.head_dim, False)}
        text = _text_kwargs(d, vocab, tok, extra={"rope_parameters": rope})
        vision = dict(depth=depth, hidden_size=w, intermediate_size=2 * w, num_heads=vheads,
                      out_hidden_size=d.hidden, patch_size=patch, spatial_merge_size=2, temporal_patch_size=2,
                      # 112-pixel windows, as every released Qwen2.5-VL (llama.cpp hard-codes it)
                      window_size=112, fullatt_block_indexes=[depth - 1])
        cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        cls = transformers.Qwen2_5_VLForConditionalGeneration
        proc_cls = transformers.Qwen2_5_VLProcessor
    else:  # qwen3_vl
        patch = 16
        rope = {"rope_type": "default", "rope_theta": 5e6, "mrope_interleaved": True,
                "mrope_section": _mrope_section(d.head_dim, True)}
        text = _text_kwargs(d, vocab, tok, extra={"rope_parameters": rope, "head_dim": d.head_dim})
        vision = dict(depth=depth, hidden_size=w, intermediate_size=2 * w, num_heads=vheads,
                      out_hidden_size=d.hidden, patch_size=patch, spatial_merge_size=2, temporal_patch_size=2,
                      num_position_embeddings=64, deepstack_visual_indexes=[0])
        cfg = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
        cls = transformers.Qwen3VLForConditionalGeneration
        proc_cls = transformers.Qwen3VLProcessor
    factor = patch * 2
    # By default a 64x64 image rounds to 2x2 merged patches (4 visual tokens) and larger
    # images are capped at 16; ``image_tokens`` sets (min, max) visual tokens per image.
    lo, hi = opts.get("image_tokens", (1, 16))
    min_pixels, max_pixels = lo * factor * factor, hi * factor * factor
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch, merge_size=2, temporal_patch_size=2
    )
    processor = build_processor(proc_cls, image_processor=image_processor, tokenizer=tok,
                                chat_template=tok.chat_template)
    video = {
        "video_processor_type": f"{proc_cls.__name__.removesuffix('Processor')}VideoProcessor",
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": patch, "merge_size": 2, "temporal_patch_size": 2,
    }
    if arch == "qwen2_5_vl":  # Qwen2.5-VL reuses the Qwen2-VL video processor
        video["video_processor_type"] = "Qwen2VLVideoProcessor"
    return _Spec(cls, cfg, processor, video)


def _smolvlm_spec(arch: str, d: TinyDims, tok, opts: dict) -> _Spec:
    tile, patch, scale = IMAGE_SIZE // 2, 8, 2
    seq_len = (tile // patch) ** 2 // scale**2
    text = _text_kwargs(d, len(tok), tok, extra={"model_type": "llama", "head_dim": d.head_dim,
                                                 "rope_parameters": {"rope_type": "default", "rope_theta": 1e5}})
    w, depth, vheads = _vision_dims(opts)
    vision = dict(hidden_size=w, intermediate_size=2 * w, num_hidden_layers=depth,
                  num_attention_heads=vheads, image_size=tile, patch_size=patch)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    if arch == "idefics3":
        cfg = transformers.Idefics3Config(text_config=text, vision_config=vision, scale_factor=scale,
                                          image_token_id=image_token_id)
        cls = transformers.Idefics3ForConditionalGeneration
        ip = transformers.Idefics3ImageProcessorPil(size={"longest_edge": IMAGE_SIZE},
                                                    max_image_size={"longest_edge": tile})
        processor = transformers.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq_len,
                                                   chat_template=tok.chat_template)
    else:
        cfg = transformers.SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=scale,
                                         image_token_id=image_token_id)
        cls = transformers.SmolVLMForConditionalGeneration
        ip = transformers.SmolVLMImageProcessorPil(size={"longest_edge": IMAGE_SIZE},
                                                   max_image_size={"longest_edge": tile})
        processor = build_processor(transformers.SmolVLMProcessor, image_processor=ip, tokenizer=tok,
                                    image_seq_len=seq_len, chat_template=tok.chat_template)
        video = {"video_processor_type": "SmolVLMVideoProcessor", "size": {"longest_edge": IMAGE_SIZE},
                 "max_image_size": {"longest_edge": tile}}
        return _Spec(cls, cfg, processor, video)
    return _Spec(cls, cfg, processor)


def _llava_spec(arch: str, d: TinyDims, tok, opts: dict) -> _Spec:
    patch = 16
    text_type = opts.get("text_model_type", "qwen2")
    vision_type = opts.get("vision_model_type", "clip_vision_model")
    text = _text_kwargs(d, len(tok), tok, extra={"model_type": text_type})
    w, depth, vheads = _vision_dims(opts)
    vision = dict(model_type=vision_type, hidden_size=w, intermediate_size=2 * w,
                  num_hidden_layers=depth, num_attention_heads=vheads, image_size=IMAGE_SIZE,
                  patch_size=patch)
    if vision_type == "clip_vision_model":
        vision["projection_dim"] = w
    # CLIP prepends a CLS token that the "default" strategy drops again; SigLIP has none.
    strategy = "default" if vision_type == "clip_vision_model" else "full"
    extra_tokens = 1 if vision_type == "clip_vision_model" else 0
    n_tokens = (IMAGE_SIZE // patch) ** 2
    cfg = transformers.LlavaConfig(text_config=text, vision_config=vision,
                                   image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=n_tokens,
                                   vision_feature_select_strategy=strategy, vision_feature_layer=-2)
    if vision_type == "clip_vision_model":
        ip = transformers.CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                                crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    else:
        ip = transformers.SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = transformers.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch,
                                            vision_feature_select_strategy=strategy, image_token="<image>",
                                            num_additional_image_tokens=extra_tokens, chat_template=tok.chat_template)
    return _Spec(transformers.LlavaForConditionalGeneration, cfg, processor)


def _text_spec(arch: str, d: TinyDims, tok, opts: dict) -> _Spec:
    extra: dict[str, Any] = {"tie_word_embeddings": opts.get("tie_word_embeddings", False)}
    if arch == "llama":
        extra["rope_parameters"] = {"rope_type": "default", "rope_theta": opts.get("rope_theta", 500000.0)}
        extra["head_dim"] = d.head_dim
        cls, cfg_cls = transformers.LlamaForCausalLM, transformers.LlamaConfig
    elif arch == "qwen2":
        extra["rope_parameters"] = {"rope_type": "default", "rope_theta": opts.get("rope_theta", 1e6)}
        cls, cfg_cls = transformers.Qwen2ForCausalLM, transformers.Qwen2Config
    else:
        extra["rope_parameters"] = {"rope_type": "default", "rope_theta": opts.get("rope_theta", 1e6)}
        extra["head_dim"] = d.head_dim
        cls, cfg_cls = transformers.Qwen3ForCausalLM, transformers.Qwen3Config
    if opts.get("rope_parameters"):  # e.g. Llama-3.1's "llama3" frequency scaling
        extra["rope_parameters"] = {**extra["rope_parameters"], **opts["rope_parameters"]}
    if "rms_norm_eps" in opts:
        extra["rms_norm_eps"] = opts["rms_norm_eps"]
    return _Spec(cls, cfg_cls(**_text_kwargs(d, len(tok), tok, extra=extra)))


_BUILDERS: dict[str, Callable[[str, TinyDims, Any, dict], _Spec]] = {
    "llama": _text_spec,
    "qwen2": _text_spec,
    "qwen3": _text_spec,
    "qwen2_vl": _qwen_vl_spec,
    "qwen2_5_vl": _qwen_vl_spec,
    "qwen3_vl": _qwen_vl_spec,
    "smolvlm": _smolvlm_spec,
    "idefics3": _smolvlm_spec,
    "llava": _llava_spec,
}


_OPTIONS = {"tie_word_embeddings", "rope_theta", "rope_parameters", "rms_norm_eps", "text_model_type",
            "vision_model_type", "vision_width", "vision_depth", "vision_heads", "image_tokens", "corpus"}


def _tokenizer_for(arch: str, out: Path, style: str | None, vocab_size: int, opts: dict):
    if style is None:
        text_type = opts.get("text_model_type", "qwen2") if arch == "llava" else arch
        style = "llama" if text_type == "llama" else "qwen"
    if arch in ("smolvlm", "idefics3"):
        return tk.build_tokenizer(out, opts.get("corpus"), vocab_size=vocab_size, style=style,
                                  extra_special_tokens=_SMOLVLM_TOKENS, image_placeholder="<image>")
    if arch == "llava":
        return tk.build_tokenizer(out, opts.get("corpus"), vocab_size=vocab_size, style=style,
                                  extra_special_tokens=("<image>",), image_placeholder="<image>")
    return tk.build_tokenizer(out, opts.get("corpus"), vocab_size=vocab_size, style=style)


def make_tiny(
    arch: str,
    out_dir: str | Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
    vocab_size: int = 512,
    tokenizer_style: str | None = None,
    init_std: float | None = None,
    **options: Any,
) -> Path:
    """Write a randomly initialised ``arch`` model with tiny dimensions into ``out_dir``.

    The vocabulary is the freshly trained tokenizer's (``vocab_size`` BPE entries plus the
    special tokens); ``tokenizer_style`` ("qwen"/"llama") defaults to the architecture's.
    ``init_std`` overrides the config's ``initializer_range`` (0.02); a larger value spreads
    the logits, which avoids near-ties when comparing two runtimes. ``options`` carry
    architecture details: ``tie_word_embeddings``, ``rope_theta``, ``rope_parameters``
    (merged over the default) and ``rms_norm_eps`` for text models; ``text_model_type``
    ("qwen2"/"llama") and ``vision_model_type`` ("clip_vision_model"/"siglip_vision_model")
    for ``llava``; ``vision_width``/``vision_depth``/``vision_heads`` for the vision tower
    (default 32/2/2); ``image_tokens`` = (min, max) visual tokens per image for the Qwen-VL
    processors (default (1, 16)); ``corpus``, the texts the tokenizer is trained on (default:
    :func:`siqkit.models.tokenizer.default_corpus`). Returns ``out_dir`` as a Path.
    """
    _check_arch(arch)
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"make_tiny got unknown options {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = TinyDims(hidden, layers, heads, kv_heads, intermediate)
    tok = _tokenizer_for(arch, out, tokenizer_style, vocab_size, options)
    spec = _BUILDERS[arch](arch, dims, tok, options)
    if init_std is not None:
        spec.config.initializer_range = init_std
        text_cfg = getattr(spec.config, "text_config", None)
        if text_cfg is not None:
            text_cfg.initializer_range = init_std
    spec.config.architectures = [spec.model_class.__name__]
    torch.manual_seed(seed)
    model = spec.model_class(spec.config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None, do_sample=False
    )
    model.save_pretrained(out)
    if spec.processor is not None:
        save_processor(spec.processor, out, video_processor=spec.video_processor)
    tok.save_pretrained(out)
    return out


def _read_config(src: str | Path | PretrainedConfig | dict) -> dict:
    if isinstance(src, PretrainedConfig):
        return src.to_dict()
    if isinstance(src, dict):
        return dict(src)
    path = Path(src)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json at {path}")
    return json.loads(path.read_text())


def tiny_from(model_dir_or_config: str | Path | PretrainedConfig | dict, out_dir: str | Path, **overrides: Any) -> Path:
    """Write a tiny twin of the architecture a checkpoint's ``config.json`` names.

    Keeps ``model_type`` (and for LLaVA the text and vision tower types), the rope base,
    norm epsilon and embedding tying; shrinks every dimension. The real tokenizer is not
    copied: the twin gets a small trained one, in the Llama-3 style for Llama models and
    the Qwen2 style otherwise. ``overrides`` go to :func:`make_tiny`.
    """
    cfg = _read_config(model_dir_or_config)
    arch = cfg.get("model_type")
    if arch not in SUPPORTED_TINY:
        raise ValueError(
            f"cannot make a tiny twin of model_type {arch!r}; supported: {', '.join(SUPPORTED_TINY)}"
        )
    opts: dict[str, Any] = {}
    text = cfg.get("text_config") or cfg
    if arch in TEXT_ARCHS:
        opts["tie_word_embeddings"] = bool(cfg.get("tie_word_embeddings", False))
        rope = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
        theta = rope.get("rope_theta", text.get("rope_theta"))
        if theta:
            opts["rope_theta"] = float(theta)
        if "type" in rope and "rope_type" not in rope:  # older configs
            rope["rope_type"] = rope.pop("type")
        if rope.get("rope_type", "default") != "default":
            opts["rope_parameters"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        if text.get("rms_norm_eps"):
            opts["rms_norm_eps"] = float(text["rms_norm_eps"])
    if arch == "llava":
        opts["text_model_type"] = (cfg.get("text_config") or {}).get("model_type", "llama")
        opts["vision_model_type"] = (cfg.get("vision_config") or {}).get("model_type", "clip_vision_model")
        if opts["text_model_type"] not in ("llama", "qwen2"):
            opts["text_model_type"] = "llama"
        if opts["vision_model_type"] not in ("clip_vision_model", "siglip_vision_model"):
            opts["vision_model_type"] = "clip_vision_model"
    opts.update(overrides)
    return make_tiny(arch, out_dir, **opts)


def load_tiny(path: str | Path, **kwargs: Any):
    """Load a twin (or any supported checkpoint) with the Auto class that fits its config.

    Offline, and never with the checkpoint's own code unless ``trust_remote_code=True`` is
    passed: a folder whose config names Python files (``auto_map``) loads with the built-in
    class of its ``model_type``.
    """
    kwargs = {"trust_remote_code": False, "local_files_only": True, **kwargs}
    cfg = AutoConfig.from_pretrained(path, trust_remote_code=kwargs["trust_remote_code"], local_files_only=True)
    if is_vision(cfg.model_type):
        return transformers.AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    return transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)


def cached_tiny(arch: str, root: str | Path, **kwargs: Any) -> Path:
    """``make_tiny`` into ``root/<arch>-<settings hash>``, reusing a finished earlier build.

    Meant for test sessions and smoke runs that ask for the same twin many times.
    """
    _check_arch(arch)
    key = hashlib.sha1(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:10]
    out = Path(root) / f"{arch}-{key}"
    done = out / ".complete"
    if not done.is_file():
        make_tiny(arch, out, **kwargs)
        done.write_text(json.dumps({"arch": arch, **kwargs}, sort_keys=True, default=str) + "\n")
    return out
