"""k-quants through llama.cpp's quantizer, and what they keep of the model.

The k-quants are measured on the qwen3 parity twin, which is wide enough for them (hidden
256: one whole 256-value block per row; narrower rows fall back to 32-value types) and trained
until it knows a passage of the built-in corpus, so that its top-1 choices have clear margins
as a real model's do (``trained`` in conftest).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from siqkit.export import QuantizeError, quantize_gguf, tensor_types, write_gguf
from siqkit.export.runtime import eval_logits, open_llama
from siqkit.models.twins import make_tiny

from .conftest import figures

WIDE = "qwen3"
"""A parity twin with hidden 256."""


def _file_type(path) -> int:
    return int(gguf.GGUFReader(path).fields["general.file_type"].contents())


@pytest.fixture(scope="module")
def quants(parity):
    """{quant: GGUF} of the wide parity twin."""
    return {q: parity.path(WIDE, q) for q in ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")}


def test_k_quants_use_llama_cpp_types(quants):
    files = quants
    assert gguf.GGUFReader(files["f16"]).fields["qwen3.embedding_length"].contents() == 256
    assert _file_type(files["q4_k_m"]) == 15 and _file_type(files["q5_k_m"]) == 17 and _file_type(files["q6_k"]) == 18
    types = tensor_types(files["q4_k_m"])
    assert types.get("Q4_K", 0) > 0 and types.get("Q6_K", 0) > 0  # q4_k_m mixes in q6_k for sensitive tensors
    assert "F32" in types  # norms stay f32
    assert set(tensor_types(files["q6_k"])) <= {"Q6_K", "F32"}
    sizes = [files[q].stat().st_size for q in ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("quant,bar", [("q4_k_m", 0.90), ("q5_k_m", 0.92), ("q6_k", 0.95)])
def test_quant_top1_agreement(parity, quant, bar):
    """Acceptance: q4_k_m top-1 agreement >= 0.90 with the Hugging Face model over every position.

    q5_k_m and q6_k are held to ``verify_gguf``'s bars (0.92, 0.95), likewise over every position
    of the parity prompts (~440, near-ties included), on a hidden-256 twin (its q8_0 is checked
    in test_parity.py). Measured over three seeds: q4_k_m 0.991-1.000, q5_k_m 0.998-1.000,
    q6_k 0.998-1.000.
    """
    s = parity(WIDE, quant)
    assert s["quant"] == quant
    assert s["text"]["positions"] >= 400
    assert s["text"]["top1"] >= bar, figures(s["text"])
    assert s["passed"], s["failures"]


def test_narrow_model_falls_back_per_tensor(tmp_path):
    """hidden 64 rows cannot hold a 256-value k-quant block: llama.cpp picks a 32-block type per tensor."""
    hf = make_tiny("qwen2", tmp_path / "hf")
    f16 = write_gguf(hf, tmp_path / "m.f16.gguf", "f16")
    q = quantize_gguf(f16, tmp_path / "m.q4_k_m.gguf", "Q4_K_M")
    types = tensor_types(q)
    assert not {"Q4_K", "Q5_K", "Q6_K"} & set(types), types
    assert set(types) - {"F32", "F16"}, types  # still quantized, with fallback types
    llm = open_llama(q, n_ctx=64)
    try:
        assert np.isfinite(eval_logits(llm, [5, 6, 7])).all()
    finally:
        llm.close()


def test_quantize_errors(tmp_path, quants):
    files = quants
    with pytest.raises(QuantizeError, match="choose one of"):
        quantize_gguf(files["f16"], tmp_path / "x.gguf", "q3_k_s")
    with pytest.raises(QuantizeError, match="written directly"):
        quantize_gguf(files["f16"], tmp_path / "x.gguf", "q8_0")
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_gguf(files["q4_k_m"], tmp_path / "x.gguf", "q6_k")
    with pytest.raises(QuantizeError, match="no GGUF"):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "x.gguf", "q6_k")
