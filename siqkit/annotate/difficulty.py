"""Reasoning difficulty: from the teacher's pass rate over k samples, a judge, or both.

A seed answered k times by a teacher (sample indices 0..k-1) has a pass rate: the
share of samples checked against the gold answer whose answer matched it. The pass rate is a
measurement of *this* teacher on *this* seed, so it is preferred whenever there are
enough samples; a judge's 1–5 score is an opinion that also works without a gold
answer. Level 1 is easiest, 5 hardest.

Pass rate → level (:func:`level_from_pass_rate`), ``level = max(1, 5 - floor(5 * p))``:

=====================  =====  ===========================================
pass rate ``p``         level  with k = 4
=====================  =====  ===========================================
``p >= 0.8``            1      4/4
``0.6 <= p < 0.8``      2      3/4
``0.4 <= p < 0.6``      3      2/4
``0.2 <= p < 0.4``      4      1/4
``p < 0.2``             5      0/4
=====================  =====  ===========================================

Level → bucket (:func:`bucket`): 1–2 ``easy``, 3 ``medium``, 4–5 ``hard``; so with a
pass rate, easy is ``p >= 0.6``, medium ``0.4 <= p < 0.6``, hard ``p < 0.4``.

Which signal is used (:func:`combine_difficulty`). The *opinion* is the judge's score, the
seed's own rating (``prior``: a 1–5 ``difficulty`` in its metadata, from a dataset's level
field or a generator that knows how many steps its question takes), or their mean:

* pass rate from at least ``min_samples`` (default 4) checked samples → the pass-rate
  level (``source="pass_rate"``); an opinion, if any, is kept for comparison and
  ``disagrees`` flags a gap of two levels or more;
* pass rate from fewer samples and an opinion → their weighted mean, the pass rate
  weighted ``k / min_samples``, rounded half up (``source="blend"``): a few samples say
  little, so the opinion carries most of the weight;
* pass rate alone, from fewer samples → the pass-rate level (``source="pass_rate"``);
* opinion alone (no gold answer, or no sample checked) → the opinion (``source="judge"``,
  or ``"dataset"`` when it is the seed's rating alone);
* neither → None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Bucket = Literal["easy", "medium", "hard"]
MIN_SAMPLES = 4


@dataclass(frozen=True)
class Difficulty:
    """One seed's difficulty and where it came from."""

    level: int  # 1 (easiest) .. 5 (hardest)
    bucket: Bucket
    source: Literal["pass_rate", "judge", "dataset", "blend"]
    pass_rate: float | None
    samples: int  # checked samples behind the pass rate
    judge: int | None
    disagrees: bool = False  # pass-rate and judge levels two or more apart


def pass_rate(correct: Iterable[bool | None]) -> tuple[float | None, int]:
    """``(share correct, samples checked)``; samples with a None verdict (no gold) are skipped."""
    checked = [bool(c) for c in correct if c is not None]
    if not checked:
        return None, 0
    return sum(checked) / len(checked), len(checked)


def level_from_pass_rate(p: float) -> int:
    """Difficulty level 1–5 from a pass rate in [0, 1] (table in the module docstring)."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"pass rate must be in [0, 1], got {p}")
    # The epsilon keeps 3/5 = 0.6 (0.6000000000000001 or 0.5999999999999999) on its level.
    return max(1, 5 - math.floor(5 * p + 1e-9))


def bucket(level: int) -> Bucket:
    """easy (1–2), medium (3) or hard (4–5)."""
    _check_level(level, "level")
    return "easy" if level <= 2 else "medium" if level == 3 else "hard"


def combine_difficulty(
    correct: Iterable[bool | None] = (),
    judge: int | None = None,
    min_samples: int = MIN_SAMPLES,
    prior: int | None = None,
) -> Difficulty | None:
    """Difficulty of one seed from its samples' verdicts, a judge score and/or its own
    rating ``prior`` (see above)."""
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    if judge is not None:
        _check_level(judge, "judge score")
    if prior is not None:
        _check_level(prior, "prior difficulty")
    opinions = [x for x in (judge, prior) if x is not None]
    opinion = math.floor(sum(opinions) / len(opinions) + 0.5) if opinions else None
    p, k = pass_rate(correct)
    if p is None:
        if opinion is None:
            return None
        return Difficulty(opinion, bucket(opinion), "judge" if judge is not None else "dataset", None, 0, judge)
    measured = level_from_pass_rate(p)
    disagrees = opinion is not None and abs(measured - opinion) >= 2
    if k >= min_samples or opinion is None:
        return Difficulty(measured, bucket(measured), "pass_rate", p, k, judge, disagrees)
    w = k / min_samples
    level = math.floor(w * measured + (1 - w) * opinion + 0.5)
    return Difficulty(level, bucket(level), "blend", p, k, judge, disagrees)


def _check_level(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValueError(f"{what} must be an integer 1-5, got {value!r}")
