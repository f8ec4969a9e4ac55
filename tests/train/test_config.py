"""The student and train sections: defaults, and clear errors for impossible values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from siqkit.recipe import format_validation_error
from siqkit.train import StudentConfig, TrainConfig


def _error(cls, data) -> str:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    return format_validation_error(info.value)


def test_defaults_are_the_three_stage_qlora_curriculum():
    cfg = TrainConfig()
    assert [s.name for s in cfg.stages] == ["align", "instruct", "reason"]
    align, instruct, reason = cfg.stages
    assert align.data == "caption" and set(align.freeze) == {"vision", "language"}
    assert instruct.data == "answer" and instruct.freeze == ["vision"]
    assert reason.data == "cot" and reason.order == "easy_to_hard" and set(reason.freeze) == {"vision", "projector"}
    assert {s.method for s in cfg.stages} == {"qlora"}
    assert cfg.lora.target_modules == "all-linear" and cfg.micro_batch == "auto" and cfg.grad_accum == "auto"


def test_errors_name_the_key():
    assert "unknown key 'lr'" in _error(TrainConfig, {"lr": 1e-4})
    msg = _error(TrainConfig, {"stages": [{"name": "x", "freeze": ["vision", "projector", "language"]}]})
    assert "would train nothing" in msg
    assert "duplicate stage name 'a'" in _error(TrainConfig, {"stages": [{"name": "a"}, {"name": "a"}]})
    assert "cannot read memory size" in _error(TrainConfig, {"vram": "lots"})
    assert "unknown method 'dora'" in _error(TrainConfig, {"stages": [{"name": "a", "method": "dora"}]})
    assert "{caption}" in _error(StudentConfig, {"path": "x", "image_text": "[image]"})


def test_loss_image_cap_and_tracker_keys():
    cfg = TrainConfig()
    assert (cfg.loss, cfg.max_image_pixels, cfg.report_to, cfg.restart_changed) == ("auto", None, [], False)
    assert "max_image_pixels: must be at least 1" in _error(TrainConfig, {"max_image_pixels": 0})
    assert "loss" in _error(TrainConfig, {"loss": "fused"})
    assert "report_to" in _error(TrainConfig, {"report_to": ["mlflow"]})


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("train, message", [
    ({"batch_size": 0}, "batch_size: must be at least 1 (got 0)"),
    ({"learning_rate": -1}, "learning_rate: must be greater than 0"),
    ({"learning_rate": NAN}, "learning_rate: Input should be a finite number"),
    ({"learning_rate": INF}, "learning_rate: Input should be a finite number"),
    ({"weight_decay": -0.1}, "weight_decay: input should be greater than or equal to 0"),
    ({"weight_decay": NAN}, "weight_decay: Input should be a finite number"),
    ({"warmup_ratio": 1}, "warmup_ratio: must be in [0, 1)"),
    ({"warmup_ratio": NAN}, "warmup_ratio: must be in [0, 1)"),
    ({"max_grad_norm": -1}, "max_grad_norm: input should be greater than or equal to 0"),
    ({"max_grad_norm": INF}, "max_grad_norm: Input should be a finite number"),
    ({"lora": {"r": 0}}, "lora.r: must be at least 1"),
    ({"lora": {"alpha": 0}}, "lora.alpha: must be at least 1"),
    ({"lora": {"dropout": 1}}, "lora.dropout: input should be less than 1"),
    ({"lora": {"dropout": -0.1}}, "lora.dropout: input should be greater than or equal to 0"),
    ({"lora": {"dropout": NAN}}, "lora.dropout: Input should be a finite number"),
    ({"save_every": 0}, "save_every: must be at least 1"),
    ({"keep_checkpoints": 0}, "keep_checkpoints: must be at least 1"),
    ({"max_seq_len": 0}, "max_seq_len: must be at least 1"),
    ({"vram": "-8GB"}, "vram: cannot read memory size '-8GB'"),
    ({"vram": "0GB"}, "vram: must be more than 0 bytes (got '0GB')"),
    ({"max_image_pixels": -5}, "max_image_pixels: must be at least 1"),
    ({"micro_batch": 0}, "micro_batch: must be at least 1 or auto"),
    ({"micro_batch": 32}, "micro_batch: must not exceed batch_size (16) (got 32)"),
    ({"grad_accum": 17}, "grad_accum: must not exceed batch_size (16) (got 17)"),
    ({"micro_batch": 4, "grad_accum": 3}, "grad_accum: micro_batch x grad_accum (4 x 3 = 12) must equal batch_size (16)"),
    ({"eval_max_new_tokens": 0}, "eval_max_new_tokens: must be at least 1"),
    ({"eval_batch_size": 0}, "eval_batch_size: must be at least 1"),
    ({"eval_table_rows": -1}, "eval_table_rows: input should be greater than or equal to 0"),
    ({"seed": -1}, "seed: input should be greater than or equal to 0"),
    ({"seed": 2**64}, "seed: input should be less than or equal to"),
    ({"stages": [{"name": "a", "epochs": 0}]}, "stages[0].epochs: must be greater than 0"),
    ({"stages": [{"name": "a", "epochs": NAN}]}, "stages[0].epochs: Input should be a finite number"),
    ({"stages": [{"name": "a", "max_steps": -5}]}, "stages[0].max_steps: must be at least 1 (got -5)"),
    ({"stages": [{"name": "a", "max_examples": 0}]}, "stages[0].max_examples: must be at least 1"),
    ({"stages": [{"name": "a"}, {"name": "b", "learning_rate": 0}]}, "stages[1].learning_rate: input should be greater than 0"),
    ({"stages": [{"name": "a", "learning_rate": INF}]}, "stages[0].learning_rate: Input should be a finite number"),
])
def test_out_of_range_train_numbers_name_the_key(train, message):
    msg = _error(TrainConfig, train)
    assert message in msg and "\n" not in msg, msg


@pytest.mark.parametrize("train", [
    {"batch_size": 1, "micro_batch": 1, "grad_accum": 1, "save_every": 1, "keep_checkpoints": 1, "max_seq_len": 1},
    {"batch_size": 16, "micro_batch": 16},
    {"batch_size": 16, "grad_accum": 16},
    {"batch_size": 12, "micro_batch": 4, "grad_accum": 3},
    {"weight_decay": 0, "max_grad_norm": 0, "warmup_ratio": 0, "eval_table_rows": 0, "seed": 2**64 - 1},
    {"lora": {"dropout": 0, "r": 1, "alpha": 1}, "vram": "1KB", "max_image_pixels": 1},
    {"stages": [{"name": "a", "epochs": 0.01, "learning_rate": 1e-9, "max_steps": 1, "max_examples": 1}]},
])
def test_edge_train_values_are_accepted(train):
    TrainConfig.model_validate(train)


BUILD = {"arch": "qwen2_vl"}


@pytest.mark.parametrize("build, message", [
    ({"hidden_size": 0}, "build.hidden_size: must be at least 1 (got 0)"),
    ({"layers": 0}, "build.layers: must be at least 1"),
    ({"intermediate_size": 0}, "build.intermediate_size: must be at least 1"),
    ({"vocab_size": 10}, "build.vocab_size: must exceed the 256 byte tokens (got 10)"),
    ({"image_tokens": 0}, "build.image_tokens: must be at least 1"),
    ({"vision_pretrain_steps": -1}, "build.vision_pretrain_steps: must be 0 or more"),
    ({"vision_pretrain_learning_rate": 0}, "build.vision_pretrain_learning_rate: must be greater than 0"),
    ({"vision_pretrain_learning_rate": NAN}, "build.vision_pretrain_learning_rate: Input should be a finite number"),
    ({"seed": -1}, "build.seed: input should be greater than or equal to 0"),
    ({"hidden_size": 250}, "build.hidden_size: must divide by heads (4) (got 250)"),
    ({"kv_heads": 3}, "build.heads: must divide by kv_heads (3) (got 4)"),
    ({"hidden_size": 12, "heads": 4}, "build.hidden_size: hidden_size / heads, the head size, must be even (got 12 / 4 = 3)"),
    ({"vision_width": 65}, "build.vision_width: must divide by vision_heads (2) (got 65)"),
    ({"vision_width": 12}, "build.vision_width: vision_width / vision_heads, the vision head size, must be a multiple of 4"),
    ({"arch": "qwen3_vl", "vision_width": 8, "vision_heads": 4}, "build.vision_width: vision_width / vision_heads"),
])
def test_out_of_range_build_numbers_name_the_key(build, message):
    msg = _error(StudentConfig, {"build": {**BUILD, **build}})
    assert message in msg and "\n" not in msg, msg


@pytest.mark.parametrize("build", [
    {"hidden_size": 8, "heads": 4, "kv_heads": 4, "layers": 1, "intermediate_size": 1, "vocab_size": 257},
    {"vision_width": 8, "vision_heads": 2, "vision_depth": 1, "image_tokens": 1, "seed": 0},
    {"arch": "llava", "vision_width": 12, "vision_heads": 2},  # a CLIP tower: no 2-D rotary embeddings
    {"arch": "qwen3", "hidden_size": 64, "heads": 8, "kv_heads": 1},
])
def test_edge_build_values_are_accepted(build):
    StudentConfig.model_validate({"build": {**BUILD, **build}})
