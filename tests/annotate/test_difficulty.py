"""Difficulty from pass rate over k samples, a judge score, or both."""

from __future__ import annotations

import pytest

from siqkit.annotate.difficulty import bucket, combine_difficulty, level_from_pass_rate, pass_rate


@pytest.mark.parametrize("p,level", [
    (1.0, 1), (0.8, 1), (0.79, 2), (0.75, 2), (0.6, 2), (3 / 5, 2), (0.59, 3), (0.5, 3),
    (0.4, 3), (2 / 5, 3), (0.39, 4), (0.25, 4), (0.2, 4), (1 / 5, 4), (0.19, 5), (0.0, 5),
])
def test_level_from_pass_rate(p, level):
    assert level_from_pass_rate(p) == level


@pytest.mark.parametrize("p", [-0.1, 1.1, float("nan")])
def test_level_rejects_bad_rates(p):
    with pytest.raises(ValueError):
        level_from_pass_rate(p)


def test_k4_table():
    # The table in the module docstring: 4/4 -> 1 ... 0/4 -> 5.
    assert [level_from_pass_rate(c / 4) for c in (4, 3, 2, 1, 0)] == [1, 2, 3, 4, 5]


def test_buckets():
    assert [bucket(level) for level in range(1, 6)] == ["easy", "easy", "medium", "hard", "hard"]
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ValueError):
            bucket(bad)


def test_pass_rate_skips_unchecked():
    assert pass_rate([True, False, None, True]) == (2 / 3, 3)
    assert pass_rate([None, None]) == (None, 0)
    assert pass_rate([]) == (None, 0)


def test_enough_samples_use_pass_rate_and_flag_disagreement():
    d = combine_difficulty([True, True, True, True], judge=5)
    assert (d.level, d.bucket, d.source, d.pass_rate, d.samples, d.judge) == (1, "easy", "pass_rate", 1.0, 4, 5)
    assert d.disagrees
    assert not combine_difficulty([True, True, True, False], judge=3).disagrees


def test_few_samples_blend_with_judge():
    d = combine_difficulty([False], judge=2)  # pass-rate level 5, weight 1/4; judge 2, weight 3/4
    assert (d.level, d.source, d.samples) == (3, "blend", 1)  # 0.25*5 + 0.75*2 = 2.75 -> 3
    d = combine_difficulty([True, False], judge=5)  # level 3 and 5, equal weight -> 4
    assert (d.level, d.bucket, d.source) == (4, "hard", "blend")
    d = combine_difficulty([True, True], judge=2)  # 1 and 2 -> 1.5 rounds half up to 2
    assert d.level == 2


def test_few_samples_without_judge_use_pass_rate():
    d = combine_difficulty([False])
    assert (d.level, d.source, d.judge) == (5, "pass_rate", None)


def test_judge_alone():
    d = combine_difficulty([None, None], judge=4)
    assert (d.level, d.bucket, d.source, d.pass_rate, d.samples) == (4, "hard", "judge", None, 0)


def test_nothing_known():
    assert combine_difficulty([]) is None
    assert combine_difficulty([None]) is None


def test_min_samples_setting():
    d = combine_difficulty([True, False], judge=1, min_samples=2)
    assert (d.level, d.source) == (3, "pass_rate")
    with pytest.raises(ValueError):
        combine_difficulty([True], min_samples=0)
    with pytest.raises(ValueError, match="judge score"):
        combine_difficulty([True], judge=7)
