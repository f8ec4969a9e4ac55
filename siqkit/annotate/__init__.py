"""Annotation: check, label and measure generated traces.

Pure functions, which touch neither the run store nor a model:

- :mod:`~siqkit.annotate.normalize`: :func:`check_answer`, the rule-based check: is a
  predicted answer the gold one (yes/no, numbers, option letters, short text)?
- :mod:`~siqkit.annotate.labels`: rule-based task tags, and parsing the judge's JSON verdict;
- :mod:`~siqkit.annotate.stats`: token counts, step counts, answer length;
- :mod:`~siqkit.annotate.difficulty`: difficulty from pass rate over k samples and/or
  a judge score.

And the stage that stores results: :mod:`~siqkit.annotate.stage`
(:func:`~siqkit.annotate.stage.run_annotate`) asks the optional judge model for its
verdicts, calls the functions above for every trace and writes the results to the run
store's ``annotations`` table.
"""

from siqkit.annotate.difficulty import Difficulty, combine_difficulty, level_from_pass_rate, pass_rate
from siqkit.annotate.labels import parse_judge_json, task_labels
from siqkit.annotate.normalize import check_answer, infer_kind
from siqkit.annotate.stats import ReasoningStats, count_steps, reasoning_stats

__all__ = [
    "Difficulty",
    "ReasoningStats",
    "check_answer",
    "combine_difficulty",
    "count_steps",
    "infer_kind",
    "level_from_pass_rate",
    "parse_judge_json",
    "pass_rate",
    "reasoning_stats",
    "task_labels",
]
