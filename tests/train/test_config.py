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
