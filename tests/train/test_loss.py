"""The chunked loss against the plain one: same value, same gradients, no full logits kept."""

from __future__ import annotations

import math

import pytest
import torch

from siqkit.train.config import LoraConfig, StageConfig
from siqkit.train.data import IGNORE, Encoder, build_examples, load_traces
from siqkit.train.loop import LoopSettings, run_loop
from siqkit.train.loss import chunk_tokens, model_parts, plain_loss, target_loss
from siqkit.train.qlora import load_student


def _student(twin, arch: str, method: str):
    freeze = ["vision"] if method == "full" else ["vision", "projector"]
    s = load_student(twin(arch), method=method, freeze=freeze, lora=LoraConfig(r=4, alpha=8, dropout=0.1),
                     precision="fp32", device="cpu", gradient_checkpointing=False)
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA's B starts at zero; give A a gradient to compare too
        for n, p in s.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return s


def _batch(student, traces, n: int = 3):
    text_only = not student.vision
    examples, _ = build_examples(load_traces(traces), StageConfig(name="reason"), text_only=text_only,
                                 image_text="[Image: {caption}]")
    encoder = Encoder(student.processor, vision=student.vision, max_seq_len=256)
    chosen = examples[:n]
    batch = encoder.collate(chosen, [encoder.encode(e) for e in chosen])
    labels = batch.pop("labels")
    assert (labels == IGNORE).any() and (labels != IGNORE).any()  # assistant-only labels, right padding
    return batch, labels


def _loss_and_grads(model, batch, labels, **kw):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same LoRA dropout masks on both paths
    loss = plain_loss(model, batch, labels) if kw.get("loss") == "plain" else target_loss(model, batch, labels, **kw)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch,method", [("qwen3", "lora"), ("qwen3", "full"), ("qwen2_vl", "lora"),
                                         ("qwen2_vl", "full"), ("qwen3_vl", "lora"), ("smolvlm", "lora"),
                                         ("llava", "lora")])
def test_chunked_loss_matches_the_plain_loss_and_its_gradients(twin, traces, arch, method):
    student = _student(twin, arch, method)
    student.model.train()
    batch, labels = _batch(student, traces)
    ref_loss, ref = _loss_and_grads(student.model, batch, labels, loss="plain")
    loss, got = _loss_and_grads(student.model, batch, labels, loss="chunked", chunk=5)  # many chunks, a ragged last one
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert ref and set(got) == set(ref)
    for name, g in ref.items():
        scale = float(g.abs().max()) or 1.0
        assert float((got[name] - g).abs().max()) <= 1e-4 * scale, name
    if method == "full":  # the LM head trains too, and its gradient came through the chunks
        assert any("lm_head" in n or "embed_tokens" in n for n in got)


def test_the_chunked_loss_never_keeps_the_full_logits(twin, traces):
    student = _student(twin, "qwen3", "lora")
    batch, labels = _batch(student, traces)
    vocab = model_parts(student.model)[1].out_features
    rows, width = batch["input_ids"].shape
    seq = rows * (width - 1)  # positions that predict a next token

    def largest_saved(**kw) -> int:
        """The most logits (values over the vocabulary) the backward pass keeps."""
        sizes = [0]

        def pack(t):
            if t.dim() and t.shape[-1] == vocab:
                sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            target_loss(student.model, batch, labels, **kw)
        return max(sizes)

    assert largest_saved(loss="plain") >= seq * vocab
    assert largest_saved(loss="chunked", chunk=4) <= 4 * vocab


def test_chunk_size_follows_the_vocabulary():
    assert chunk_tokens(151936) == 110 and chunk_tokens(2048) == 8192 and chunk_tokens(10**9) == 16


def test_the_loop_trains_the_same_with_either_loss(twin, traces, tmp_path):
    """Two optimizer steps of a vision-language LoRA stage: same losses, same weights."""
    results = {}
    for loss in ("plain", "chunked"):
        student = load_student(twin("qwen2_vl"), method="lora", freeze=["vision"], lora=LoraConfig(r=4, alpha=8),
                               precision="fp32", device="cpu", gradient_checkpointing=True, seed=0)
        examples, _ = build_examples(load_traces(traces), StageConfig(name="reason"), text_only=False,
                                     image_text="{caption}")
        encoder = Encoder(student.processor, vision=True, max_seq_len=256)
        encoded = [encoder.encode(e) for e in examples]
        settings = LoopSettings(micro_batch=2, grad_accum=2, epochs=1, max_steps=2, learning_rate=1e-3,
                                weight_decay=0.0, warmup_ratio=0.0, scheduler="constant", max_grad_norm=1.0,
                                save_every=100, keep_checkpoints=1, seed=0, batching="length_grouped",
                                order="shuffle", precision="fp32", device="cpu", loss=loss)
        (tmp_path / loss).mkdir()
        out = run_loop(student.model, encoder, examples, encoded, settings, tmp_path / loss, "fp")
        results[loss] = ([r["loss"] for r in out["history"]], student.trainable_state())
        assert (tmp_path / loss / "log.jsonl").is_file()
    (plain_losses, plain_w), (chunked_losses, chunked_w) = results["plain"], results["chunked"]
    assert len(plain_losses) == 2 and all(math.isfinite(x) for x in plain_losses)
    assert chunked_losses == pytest.approx(plain_losses, rel=1e-5)
    for name, w in plain_w.items():
        assert torch.allclose(chunked_w[name], w, rtol=1e-4, atol=1e-6), name
