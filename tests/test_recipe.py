"""Recipe validation: every problem is one line naming its key path; overrides and ${ENV} work."""

from __future__ import annotations

import pytest
import yaml

from siqkit.errors import RecipeError
from siqkit.recipe import apply_override, load_recipe

from tests.conftest import REPO

BASE = {
    "seeds": {"sources": [{"name": "ev", "type": "easy_vqa"}]},
    "teachers": [
        {"name": "a", "backend": "python", "callable": "m:f"},
        {"name": "b", "backend": "python", "callable": "m:g"},
    ],
}


def write(tmp_path, data, name="r.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def error_of(tmp_path, data=None, overrides=None, text=None):
    p = write(tmp_path, text if text is not None else (data or BASE))
    with pytest.raises(RecipeError) as e:
        load_recipe(p, overrides)
    msg = str(e.value)
    assert "\n" not in msg, "recipe errors are one line"
    assert e.value.exit_code == 2
    return msg


def test_valid_recipe_defaults(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.run.name == "r"
    assert str(r.run_dir) == "runs/r"
    assert r.seed == 0
    assert r.seeds.sources[0].split == "train"
    assert r.seeds.sources[0].fields["question"] == "question"
    assert r.teachers[0].quantization == "4bit"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["teachers[1].backend=vlm"],
         "teachers[1].backend: unknown backend 'vlm'; expected one of transformers, vllm, llama_cpp, openai, python"),
        (["seeds.sources[0].nmae=x"], "seeds.sources[0].nmae: unknown key 'nmae'; did you mean 'name'?"),
        (["bogus=1"], "bogus: unknown key 'bogus'; expected one of run, seed, seeds, teachers, generate, annotate, curate, tiny, student, train, eval, export"),
        (["seeds.sources[0].max=abc"], "seeds.sources[0].max: expected an integer, got str 'abc'"),
        (["seeds.sources[0].max=0"], "seeds.sources[0].max: must be at least 1 (got 0); remove it for no cap"),
        (["seeds.sources[0].weight=-1"], "seeds.sources[0].weight: must be greater than 0 (got -1.0)"),
        (["seeds.sources[0].test_fraction=1.5"], "seeds.sources[0].test_fraction: must be between 0 and 1"),
        (["seeds.sources[0].type=jsonl"], "seeds.sources[0].path: required for a 'jsonl' source"),
        (["seeds.sources[0].type=jsonl", "seeds.sources[0].path=missing.jsonl"],
         "seeds.sources[0].path: file not found:"),
        (["seeds.sources[0].operations=[add, divide]"],
         "seeds.sources[0].operations[1]: unknown value 'divide'; expected one of add, subtract, multiply"),
        (["teachers[1].name=a"], "teachers[1].name: duplicate teacher name 'a'"),
        (["teachers[0].backend=openai"], "teachers[0].endpoints: the 'openai' backend needs at least one endpoint"),
        (["teachers[0].backend=transformers"], "teachers[0].path: required for the 'transformers' backend"),
        (["teachers[0].backend=vllm"], "teachers[0].path: required for the 'vllm' backend"),
        (["teachers[0].quantization=fp8"], "teachers[0].quantization: 'fp8' is a vllm quantization"),
        (["teachers[0].batching=continuous"], "teachers[0].batching: 'continuous' is an option of the transformers"),
        (["teachers[0].batch_size=0"], "teachers[0].batch_size: must be at least 1 (got 0)"),
        (["teachers[0].window=0"], "teachers[0].window: must be at least 1 (got 0)"),
        (["teachers[0].max_pixels=100"], "teachers[0].max_pixels: must be at least 784"),
        (["teachers[0].gpu_memory_utilization=1.5"], "teachers[0].gpu_memory_utilization: must be in (0, 1]"),
        (["teachers[0].kv_cache_gb=0"], "teachers[0].kv_cache_gb: must be greater than 0"),
        (["generate.commit_rows=0"], "generate.commit_rows: "),
        (["seeds.max_total=0"], "seeds.max_total: must be at least 1 (got 0)"),
        (["seeds.sources=[]"], "seeds.sources: at least one source is required"),
        (["seed=ten"], "seed: expected an integer, got str 'ten'"),
        (["teachers[1].route.sources=[ev, nope]"], "teachers[1].route.sources[1]: no seed source named 'nope'"),
        (["annotate.judge=zed"], "annotate.judge: no teacher named 'zed'"),
        (["teachers[0].route.question_regex=(unclosed"], "teachers[0].route.question_regex: invalid regular expression"),
        (["teachers[0].prompt.template={question} {answer}"], "teachers[0].prompt.template: unknown placeholder {answer}"),
        (["generate.routing=random"], "generate.routing: unknown routing 'random'; expected one of first, all"),
    ],
)
def test_errors_name_the_key_path(tmp_path, overrides, expected):
    assert error_of(tmp_path, overrides=overrides).startswith(expected)


def test_missing_required_section(tmp_path):
    assert error_of(tmp_path, data={"seed": 1}) == "seeds: required key is missing"


def test_several_problems_are_counted_on_one_line(tmp_path):
    msg = error_of(tmp_path, overrides=["seed=x", "bogus=1"])
    assert msg.endswith("(and 1 more problem)")


def test_invalid_yaml_names_the_line(tmp_path):
    msg = error_of(tmp_path, text="seeds:\n  sources: [\n    - bad\n")
    assert "r.yaml:" in msg and "invalid YAML" in msg


def test_non_mapping_recipe(tmp_path):
    assert "a recipe must be a mapping" in error_of(tmp_path, text="- 1\n- 2\n")


def test_recipe_file_not_found(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_env_substitution(tmp_path, monkeypatch):
    data_file = tmp_path / "q.jsonl"
    data_file.write_text('{"question": "q?"}\n')
    monkeypatch.setenv("SIQ_DATA", str(tmp_path))
    data = {"seeds": {"sources": [{"name": "j", "type": "jsonl", "path": "${SIQ_DATA}/q.jsonl"}]},
            "run": {"dir": "${SIQ_RUNS:-out}/x"}}
    r = load_recipe(write(tmp_path, data))
    assert r.seeds.sources[0].path == data_file
    assert str(r.run_dir) == "out/x"
    monkeypatch.delenv("SIQ_DATA")
    msg = error_of(tmp_path, data=data)
    assert msg.startswith("seeds.sources[0].path: environment variable SIQ_DATA is not set")


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "q.jsonl").write_text('{"question": "q?"}\n')
    data = {"seeds": {"sources": [{"name": "j", "type": "jsonl", "path": "q.jsonl"}]}}
    r = load_recipe(write(tmp_path / "sub", data))
    assert r.seeds.sources[0].path == tmp_path / "sub" / "q.jsonl"


def test_overrides_parse_yaml_values_and_create_keys():
    data = {"a": {"b": [1, {"c": 2}]}}
    apply_override(data, "a.b[1].c=3")
    apply_override(data, "a.d.e=[x, y]")
    apply_override(data, "a.f=null")
    apply_override(data, "a.g=/some/path")
    assert data == {"a": {"b": [1, {"c": 3}], "d": {"e": ["x", "y"]}, "f": None, "g": "/some/path"}}
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        apply_override(data, "novalue")
    with pytest.raises(RecipeError, match=r"index \[5\] is out of range"):
        apply_override(data, "a.b[5]=1")


def test_shipped_recipes_are_valid():
    """Recipes without environment variables load as they are; the real-model ones, which
    need checkpoint and data paths, are checked with every variable set in tests/recipes/."""
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "the kit ships recipes"
    plain = [p for p in recipes if "${" not in p.read_text()]
    assert any(p.name == "quickstart.yaml" for p in plain)
    for path in plain:
        load_recipe(path)
