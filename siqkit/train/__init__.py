"""Student training: a curriculum of stages (align -> instruct -> reason) on one GPU or the CPU.

- :mod:`~siqkit.train.config`: the recipe's ``student`` and ``train`` sections;
- :mod:`~siqkit.train.stage`: the ``train`` stage of a recipe run;
- :mod:`~siqkit.train.scratch`: a student built from scratch (``student.build``), with
  its tokenizer and vision pre-training;
- :mod:`~siqkit.train.data`: the curated traces folder, per-stage examples, assistant-only
  labels, length-grouped batches;
- :mod:`~siqkit.train.qlora`: loading a student (4-bit NF4 + LoRA, LoRA or full; frozen parts) and merging;
- :mod:`~siqkit.train.loop`: the training loop (accumulation, checkpoints, resume);
- :mod:`~siqkit.train.watch`: progress bar, TensorBoard and W&B while a stage trains;
- :mod:`~siqkit.train.loss`: the loss without the full logits (chunked, or fused on CUDA);
- :mod:`~siqkit.train.images`: the training pixel cap and image-token counts;
- :mod:`~siqkit.train.checkpoint`: checkpoint files (safetensors + JSON);
- :mod:`~siqkit.train.curriculum`: the stages in order, each from the previous output;
- :mod:`~siqkit.train.memory`: the memory planner behind ``auto`` and ``siqkit plan-memory``;
- :mod:`~siqkit.train.plots`, :mod:`~siqkit.train.tables`: PNG curves and store tables.

``python -m siqkit.train CONFIG DATA_DIR OUT_DIR`` runs the curriculum outside a recipe.
"""

from siqkit.train.config import LoraConfig, StageConfig, StudentConfig, TrainConfig, default_stages
from siqkit.train.curriculum import train_curriculum
from siqkit.train.memory import Plan, parse_size, plan_memory, plan_memory_command

__all__ = [
    "LoraConfig",
    "Plan",
    "StageConfig",
    "StudentConfig",
    "TrainConfig",
    "default_stages",
    "parse_size",
    "plan_memory",
    "plan_memory_command",
    "train_curriculum",
]
