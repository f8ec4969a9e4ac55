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
