"""Architecture names (Hugging Face ``model_type`` values) the kit builds, kept free of heavy imports.

Recipe validation and ``--tiny`` read them, so they live here rather than beside the model
builders in :mod:`siqkit.models` and the GGUF writer in :mod:`siqkit.export`, which import
torch and transformers.
"""

TEXT_ARCHS = ("llama", "qwen2", "qwen3")
VISION_ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "smolvlm", "idefics3", "llava")
SUPPORTED_TINY = TEXT_ARCHS + VISION_ARCHS
"""Architectures that :func:`siqkit.models.make_tiny` and :func:`siqkit.models.tiny_from` build."""

GGUF_ARCH_OF = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen2_vl": "qwen2vl",
    "qwen2_5_vl": "qwen2vl",
    "qwen3_vl": "qwen3vl",
    "smolvlm": "llama",
    "idefics3": "llama",
}
"""Hugging Face model_type -> llama.cpp architecture of its (language) model, as the GGUF writer writes it."""
SUPPORTED_GGUF_ARCHS = tuple(GGUF_ARCH_OF)
