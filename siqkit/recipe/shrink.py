"""``--tiny``, the recipe half: every source capped, every model checked to have a twin.

``siqkit run RECIPE --tiny`` is how a recipe for real checkpoints is smoke-tested on a CPU in
minutes before it is run for hours on a GPU: the same recipe, with each model replaced by a
randomly initialised twin of the *same architecture class* with tiny dimensions. This module
rewrites the loaded recipe (:func:`prepare_tiny`, called by ``load_recipe(..., tiny=True)``);
it builds and writes nothing and imports no model code. The twins themselves are built when
the run starts (:mod:`siqkit.tiny_run`, which says what each backend's model becomes).

A model can be twinned when its checkpoint's ``config.json`` names its class or, without a
checkpoint, when its ``arch`` is one of :data:`siqkit.archs.SUPPORTED_TINY` (a ``llama_cpp``
teacher's one of :data:`siqkit.archs.SUPPORTED_GGUF_ARCHS`; an ``openai`` teacher always needs
``arch``). ``python`` teachers run as they are. The student built from scratch
(``student.build``) is built as it says, with its vision pre-training capped at
``tiny.max_train_steps`` steps. Every training stage stops after ``tiny.max_train_steps`` steps.

Data: every source is capped at ``tiny.max_seeds`` per split (a ``digits`` source generates
only that many images), evaluation at ``tiny.max_seeds`` seeds, and every teacher's, the
judge's and the evaluation's ``max_new_tokens`` at ``tiny.max_new_tokens``.
Checkpoint paths given as ``${VAR}`` may stay unset under ``--tiny``. The run folder defaults
to ``runs/<name>-tiny`` so a smoke test never mixes with a real run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from siqkit.archs import SUPPORTED_GGUF_ARCHS, SUPPORTED_TINY
from siqkit.errors import RecipeError

if TYPE_CHECKING:
    from siqkit.recipe.schema import Recipe, TeacherConfig


def prepare_tiny(recipe: Recipe) -> None:
    """Check that every model can be twinned and cap the data; builds and writes nothing."""
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
        if st.arch is None and not is_checkpoint(st.path):
            raise RecipeError(f"student.arch: --tiny needs the student's architecture "
                              f"(one of {', '.join(SUPPORTED_TINY)}) when its checkpoint is not available")
        if st.arch is not None and st.arch not in SUPPORTED_TINY:
            raise RecipeError(f"student.arch: unknown architecture '{st.arch}'; "
                              f"expected one of {', '.join(SUPPORTED_TINY)}")
    for i, t in enumerate(recipe.teachers):
        t.sampling.max_new_tokens = min(t.sampling.max_new_tokens, cfg.max_new_tokens)
        if t.backend == "python":
            continue
        if t.arch is None and not has_checkpoint(t):
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


def is_checkpoint(path: Path | None) -> bool:
    """A local Hugging Face checkpoint folder (its class is what the twin copies)."""
    return path is not None and (path / "config.json").is_file()


def has_checkpoint(t: TeacherConfig) -> bool:
    """A teacher whose twin copies its checkpoint's class rather than its ``arch``."""
    return t.backend in ("transformers", "vllm") and is_checkpoint(t.path)
