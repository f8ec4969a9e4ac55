"""The memory planner: exact parameter counts from a config, sane choices for a budget."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from siqkit.models import load_tiny
from siqkit.train.memory import (GIB, PlanError, estimate, explain_misfit, model_shape, parse_size, plan_memory,
                                  plan_memory_command)

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


# Qwen3-1.7B's dimensions (the language model of Qwen3-VL-2B): a config only, no weights.
QWEN3_17B = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2048,
             "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def qwen3_17b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen3_17b")
    (folder / "config.json").write_text(json.dumps(QWEN3_17B))
    return folder


def test_without_full_logits_a_2b_student_gets_micro_batch_2_in_8gb(qwen3_17b):
    # The plain loss reproduces the measured CUDA peak of micro-batch 1 (5.87 GiB, H200,
    # QLoRA r=16, checkpointing; benchmarks/RESULTS.md) ...
    shape = model_shape(qwen3_17b)
    plain = estimate(shape, quantized=True, micro_batch=1, checkpointing=True, seq_len=2048, loss="plain")
    assert plain["total"] == pytest.approx(5.87 * GIB, rel=0.05)
    assert plain["logits"] > 2.5 * GIB
    chunked = estimate(shape, quantized=True, micro_batch=1, checkpointing=True, seq_len=2048)
    assert chunked["logits"] < 0.4 * GIB and chunked["images"] == 0
    # ... and without the full logits the planner takes micro-batch 2 or more.
    for quantization in (("none", "4bit"), ("4bit",)):
        plan = plan_memory(qwen3_17b, "8GB", 2048, lora_r=16, quantization=quantization)
        assert plan.fits and plan.micro_batch >= 2 and plan.estimate_bytes <= 8 * GIB
    assert plan_memory(qwen3_17b, "8GB", 2048, loss="plain", quantization=("4bit",)).micro_batch == 1


def test_when_nothing_fits_the_plan_says_what_would(qwen3_17b):
    plan = plan_memory(qwen3_17b, "4GB", 4096, micro_batch=8, quantization=("4bit",))
    assert not plan.fits and "no setting fits 4.00 GiB" in plan.problem
    assert any(w.startswith("max_seq_len ") for w in plan.would_fit)
    assert any(w.startswith("micro_batch 1 ") for w in plan.would_fit)
    line = explain_misfit(plan)
    assert "\n" not in line and "would fit: " in line
    hopeless = plan_memory(qwen3_17b, "1GB", 2048)
    assert not hopeless.would_fit and "use a smaller student or more memory" in explain_misfit(hopeless)
    with pytest.raises(PlanError, match="loss: expected one of"):
        plan_memory(qwen3_17b, "8GB", 2048, loss="fused")


SIZES = [(64, 64), (300, 120), (1000, 700), (97, 513)]


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3_vl", "smolvlm", "llava"])
@pytest.mark.parametrize("cap", [None, 150 * 150])
def test_image_tokens_match_what_the_processor_really_makes(twin, tmp_path, arch, cap):
    """The planner's count against the image tokens in the training batch the processor builds."""
    from PIL import Image

    from siqkit.train.data import Encoder, Example
    from siqkit.train.images import image_token_counts
    from siqkit.train.qlora import load_processor_for

    path = twin(arch, image_tokens=(1, 256)) if "qwen" in arch else twin(arch)
    processor = load_processor_for(path, True)
    encoder = Encoder(processor, vision=True, max_seq_len=4096, max_image_pixels=cap)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    for i, size in enumerate(SIZES):
        Image.new("RGB", size, (200, 40, 40)).save(tmp_path / f"{i}.png")
    examples = [Example(key=str(i), seed_id=str(i), images=[tmp_path / f"{i}.png"], messages=[
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]) for i in range(len(SIZES))]
    batch = encoder.collate(examples, [encoder.encode(e) for e in examples])
    real = (batch["input_ids"] == image_id).sum(dim=1).tolist()
    assert image_token_counts(processor, SIZES, cap) == real
    if "qwen" in arch and cap:  # the cap really lowers the count of a large image
        assert real[2] < image_token_counts(processor, SIZES)[2]


def test_the_plan_counts_image_tokens_and_refuses_rows_they_fill(twin):
    path = twin("qwen2_vl", image_tokens=(1, 256))
    rows = [[(1000, 700)], [(64, 64), (300, 120)], []]
    plan = plan_memory(path, "8GB", 1024, image_sizes=rows)
    most = plan.images["per_row_max"]
    assert plan.fits and 200 < most <= 256 and plan.images["images"] == 3
    assert plan.breakdown["images"] > 0
    capped = plan_memory(path, "8GB", 1024, image_sizes=rows, max_image_pixels=200 * 200)
    assert capped.images["per_row_max"] < most and capped.breakdown["images"] < plan.breakdown["images"]
    short = plan_memory(path, "8GB", 200, image_sizes=rows)
    assert not short.fits and f"images take up to {most} tokens" in short.problem
    assert any(w.startswith("max_image_pixels ") for w in short.would_fit)


def test_plan_memory_command_shows_image_tokens(twin, traces):
    console = Console(record=True, width=160)
    plan_memory_command(twin("qwen2_vl"), "8GB", 512, data=traces, console=console)
    text = console.export_text()
    assert "image tokens" in text and "per image" in text and "images" in text


PEAK_SCRIPT = r"""
import json, re, sys
import torch
import torch.nn.functional as F
from siqkit.train.loss import chunk_tokens, chunked_cross_entropy

torch.set_num_threads(1)
vocab, hidden = 65536, 64
head = torch.nn.Linear(hidden, vocab, bias=False).requires_grad_(False)

def peak(n, plain):
    h = torch.randn(n, hidden, requires_grad=True)
    t = torch.randint(0, vocab, (n,))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS starts again from the current RSS
    status = lambda key: int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    base = status("VmRSS")
    loss = F.cross_entropy(head(h), t, reduction="sum") if plain else chunked_cross_entropy(h, head, t, chunk_tokens(vocab))
    loss.backward()
    return status("VmHWM") - base

peak(300, False), peak(300, True)  # warm-up: code pages and first-use buffers
print(json.dumps({"chunked": peak(1024, False), "plain": peak(512, True)}))
"""


def test_the_loss_term_is_what_the_loss_really_takes(tmp_path):
    """Peak RSS of the loss and its backward (fp32, CPU) against the planner's term, both losses."""
    import os
    import subprocess
    import sys

    from siqkit.train.memory import loss_bytes
    from tests.conftest import REPO

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("this kernel does not let a process reset its peak RSS")
    # A fixed mmap threshold: every large tensor is its own mapping, returned when freed.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    chunked, plain = loss_bytes(65536, 64, 1024, 4), loss_bytes(65536, 64, 512, 4, "plain")
    assert 0.85 * chunked <= measured["chunked"] <= 1.1 * chunked
    assert 0.85 * plain <= measured["plain"] <= 1.1 * plain
