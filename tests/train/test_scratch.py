"""A student built from scratch (``student.build``): real class, data-trained tokenizer, reused when unchanged."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from transformers import AutoConfig, AutoTokenizer

from siqkit.models import load_processor
from siqkit.recipe import load_recipe
from siqkit.errors import RecipeError
from siqkit.train.config import BuildConfig
from siqkit.train.scratch import build_student, tokenizer_corpus

SMALL = dict(arch="qwen2_vl", hidden_size=64, layers=1, heads=2, kv_heads=1, intermediate_size=128, vocab_size=600,
             vision_width=32, vision_depth=1, image_tokens=4)


def test_builds_a_real_class_with_a_tokenizer_trained_on_the_data(traces, tmp_path):
    out = build_student(BuildConfig(**SMALL), traces, tmp_path / "init", seed=3)
    cfg = AutoConfig.from_pretrained(out)
    assert cfg.architectures == ["Qwen2VLForConditionalGeneration"]
    assert (cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers) == (64, 1)
    assert (cfg.vision_config.embed_dim, cfg.vision_config.depth) == (32, 1)
    tok = AutoTokenizer.from_pretrained(out)
    # "background" occurs in every caption of the traces and never in the built-in corpus
    assert len(tok(" background")["input_ids"]) == 1
    assert any("background" in t for t in tokenizer_corpus(traces))
    # a 64x64 image becomes exactly `image_tokens` visual tokens
    grid = load_processor(out).image_processor(images=[Image.new("RGB", (64, 64))], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) // 4 == 4
    assert json.loads((out / "build.json").read_text())["seed"] == 3


def test_reused_when_unchanged_and_rebuilt_when_settings_change(traces, tmp_path):
    cfg = BuildConfig(**SMALL)
    out = build_student(cfg, traces, tmp_path / "init")
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert build_student(cfg, traces, tmp_path / "init") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    build_student(cfg.model_copy(update={"hidden_size": 128, "heads": 4, "kv_heads": 2}), traces, out)
    assert AutoConfig.from_pretrained(out).text_config.hidden_size == 128


def _recipe(tmp_path, student: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text("seeds: {sources: [{name: d, type: digits}]}\n" + student)
    return str(path)


@pytest.mark.parametrize("student, message", [
    ("student: {path: /nowhere, build: {}}\n", "not both"),
    ("student: {arch: qwen2_vl}\n", "student.path: required"),
    ("student: {build: {arch: gpt2}}\n", "student.build.arch: unknown architecture 'gpt2'"),
    ("student: {build: {hidden_size: 100, heads: 3}}\n", "must divide by heads"),
])
def test_recipe_errors_name_the_key(tmp_path, student, message):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_recipe(_recipe(tmp_path, student))
