"""Export: write students as GGUF (siqkit's own metadata, tensor and tokenizer mapping).

``write_gguf(model_dir, out_path, dtype)`` handles Hugging Face ``llama``, ``qwen2`` and
``qwen3`` text models; ``tiny_gguf(arch, out_dir)`` gives a real GGUF of a tiny twin in a
second, for tests of anything that consumes GGUF files.
"""

from siqkit.export.gguf_writer import (
    DTYPES,
    SUPPORTED_GGUF_ARCHS,
    GGUFExportError,
    tiny_gguf,
    write_gguf,
)
from siqkit.export.tokenizer_gguf import GGUFVocab, TokenizerExportError, read_vocab

__all__ = [
    "DTYPES",
    "SUPPORTED_GGUF_ARCHS",
    "GGUFExportError",
    "GGUFVocab",
    "TokenizerExportError",
    "read_vocab",
    "tiny_gguf",
    "write_gguf",
]
