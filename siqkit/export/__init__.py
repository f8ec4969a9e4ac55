"""Export: ship students to llama.cpp as GGUF, checked against the Hugging Face model.

- ``export_model(model_dir, out, quant, mmproj=None)``: the whole export (f16 -> quantize ->
  mmproj -> verify -> Modelfile and model card), used by ``siqkit export`` and the export stage;
- ``write_gguf`` / ``write_mmproj``: siqkit's own GGUF writers (text model; vision projector);
- ``quantize_gguf``: k-quants through llama.cpp's quantizer in llama-cpp-python;
- ``verify_gguf``: greedy, top-1 and logit agreement with transformers, text and images;
- ``merge_lora``: a LoRA adapter merged into its full-precision base, shard by shard;
- ``tiny_gguf(arch, out_dir)``: a real GGUF of a tiny twin in a second, for tests.
"""

from siqkit.export.api import export_model
from siqkit.export.extras import write_model_card, write_modelfile
from siqkit.export.gguf_writer import (
    DTYPES,
    GGUF_ARCH_OF,
    SUPPORTED_GGUF_ARCHS,
    GGUFExportError,
    tiny_gguf,
    write_gguf,
)
from siqkit.export.merge import MergeError, merge_lora
from siqkit.export.mmproj import MMPROJ_ARCHS, write_mmproj
from siqkit.export.quantize import K_QUANTS, QUANT_TYPES, QuantizeError, quantize_gguf, tensor_types
from siqkit.export.tokenizer_gguf import GGUFVocab, TokenizerExportError, read_vocab
from siqkit.export.verify import HFReference, VerifyError, verify_gguf

__all__ = [
    "DTYPES",
    "GGUF_ARCH_OF",
    "K_QUANTS",
    "MMPROJ_ARCHS",
    "QUANT_TYPES",
    "SUPPORTED_GGUF_ARCHS",
    "GGUFExportError",
    "GGUFVocab",
    "HFReference",
    "MergeError",
    "QuantizeError",
    "TokenizerExportError",
    "VerifyError",
    "export_model",
    "merge_lora",
    "quantize_gguf",
    "read_vocab",
    "tensor_types",
    "tiny_gguf",
    "verify_gguf",
    "write_gguf",
    "write_mmproj",
    "write_model_card",
    "write_modelfile",
]
