"""Export a Hugging Face model folder to GGUF in one call: f16, quantize, mmproj, verify, extras.

``export_model(model_dir, out, quant)`` is what ``siqkit export`` runs, and what the export
stage of a recipe runs on the merged student; it works on any supported checkpoint folder.

1. the text model is written as f16 GGUF (``<stem>.f16.gguf`` beside ``out``, or ``out`` itself
   when ``quant`` is f16); f32/bf16/q8_0 are written directly, k-quants are made from the f16
   file by llama.cpp's quantizer;
2. with ``mmproj``, the vision tower is written there (always f16);
3. the f16 file, and the requested quant, are checked against the Hugging Face model in
   llama-cpp-python (:func:`siqkit.export.verify_gguf`); an f16 that does not reproduce the
   model raises :class:`~siqkit.export.verify.VerifyError` (nothing downstream should ship it);
4. an Ollama Modelfile and a model card are written beside ``out``, and the whole result is
   saved as ``<out>.export.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from siqkit.export.cards import base_model_id
from siqkit.export.extras import CARD_MARK, MODELFILE_MARK, write_model_card, write_modelfile
from siqkit.export.gguf_writer import GGUF_ARCH_OF, GGUFExportError, write_gguf
from siqkit.export.mmproj import MMPROJ_ARCHS, write_mmproj
from siqkit.export.quantize import DIRECT_TYPES, check_quant, quantize_gguf, tensor_types
from siqkit.export.verify import HFReference, VerifyError, verify_gguf


def _model_type(model_dir: Path) -> str:
    cfg = model_dir / "config.json"
    if not cfg.is_file():
        raise GGUFExportError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    model_type = json.loads(cfg.read_text()).get("model_type")
    if model_type not in GGUF_ARCH_OF:
        raise GGUFExportError(
            f"cannot export model_type {model_type!r}; supported: {', '.join(GGUF_ARCH_OF)}"
        )
    return model_type


def _own_or_new(preferred: Path, fallback: Path, mark: str) -> Path:
    """``preferred`` unless a file not written by siqkit is there already (then ``fallback``)."""
    if preferred.exists() and mark not in preferred.read_text(errors="replace")[:4096]:  # cards open with a header
        return fallback
    return preferred


def f16_path_for(out: Path) -> Path:
    """The f16 file written beside a quantized ``out`` (``model.q4_k_m.gguf`` -> ``model.f16.gguf``)."""
    stem = out.name[: -len(".gguf")] if out.name.endswith(".gguf") else out.name
    for suffix in (".q4_k_m", ".q5_k_m", ".q6_k", ".q8_0", ".bf16", ".f32", ".f16"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return out.with_name(f"{stem}.f16.gguf")


def export_model(
    model_dir: str | Path,
    out: str | Path,
    quant: str = "q4_k_m",
    mmproj: str | Path | None = None,
    *,
    verify: bool = True,
    prompts: list[str] | None = None,
    n_greedy: int = 32,
    name: str | None = None,
    pre: str | None = None,
    hf_dtype: str = "float32",
    lineage: dict | None = None,
    modelfile: bool = True,
    card: bool = True,
    nthread: int = 0,
) -> dict:
    """Export ``model_dir`` to ``out`` as ``quant`` (f16, bf16, f32, q8_0, q4_k_m, q5_k_m, q6_k).

    ``mmproj``: where to write the vision projector (vision-language models only).
    ``verify``: check f16 and ``quant`` in llama-cpp-python against the Hugging Face model;
    an f16 mismatch raises :class:`VerifyError`, a quant below its bar is reported in the
    result (``result["passed"]`` is false). ``pre`` names llama.cpp's pre-tokenizer when the
    tokenizer's split pattern is not recognised; ``hf_dtype`` ("float32" or "bfloat16") is
    the precision of the Hugging Face reference run. ``lineage`` goes into the model card.
    Returns a summary dict (also saved as ``<out>.export.json``).
    """
    started = time.perf_counter()
    src, out = Path(model_dir), Path(out)
    quant = check_quant(quant)
    model_type = _model_type(src)
    if mmproj is not None and model_type not in MMPROJ_ARCHS:
        raise GGUFExportError(
            f"cannot write an mmproj for model_type {model_type!r}; supported: {', '.join(MMPROJ_ARCHS)}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    label = name or (base_model_id(src) or src.name).split("/")[-1]  # a cache snapshot: its repo's name
    timings: dict[str, float] = {}

    def timed(key, fn, *args, **kwargs):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[key] = round(time.perf_counter() - t0, 3)
        return value

    f16 = out if quant == "f16" else f16_path_for(out)
    if f16 == out and quant != "f16":
        raise GGUFExportError(f"output {out} would overwrite its own f16 source; name it <model>.{quant}.gguf")
    timed("write_f16", write_gguf, src, f16, "f16", name=label, pre=pre)
    if quant in DIRECT_TYPES and quant != "f16":
        timed(f"write_{quant}", write_gguf, src, out, quant, name=label, pre=pre)
    elif quant != "f16":
        timed(f"quantize_{quant}", quantize_gguf, f16, out, quant, nthread=nthread)
    proj = Path(mmproj) if mmproj is not None else None
    if proj is not None:
        timed("write_mmproj", write_mmproj, src, proj, name=f"{label} mmproj")

    files = [{"path": str(f16), "quant": "f16"}]
    if out != f16:
        files.append({"path": str(out), "quant": quant})
    for item in files:
        path = Path(item["path"])
        item["size_bytes"] = path.stat().st_size
        item["tensor_types"] = tensor_types(path)

    if verify:
        t0 = time.perf_counter()
        reference = HFReference(src, n_greedy=n_greedy, dtype=getattr(torch, hf_dtype))
        for item in files:
            item["verify"] = verify_gguf(item["path"], src, mmproj=proj, prompts=prompts, reference=reference)
        timings["verify"] = round(time.perf_counter() - t0, 3)

    result = {
        "name": label,
        "model_dir": str(src),
        "model_type": model_type,
        "gguf_arch": GGUF_ARCH_OF[model_type],
        "gguf": str(out),
        "quant": quant,
        "f16": str(f16),
        "mmproj": str(proj) if proj else None,
        "files": files,
        "verified": verify,
        "passed": all((f.get("verify") or {}).get("passed", True) for f in files),
        "timings": timings,
    }
    stem = f16_path_for(out).name[: -len(".f16.gguf")]
    if modelfile:
        target = _own_or_new(out.parent / "Modelfile", out.parent / f"{stem}.Modelfile", MODELFILE_MARK)
        result["modelfile"] = str(write_modelfile(out, target, mmproj=proj))
    if card:
        target = _own_or_new(out.parent / "README.md", out.parent / f"{stem}.README.md", CARD_MARK)
        result["card"] = str(write_model_card(result, target, lineage=lineage))
    result["seconds"] = round(time.perf_counter() - started, 2)
    out.with_name(out.name + ".export.json").write_text(json.dumps(result, indent=2) + "\n")
    f16_check = (files[0].get("verify") or {}) if verify else {}
    if verify and not f16_check.get("passed", False):
        raise VerifyError(
            f"the f16 export of {src} does not reproduce the Hugging Face model: "
            + "; ".join(f16_check.get("failures") or ["unknown failure"])
            + f" (details: {out.with_name(out.name + '.export.json')})"
        )
    return result
