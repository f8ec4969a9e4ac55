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


def test_vision_pretraining_teaches_the_tower_to_tell_images_apart(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText

    from siqkit.train.data import load_traces
    from siqkit.train.qlora import part_of
    from siqkit.train.scratch import captioned_images
    from tests.train.traces import write_traces

    data = write_traces(tmp_path / "traces", n=16)
    assert len(captioned_images(load_traces(data))) == 8  # 16 rows, 8 distinct images
    plain = build_student(BuildConfig(**SMALL), data, tmp_path / "plain", seed=1)
    seen = build_student(BuildConfig(**SMALL, vision_pretrain_steps=80, vision_pretrain_learning_rate=3e-3),
                         data, tmp_path / "seen", seed=1)
    result = json.loads((seen / "vision_pretrain.json").read_text())
    assert result["images"] == 8 and result["steps"] == 80 and result["final_loss"] < result["first_loss"] / 2
    assert not (plain / "vision_pretrain.json").exists()

    # 8 images, each its own colour and shape: only a tower that tells them apart names both words
    assert result["held_out"] == 0 and result["recall_before"] < 0.5 and result["recall_after"] > 0.9, result
    before = dict(AutoModelForImageTextToText.from_pretrained(plain).named_parameters())
    after = dict(AutoModelForImageTextToText.from_pretrained(seen).named_parameters())
    changed = {part_of(n) for n, p in after.items() if not torch.equal(p, before[n])}
    assert changed == {"vision", "projector"}


def test_vision_pretraining_needs_captions(tmp_path):
    from siqkit.errors import SiqkitError
    from tests.train.traces import write_traces

    data = write_traces(tmp_path / "traces", n=4)
    rows = [json.loads(line) for line in (data / "data.jsonl").read_text().splitlines()]
    (data / "data.jsonl").write_text("".join(json.dumps({**r, "caption": None}) + "\n" for r in rows))
    with pytest.raises(SiqkitError, match="no image with a caption"):
        build_student(BuildConfig(**SMALL, vision_pretrain_steps=5), data, tmp_path / "init")


def _recipe(tmp_path, student: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text("seeds: {sources: [{name: d, type: digits}]}\n" + student)
    return str(path)


@pytest.mark.parametrize("student, message", [
    ("student: {path: /nowhere, build: {}}\n", "not both"),
    ("student: {arch: qwen2_vl}\n", "student.path: required"),
    ("student: {build: {arch: gpt2}}\n", "student.build.arch: unknown architecture 'gpt2'"),
    ("student: {build: {hidden_size: 100, heads: 3}}\n", "must divide by heads"),
    ("student: {build: {arch: smolvlm, vision_pretrain_steps: 10}}\n", "vision_pretrain_steps: not supported for smolvlm"),
    ("student: {build: {vision_pretrain_steps: -1}}\n", "vision_pretrain_steps: must be 0 or more"),
])
def test_recipe_errors_name_the_key(tmp_path, student, message):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_recipe(_recipe(tmp_path, student))
