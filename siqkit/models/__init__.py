"""Model helpers: tiny twins of real architectures, local tokenizers, processor loading.

``make_tiny(arch, out_dir)`` writes a randomly initialised model of a real architecture
class with tiny dimensions, plus its tokenizer and processor, loadable offline by path;
``tiny_from(checkpoint, out_dir)`` does the same for whatever class a checkpoint names.
"""

from siqkit.models.processors import NoVideoProcessor, load_processor
from siqkit.models.twins import (
    SUPPORTED_TINY,
    TEXT_ARCHS,
    VISION_ARCHS,
    TinyDims,
    cached_tiny,
    is_vision,
    load_tiny,
    make_tiny,
    tiny_from,
)
from siqkit.models.tokenizer import build_tokenizer, chat_template, default_corpus

__all__ = [
    "SUPPORTED_TINY",
    "TEXT_ARCHS",
    "VISION_ARCHS",
    "NoVideoProcessor",
    "TinyDims",
    "build_tokenizer",
    "cached_tiny",
    "chat_template",
    "default_corpus",
    "is_vision",
    "load_processor",
    "load_tiny",
    "make_tiny",
    "tiny_from",
]
