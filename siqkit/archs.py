"""Architecture names (Hugging Face ``model_type`` values) the kit builds, kept free of heavy imports.

Recipe validation reads them, so they live here rather than beside the model builders in
:mod:`siqkit.models.tiny`, which imports torch and transformers.
"""

TEXT_ARCHS = ("llama", "qwen2", "qwen3")
VISION_ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "smolvlm", "idefics3", "llava")
SUPPORTED_TINY = TEXT_ARCHS + VISION_ARCHS
"""Architectures that :func:`siqkit.models.make_tiny` and :func:`siqkit.models.tiny_from` build."""
