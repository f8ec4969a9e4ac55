"""Held-out seed choice: per task, deterministic, interleaved; the training seeds evaluation refuses."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from siqkit.errors import SiqkitError
from siqkit.evaluate.heldout import eval_seeds, task_sql, training_seed_ids
from siqkit.recipe import EvalConfig
from tests.curate.conftest import build_store, png, sample
from tests.train.traces import write_traces


def recipe(seed: int = 0, **ev) -> SimpleNamespace:
    """What held-out seed choice reads of a recipe: its seed and its eval section."""
    return SimpleNamespace(seed=seed, eval=EvalConfig.model_validate(ev))


@pytest.fixture
def store(tmp_path):
    """Test seeds of sources ``a`` (5) and ``b`` (3), one with two teachers' traces; train seeds and an
    unselected test seed that evaluation never uses. Seeds a0-a2 carry ``metadata.operation``."""
    samples = [sample(i, seed_id=f"a{i}", key=f"ka{i}", source="a", split="test", gold=f"gold-a{i}",
                      images=[png(size=40 + i)] if i == 0 else []) for i in range(5)]
    samples += [sample(i, seed_id=f"b{i}", key=f"kb{i}", source="b", split="test", gold=f"gold-b{i}")
                for i in range(3)]
    samples += [sample(0, seed_id="a0", key="ka0-z", teacher="zz", answer="second teacher"),
                sample(9, seed_id="t0", key="kt0", source="a", split="train"),
                sample(8, seed_id="u0", key="ku0", source="a", split="test")]
    st = build_store(tmp_path / "run", samples)
    st.con.execute("UPDATE seeds SET selected = false WHERE id = 'u0'")
    st.con.execute("""UPDATE seeds SET metadata = '{"operation": "add", "caption": "a red circle"}'
                      WHERE id IN ('a0', 'a1', 'a2')""")
    yield st
    st.close()


def test_task_sql_is_the_source_or_a_metadata_field_falling_back_to_it():
    assert task_sql("source") == "s.source"
    assert task_sql("metadata.operation") == "coalesce(json_extract_string(s.metadata, '$.operation'), s.source)"


def test_per_task_sample_is_deterministic_and_interleaved(store):
    seeds = eval_seeds(store, recipe(per_task=2))
    assert [s["task"] for s in seeds] == ["a", "b", "a", "b"]
    assert {s["seed_id"] for s in seeds} <= {f"a{i}" for i in range(5)} | {f"b{i}" for i in range(3)}
    assert eval_seeds(store, recipe(per_task=2)) == seeds  # the recipe's seed fixes the sample
    everything = eval_seeds(store, recipe())
    assert sorted(s["seed_id"] for s in everything) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    a0 = next(s for s in everything if s["seed_id"] == "a0")
    assert a0["gold"] == "gold-a0" and a0["caption"] == "a red circle" and a0["question"].startswith("Question")
    assert len(a0["images"]) == 1 and open(a0["images"][0], "rb").read()[:4] == b"\x89PNG"
    # the first teacher's trace (by name), as the side-by-side shows it
    assert a0["teacher_trace"].startswith("<think>") and "second teacher" not in a0["teacher_trace"]


def test_tasks_max_seeds_and_a_metadata_task(store):
    assert {s["task"] for s in eval_seeds(store, recipe(tasks=["b"]))} == {"b"}
    capped = eval_seeds(store, recipe(max_seeds=3))
    assert len(capped) == 2 and [s["task"] for s in capped] == ["a", "b"]  # 3 // 2 tasks: one of each
    by_operation = eval_seeds(store, recipe(task_by="metadata.operation"))
    tasks = {s["seed_id"]: s["task"] for s in by_operation}
    assert tasks == {"a0": "add", "a1": "add", "a2": "add", "a3": "a", "a4": "a", "b0": "b", "b1": "b", "b2": "b"}


def test_training_seed_ids_read_the_curated_dataset(tmp_path):
    data = write_traces(tmp_path / "data", 4)
    expected = {json.loads(line)["seed_id"] for line in (data / "data.jsonl").read_text().splitlines()}
    assert training_seed_ids(data) == training_seed_ids(data / "data.jsonl") == expected
    with pytest.raises(SiqkitError, match="training data not found"):
        training_seed_ids(tmp_path / "nowhere")
    (tmp_path / "bad.jsonl").write_text('{"seed_id": "x"}\n\n{"id": "y"}\n')
    with pytest.raises(SiqkitError, match=r"bad.jsonl:3: expected a JSON object with a 'seed_id'"):
        training_seed_ids(tmp_path / "bad.jsonl")
