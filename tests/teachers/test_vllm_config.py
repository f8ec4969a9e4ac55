"""How a recipe's settings become vLLM's arguments, and its errors one line; no engine needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from siqkit.teachers.backends import TeacherLoadError, describe
from siqkit.teachers.backends.vllm_engine import engine_quantization

WITHOUT_BNB = ["awq", "gptq", "compressed-tensors", "fp8", "int8_per_channel_weight_only"]


def resolve(quantization, stored=None, available=WITHOUT_BNB):
    return engine_quantization("thinker", Path("/ckpt"), quantization, stored, available)


def test_a_pre_quantized_checkpoint_loads_as_stored():
    awq = {"quant_method": "awq", "bits": 4}
    assert resolve("4bit", awq) == (None, "auto")
    assert resolve("fp8", awq) == (None, "auto")
    assert resolve("bf16", awq) == (None, "bfloat16")  # the activations' dtype


def test_in_flight_quantization_of_an_unquantized_checkpoint():
    assert resolve("fp8") == ("fp8", "auto")
    assert resolve("8bit") == ("int8_per_channel_weight_only", "auto")
    assert resolve("bf16") == (None, "bfloat16")
    assert resolve("fp32") == (None, "float32")
    assert resolve("4bit", available=[*WITHOUT_BNB, "bitsandbytes"]) == ("bitsandbytes", "auto")


def test_4bit_without_an_in_flight_method_says_what_to_use():
    with pytest.raises(TeacherLoadError) as e:
        resolve("4bit")
    msg = str(e.value)
    assert msg.startswith("teacher 'thinker': /ckpt is not quantized and this vLLM has no in-flight 4-bit")
    assert "Qwen/Qwen3-8B-AWQ" in msg and "fp8" in msg and "backend: transformers" in msg


def test_unknown_or_missing_methods_are_refused():
    with pytest.raises(TeacherLoadError, match="'int3' is not one the vllm backend offers"):
        resolve("int3")
    with pytest.raises(TeacherLoadError, match="cannot quantize to fp8 in flight"):
        resolve("fp8", available=["awq"])


def test_a_pydantic_validation_error_is_described_by_its_problem():
    from pydantic import BaseModel, model_validator

    class ModelConfig(BaseModel):
        max_model_len: int

        @model_validator(mode="after")
        def _fits(self):
            raise ValueError(f"User-specified max_model_len ({self.max_model_len}) is greater than the derived one")

    with pytest.raises(Exception) as e:
        ModelConfig(max_model_len=8192)
    assert describe(e.value) == "User-specified max_model_len (8192) is greater than the derived one"
    assert describe(RuntimeError("boom\nmore")) == "RuntimeError: boom"
