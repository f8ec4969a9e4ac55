"""Every reason the ``curate`` stage can drop a trace for, by layer, listed once.

A drop is stored in ``curation`` as ``(layer, reason, detail)``: the layer and the reason come
from here, the detail says by how much. The rules layer's reasons are those of
:data:`siqkit.curate.rules.RULES`, in the order the rules run (a test holds the two equal);
dedup's come from :mod:`siqkit.curate.stage`; selection's from :mod:`siqkit.curate.select`
and the stage's reasoning-length matching.
"""

from __future__ import annotations

# rules (siqkit.curate.rules), in the order they run
NOT_ANNOTATED = "not annotated"
TEACHER_ERROR = "teacher error"
EMPTY_OUTPUT = "empty output"
TRUNCATED = "truncated"
NO_ANSWER = "no answer"
NO_REASONING = "no reasoning"
WRONG_ANSWER = "wrong answer"
NO_GOLD = "no gold answer"
REASONING_TOO_SHORT = "reasoning too short"
REASONING_TOO_LONG = "reasoning too long"
ANSWER_TOO_LONG = "answer too long"
CHARSET = "charset"
REFUSAL = "refusal"
LOOP = "loop"
REPETITION = "repetition"

# dedup: exact copies, then MinHash + LSH near-duplicates; questions first, then reasoning
DUPLICATE_QUESTION = "duplicate question"
NEAR_DUPLICATE_QUESTION = "near-duplicate question"
DUPLICATE_REASONING = "duplicate reasoning"
NEAR_DUPLICATE_REASONING = "near-duplicate reasoning"

# selection: one trace per question by reasoning length, then the difficulty mix and label caps
REASONING_LENGTH = "reasoning length"
NO_DIFFICULTY = "no difficulty"
DIFFICULTY_QUOTA = "difficulty quota"
TOTAL_REACHED = "total reached"
LABEL_CAP = "label cap"
NOT_SELECTED = "not selected"  # a selection drop without a more specific reason

REASONS: dict[str, tuple[str, ...]] = {
    "rules": (NOT_ANNOTATED, TEACHER_ERROR, EMPTY_OUTPUT, TRUNCATED, NO_ANSWER, NO_REASONING, WRONG_ANSWER,
              NO_GOLD, REASONING_TOO_SHORT, REASONING_TOO_LONG, ANSWER_TOO_LONG, CHARSET, REFUSAL, LOOP,
              REPETITION),
    "dedup": (DUPLICATE_QUESTION, NEAR_DUPLICATE_QUESTION, DUPLICATE_REASONING, NEAR_DUPLICATE_REASONING),
    "selection": (REASONING_LENGTH, NO_DIFFICULTY, DIFFICULTY_QUOTA, TOTAL_REACHED, LABEL_CAP, NOT_SELECTED),
}
"""Every reason of each layer (``curation.layer``), in the order the layer checks them."""
