"""The recipe's ``curate`` section: defaults, validation messages, and its place in a recipe."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from siqkit.curate.config import CurateConfig
from siqkit.recipe import Recipe, format_validation_error


class _WithCurate(Recipe):
    curate: CurateConfig = Field(default_factory=CurateConfig)


def validate(curate: dict):
    return _WithCurate.model_validate({"seeds": {"sources": [{"name": "d", "type": "digits"}]}, "curate": curate})


def error(curate: dict) -> str:
    with pytest.raises(ValidationError) as e:
        validate(curate)
    return format_validation_error(e.value)


def test_defaults():
    c = CurateConfig()
    assert c.splits == ["train"] and c.dedup.threshold == 0.8 and c.dedup.ngram == 5 and c.dedup.num_perm == 128
    assert c.rules.drop_incorrect and c.rules.drop_truncated and c.rules.require_reasoning
    assert c.selection.difficulty.mix is None and c.selection.labels.max_per_label is None
    assert c.export.formats == ["jsonl", "parquet", "llamafactory"]
    assert validate({}).curate == c


def test_mix_is_normalised():
    c = validate({"selection": {"difficulty": {"mix": {"easy": 30, "medium": 40, "hard": 30}}}}).curate
    assert c.selection.difficulty.targets() == pytest.approx({"easy": 0.3, "medium": 0.4, "hard": 0.3})
    c = validate({"selection": {"difficulty": {"mix": {"hard": 1}}}}).curate
    assert c.selection.difficulty.targets() == {"easy": 0.0, "medium": 0.0, "hard": 1.0}


@pytest.mark.parametrize("curate, message", [
    ({"rulez": {}}, "curate.rulez: unknown key 'rulez'"),
    ({"dedup": {"threshold": 1.5}}, "curate.dedup.threshold: must be in (0, 1] (got 1.5)"),
    ({"selection": {"difficulty": {"mix": {"easy": 1, "impossible": 2}}}}, "curate.selection.difficulty.mix"),
    ({"selection": {"labels": {"max_per_label": 0}}}, "curate.selection.labels.max_per_label: must be at least 1"),
    ({"rules": {"refusal_patterns": ["(unclosed"]}}, "curate.rules.refusal_patterns[0]: invalid regular expression"),
    ({"subsets": [{"name": "a"}, {"name": "a"}]}, "curate.subsets[1].name: 'a' is already used"),
    ({"subsets": [{"name": "../escape"}]}, "curate.subsets[0].name"),
    ({"rules": {"min_reasoning_tokens": 50, "max_reasoning_tokens": 10}}, "curate.rules.min_reasoning_tokens"),
])
def test_errors_name_the_key(curate, message):
    assert message in error(curate)


@pytest.mark.parametrize("curate, message", [
    ({"dedup": {"num_perm": 0}}, "curate.dedup.num_perm: must be between 2 and 1024 (got 0)"),
    ({"dedup": {"num_perm": 100_000}}, "curate.dedup.num_perm: must be between 2 and 1024"),
    ({"dedup": {"ngram": 0}}, "curate.dedup.ngram: must be between 1 and 64"),
    ({"dedup": {"threshold": float("nan")}}, "curate.dedup.threshold: must be in (0, 1]"),
    ({"dedup": {"image_distance": -1}}, "curate.dedup.image_distance: must be between 0 and 16"),
    ({"rules": {"min_reasoning_tokens": -1}}, "curate.rules.min_reasoning_tokens: must be 0 or more"),
    ({"rules": {"max_answer_tokens": 0}}, "curate.rules.max_answer_tokens: must be at least 1 (got 0)"),
    ({"rules": {"max_line_repeats": 0}}, "curate.rules.max_line_repeats: must be at least 1 (got 0)"),
    ({"rules": {"max_reasoning_tokens": 0}}, "curate.rules.max_reasoning_tokens: 0 drops every trace"),
    ({"rules": {"max_reasoning_tokens": 0, "require_reasoning": False}},
     "curate.rules.min_reasoning_tokens: must not exceed max_reasoning_tokens (3 > 0)"),
    ({"rules": {"repetition_ngram": 0}}, "curate.rules.repetition_ngram: must be at least 1"),
    ({"rules": {"max_repeated_ngram_fraction": 2}}, "curate.rules.max_repeated_ngram_fraction: must be in (0, 1]"),
    ({"rules": {"min_script_fraction": -1}}, "curate.rules.min_script_fraction: must be in [0, 1]"),
    ({"rules": {"min_script_fraction": float("nan")}}, "curate.rules.min_script_fraction: must be in [0, 1]"),
    ({"selection": {"difficulty": {"mix": {"easy": -1, "hard": 2}}}},
     "curate.selection.difficulty.mix.easy: input should be greater than or equal to 0"),
    ({"selection": {"difficulty": {"mix": {"hard": float("inf")}}}},
     "curate.selection.difficulty.mix.hard: Input should be a finite number"),
    ({"selection": {"difficulty": {"mix": {"easy": 0, "hard": 0}}}},
     "curate.selection.difficulty.mix: the shares must not all be 0"),
    ({"selection": {"difficulty": {"mix": {"easy": 1e308, "hard": 1e308}}}},
     "curate.selection.difficulty.mix: the shares are too large"),
    ({"selection": {"difficulty": {"total": 0}}}, "curate.selection.difficulty.total: must be at least 1"),
    ({"selection": {"difficulty": {"tolerance": -0.1}}}, "curate.selection.difficulty.tolerance: input should be greater"),
    ({"selection": {"difficulty": {"tolerance": 2}}}, "curate.selection.difficulty.tolerance: input should be less"),
    ({"selection": {"difficulty": {"tolerance": float("nan")}}}, "curate.selection.difficulty.tolerance: Input should be a finite"),
    ({"subsets": [{"name": "a", "max": 0}]}, "curate.subsets[0].max: must be at least 1"),
])
def test_out_of_range_numbers_are_refused_with_their_key(curate, message):
    msg = error(curate)
    assert message in msg and "\n" not in msg, msg


@pytest.mark.parametrize("curate", [
    {"dedup": {"threshold": 1, "num_perm": 2, "ngram": 1, "image_distance": 0}},
    {"dedup": {"num_perm": 1024, "ngram": 64, "image_distance": 16}},
    {"rules": {"min_reasoning_tokens": 0, "max_reasoning_tokens": 0, "require_reasoning": False}},
    {"rules": {"min_reasoning_tokens": 7, "max_reasoning_tokens": 7, "max_answer_tokens": 1, "max_line_repeats": 1}},
    {"rules": {"min_reasoning_tokens": None, "max_reasoning_tokens": None, "max_answer_tokens": None,
               "max_line_repeats": None, "max_repeated_ngram_fraction": None}},
    {"rules": {"max_repeated_ngram_fraction": 1, "min_script_fraction": 0, "repetition_ngram": 1}},
    {"rules": {"min_script_fraction": 1}},
    {"selection": {"difficulty": {"mix": {"easy": 0, "hard": 0.5}, "total": 1, "tolerance": 0}}},
    {"selection": {"difficulty": {"tolerance": 1}, "labels": {"max_per_label": 1}}},
])
def test_edge_values_are_accepted(curate):
    validate(curate)
