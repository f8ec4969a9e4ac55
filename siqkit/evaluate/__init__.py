"""Evaluation of students on held-out seeds (accuracy, format adherence, reasoning length)."""

from siqkit.evaluate.evaluate import EvalRefusedError, EvalSeed, check_held_out, evaluate_student, side_by_side

__all__ = ["EvalRefusedError", "EvalSeed", "check_held_out", "evaluate_student", "side_by_side"]
