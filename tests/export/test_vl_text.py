"""The language model of Qwen2-VL, Qwen2.5-VL, Qwen3-VL and SmolVLM as GGUF, on text prompts.

Their text models map onto llama.cpp's qwen2vl (M-RoPE sections), qwen3vl (interleaved
M-RoPE, deepstack inputs) and llama architectures; without images M-RoPE reduces to plain
RoPE in both runtimes, so the logits must match at every position. f16 greedy parity and q8_0
top-1 agreement on trained twins of these architectures are in test_parity.py.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from siqkit.export import write_gguf
from siqkit.export.runtime import eval_logits, open_llama
from siqkit.models.twins import load_tiny, make_tiny
from siqkit.models.tokenizer import default_corpus

VL = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "smolvlm")
GGUF_ARCH = {"qwen2_vl": "qwen2vl", "qwen2_5_vl": "qwen2vl", "qwen3_vl": "qwen3vl", "smolvlm": "llama"}


@pytest.fixture(scope="module")
def wide(export_root):
    """arch -> (HF folder, f32 GGUF): a wide init (std 0.1) makes any layout or rope error loud."""
    out = {}
    for arch in VL:
        hf = make_tiny(arch, export_root / f"vlt-{arch}", hidden=128, intermediate=256, init_std=0.1, seed=1)
        out[arch] = (hf, write_gguf(hf, export_root / f"vlt-{arch}.f32.gguf", "f32"))
    return out


@pytest.mark.parametrize("arch", VL)
def test_metadata(wide, arch):
    hf, path = wide[arch]
    kv = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}
    g = GGUF_ARCH[arch]
    assert kv["general.architecture"] == g
    if g in ("qwen2vl", "qwen3vl"):
        sections = kv[f"{g}.rope.dimension_sections"]
        assert len(sections) == 4 and sum(sections) == 128 // 4 // 2  # head_dim / 2 frequencies
    assert kv.get(f"{g}.n_deepstack_layers", 0) == (1 if arch == "qwen3_vl" else 0)
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert not any(n.startswith(("v.", "mm.")) for n in names)  # the vision tower goes to the mmproj


@pytest.mark.parametrize("arch", VL)
def test_f32_logits_match(wide, arch):
    hf, path = wide[arch]
    ids = AutoTokenizer.from_pretrained(hf)(" ".join(default_corpus(60)))["input_ids"][:200]
    with torch.no_grad():
        ref = load_tiny(hf).eval()(input_ids=torch.tensor([ids])).logits[0].numpy()
    llm = open_llama(path, n_ctx=256)
    try:
        got = eval_logits(llm, ids)
    finally:
        llm.close()
    assert np.abs(got - ref).max() < 0.01 * ref.std()


def test_chat_stops_at_end_of_turn(export_root):
    """A chat completion in llama-cpp-python ends on <|im_end|> exactly where transformers does."""
    hf = make_tiny("qwen2_vl", export_root / "vl-eos", hidden=128, intermediate=256, init_std=0.1, seed=3)
    tok = AutoTokenizer.from_pretrained(hf)
    messages = [{"role": "user", "content": "What colour is the circle?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    model = load_tiny(hf).eval()
    with torch.no_grad():
        seq = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    target = next(t for k, t in enumerate(seq) if k >= 2 and t not in seq[:k])
    weights = load_file(hf / "model.safetensors")
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    weights["lm_head.weight"][eos] = 1.5 * weights["lm_head.weight"][target]  # <|im_end|> wins where target would
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    with torch.no_grad():
        expected = load_tiny(hf).eval().generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                                  pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    assert expected[-1] == eos and len(expected) < 32
    llm = open_llama(write_gguf(hf, export_root / "vl-eos.f16.gguf", "f16"), n_ctx=256, logits_all=False)
    try:
        reply = llm.create_chat_completion(messages=messages, max_tokens=32, temperature=0.0, top_k=1,
                                           repeat_penalty=1.0)
    finally:
        llm.close()
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["prompt_tokens"] == len(ids)
    assert reply["usage"]["completion_tokens"] == len(expected) - 1
