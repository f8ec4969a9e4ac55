"""Quantize a GGUF file with llama.cpp's own quantizer, as llama-cpp-python exposes it.

f32, f16, bf16 and q8_0 are written directly by :func:`siqkit.export.write_gguf`; the k-quants
(q4_k_m, q5_k_m, q6_k) need llama.cpp's mixing rules (which tensors get a larger type) and
its quantization kernels, so they go through ``llama_model_quantize`` from an f16 (or f32)
file. llama.cpp picks each tensor's type itself: a tensor whose rows are not a multiple of
the 256-value k-quant block falls back to a 32-value type (q5_0, q8_0, ...), so narrow
models quantize too, only less.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gguf

from siqkit.errors import SiqkitError

DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0")
"""Written by the GGUF writer itself."""

K_QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
"""Quant name -> llama.cpp ``llama_ftype`` (LLAMA_FTYPE_MOSTLY_Q4_K_M = 15, Q5_K_M = 17, Q6_K = 18)."""

QUANT_TYPES = DIRECT_TYPES + tuple(K_QUANTS)


class QuantizeError(SiqkitError, ValueError):
    """A GGUF file cannot be quantized as asked."""


@contextlib.contextmanager
def quiet_llama() -> Iterator[None]:
    """Silence llama.cpp's per-tensor log lines (they go through llama-cpp-python's logger)."""
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_quant(quant: str) -> str:
    """Normalise a quant name ("Q4_K_M" -> "q4_k_m") or raise listing the supported ones."""
    name = quant.lower()
    if name not in QUANT_TYPES:
        raise QuantizeError(f"unknown quant type {quant!r}; choose one of {', '.join(QUANT_TYPES)}")
    return name


def quantize_gguf(src: str | Path, dst: str | Path, quant: str, *, nthread: int = 0) -> Path:
    """Quantize the f16/f32 GGUF ``src`` to ``dst`` as ``quant`` (q4_k_m, q5_k_m or q6_k).

    ``nthread`` <= 0 lets llama.cpp use every core. Norms and other 1-D tensors stay f32, as
    llama.cpp does. Returns ``dst`` as a Path.
    """
    name = check_quant(quant)
    if name not in K_QUANTS:
        raise QuantizeError(f"{name} is written directly by write_gguf(dtype={name!r}); quantize_gguf does k-quants: "
                            f"{', '.join(K_QUANTS)}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise QuantizeError(f"no GGUF file at {src}")
    source_type = gguf.GGUFReader(src).fields.get("general.file_type")
    if source_type is not None and int(source_type.contents()) not in (0, 1, 32):
        raise QuantizeError(f"{src} is already quantized; quantize from the f16, bf16 or f32 export")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = K_QUANTS[name]
    params.nthread = nthread
    dst.parent.mkdir(parents=True, exist_ok=True)
    with quiet_llama():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        dst.unlink(missing_ok=True)
        raise QuantizeError(f"llama.cpp could not quantize {src} to {name} (return code {rc})")
    return dst


def tensor_types(path: str | Path) -> dict[str, int]:
    """How many tensors of each GGML type a GGUF file holds, e.g. ``{"Q4_K": 12, "Q6_K": 3, "F32": 9}``."""
    reader = gguf.GGUFReader(path)
    return dict(Counter(t.tensor_type.name for t in reader.tensors).most_common())
