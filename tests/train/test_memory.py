"""The memory planner: exact parameter counts from a config, sane choices for a budget."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from siqkit.models import load_tiny
from siqkit.train.memory import GIB, PlanError, estimate, model_shape, parse_size, plan_memory, plan_memory_command

# Qwen2.5-0.5B's dimensions: a config only, no weights.
SMALL_REAL = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
              "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def small_real(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen05")
    (folder / "config.json").write_text(json.dumps(SMALL_REAL))
    return folder


def test_parse_size():
    assert parse_size("8GB") == parse_size("8GiB") == parse_size("8g") == 8 * GIB
    assert parse_size("7500MB") == 7500 << 20 and parse_size(1234) == 1234
    with pytest.raises(ValueError, match="cannot read memory size"):
        parse_size("8 gigs")


@pytest.mark.parametrize("arch", ["qwen2", "qwen2_vl", "llava"])
def test_shape_counts_match_the_real_model(twin, arch):
    shape = model_shape(twin(arch))
    model = load_tiny(twin(arch))
    assert sum(shape.params.values()) == sum(p.numel() for p in model.parameters())
    assert (shape.vision, "projector" in shape.params) == (arch != "qwen2", arch != "qwen2")


def test_plans_follow_the_budget(twin, small_real):
    tiny = plan_memory(twin("qwen2"), "8GB", 512)
    assert tiny.fits and tiny.quantization == "none" and not tiny.gradient_checkpointing
    assert tiny.micro_batch * tiny.grad_accum == 16

    roomy = plan_memory(small_real, "80GB", 2048)
    tight = plan_memory(small_real, "6GB", 2048)
    assert roomy.fits and tight.fits
    assert tight.estimate_bytes <= 6 * GIB < roomy.estimate_bytes
    assert (tight.micro_batch, tight.gradient_checkpointing) != (roomy.micro_batch, roomy.gradient_checkpointing)
    assert not plan_memory(small_real, "1GB", 2048).fits

    shape = model_shape(small_real)
    q = estimate(shape, quantized=True, micro_batch=1, checkpointing=True, seq_len=2048)
    full = estimate(shape, quantized=False, micro_batch=1, checkpointing=True, seq_len=2048)
    assert q["weights"] < full["weights"] and q["activations"] == full["activations"]
    no_ckpt = estimate(shape, quantized=True, micro_batch=1, checkpointing=False, seq_len=2048)
    assert no_ckpt["activations"] > 5 * q["activations"]


def test_plan_memory_command_prints_the_estimate(small_real):
    console = Console(record=True, width=120)
    plan = plan_memory_command(small_real, "6GB", 2048, console=console)
    text = console.export_text()
    assert "fits" in text and "gradient checkpointing" in text and f"{plan.micro_batch} x {plan.grad_accum}" in text


def test_bad_budget_is_a_clear_error(twin):
    with pytest.raises(PlanError, match="cannot read memory size 'lots'"):
        plan_memory(twin("qwen2"), "lots", 512)
