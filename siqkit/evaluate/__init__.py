"""Evaluation of students on held-out seeds (accuracy, format adherence, reasoning length), per task.

- :mod:`~siqkit.evaluate.heldout`: which seeds are held out (``eval.*``), and the training
  seeds evaluation refuses;
- :mod:`~siqkit.evaluate.evaluate`: one checkpoint or GGUF file on those seeds, its numbers
  and side-by-side table; an identical earlier evaluation reused;
- :mod:`~siqkit.evaluate.tables`: the store's ``eval_runs`` and ``eval_outputs``;
- :mod:`~siqkit.evaluate.table`: every model of a run on the same seeds, in one table;
- :mod:`~siqkit.evaluate.stage`: the ``eval`` stage of a recipe run.

The train and export stages evaluate through this package; it imports nothing from them.
"""

from siqkit.evaluate.evaluate import (EvalRefusedError, EvalSeed, check_held_out, evaluate_checkpoint,
                                      evaluate_student, side_by_side)
from siqkit.evaluate.heldout import eval_seeds, training_seed_ids

__all__ = ["EvalRefusedError", "EvalSeed", "check_held_out", "eval_seeds", "evaluate_checkpoint", "evaluate_student",
           "side_by_side", "training_seed_ids"]
