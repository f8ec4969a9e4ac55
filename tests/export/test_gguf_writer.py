"""The native GGUF writer, checked against the Hugging Face model in llama-cpp-python.

Layout checks use random twins with a wider init (std 0.1), where a wrong Q/K permutation
moves logits by several units while f16 rounding moves them by ~1% of a logit std; greedy
parity runs exactly on f32 here. The acceptance checks (f16 greedy parity and q8_0 top-1
agreement over every position, on trained twins) are in test_parity.py.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from siqkit.export import GGUFExportError, SUPPORTED_GGUF_ARCHS, tiny_gguf, write_gguf
from siqkit.models.twins import make_tiny
from siqkit.models.tokenizer import default_corpus

llama_cpp = pytest.importorskip("llama_cpp")

ARCHS = ("llama", "qwen2", "qwen3")  # text-only; vision-language text sides: test_vl_text.py
N_GREEDY = 40


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """arch -> (HF folder, {dtype: GGUF}) with a wide init (std 0.1): rope/layout errors show loudly."""
    root = tmp_path_factory.mktemp("gguf_twins")
    out = {}
    for arch in ARCHS:
        hf = make_tiny(arch, root / arch, hidden=128, intermediate=256, init_std=0.1, seed=1)
        out[arch] = (hf, {dt: write_gguf(hf, root / f"{arch}-{dt}.gguf", dtype=dt) for dt in ("f16", "f32")})
    return out


def _llama(path, n_ctx=1024, kv_f32=False):
    kv = {"type_k": 0, "type_v": 0} if kv_f32 else {}  # 0 = GGML_TYPE_F32; the default cache is f16
    return llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=n_ctx, verbose=False, **kv)


def _hf_greedy(model, ids, n=N_GREEDY):
    """HF fp32 greedy continuation and, per step, the top-1 lead over the runner-up in logit stds."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    scores = torch.stack(out.scores)[:, 0]
    top2 = scores.topk(2, dim=-1).values
    lead = ((top2[:, 0] - top2[:, 1]) / scores.std(-1)).numpy()
    return out.sequences[0, len(ids):].tolist(), lead


def _cpp_greedy(llm, ids, n=N_GREEDY):
    got = []
    for t in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        got.append(t)
        if len(got) == n:
            break
    return got


def _prompt_ids(tok, n=400):
    return tok(" ".join(default_corpus(120)))["input_ids"][:n]


def _cpp_logits(path, ids):
    llm = _llama(path)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def _hf_logits(hf_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


# --- metadata ------------------------------------------------------------------------------


def _fields(path):
    reader = gguf.GGUFReader(path)
    return reader, {name: f.contents() for name, f in reader.fields.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_and_tensor_names(twins, arch):
    hf_dir, files = twins[arch]
    cfg = json.loads((hf_dir / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(hf_dir)
    reader, kv = _fields(files["f16"])
    assert kv["general.architecture"] == arch
    assert kv["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert kv[f"{arch}.block_count"] == 2
    assert kv[f"{arch}.embedding_length"] == 128
    assert kv[f"{arch}.feed_forward_length"] == 256
    assert kv[f"{arch}.attention.head_count"] == 4 and kv[f"{arch}.attention.head_count_kv"] == 2
    assert kv[f"{arch}.rope.freq_base"] == pytest.approx(cfg["rope_parameters"]["rope_theta"])
    assert kv[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert kv[f"{arch}.context_length"] == cfg["max_position_embeddings"]

    assert kv["tokenizer.ggml.model"] == "gpt2"
    assert kv["tokenizer.ggml.pre"] == ("llama-bpe" if arch == "llama" else "qwen2")
    tokens = kv["tokenizer.ggml.tokens"]
    assert len(tokens) == len(tok) == cfg["vocab_size"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert kv["tokenizer.ggml.eos_token_id"] == kv["tokenizer.ggml.eot_token_id"] == im_end
    assert kv["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert kv["tokenizer.ggml.add_bos_token"] is False
    types = kv["tokenizer.ggml.token_type"]
    assert types[im_end] == gguf.TokenType.CONTROL
    assert types[tok.convert_tokens_to_ids("<think>")] == gguf.TokenType.USER_DEFINED
    assert types[tok.convert_tokens_to_ids("Ġt")] == gguf.TokenType.NORMAL
    assert "Ġ t" in kv["tokenizer.ggml.merges"]
    template = kv["tokenizer.chat_template"]
    assert "<|im_start|>" in template and "generation -%}" not in template

    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight", "blk.1.ffn_down.weight"} <= names
    assert ("blk.0.attn_q_norm.weight" in names) == (arch == "qwen3")
    assert ("blk.0.attn_q.bias" in names) == (arch == "qwen2")
    norm = next(t for t in reader.tensors if t.name == "blk.0.attn_norm.weight")
    assert norm.tensor_type == gguf.GGMLQuantizationType.F32


def test_tied_embeddings_write_no_output_tensor(tmp_path):
    hf = make_tiny("qwen3", tmp_path / "tied", tie_word_embeddings=True)
    reader, _ = _fields(write_gguf(hf, tmp_path / "tied.gguf", dtype="f32"))
    assert "output.weight" not in {t.name for t in reader.tensors}
    ids = _prompt_ids(AutoTokenizer.from_pretrained(hf), 64)
    np.testing.assert_allclose(_cpp_logits(tmp_path / "tied.gguf", ids), _hf_logits(hf, ids), atol=2e-3)


def test_unsupported_inputs_are_clear_errors(tmp_path):
    llava = make_tiny("llava", tmp_path / "llava")
    with pytest.raises(GGUFExportError, match="supported: " + ", ".join(SUPPORTED_GGUF_ARCHS)):
        write_gguf(llava, tmp_path / "llava.gguf")
    with pytest.raises(GGUFExportError, match="dtype"):
        write_gguf(llava, tmp_path / "llava.gguf", dtype="q4_k")


# --- parity in llama-cpp-python -----------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenization_matches(twins, arch):
    hf_dir, files = twins[arch]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 345?"},
         {"role": "assistant", "content": "<think>\nadd\n</think>\n\n357"}],
        tokenize=False,
    )
    texts = [chat, "  Hello,\n\n world!! 1234567 don't ünïcode ✓ \t end", " ".join(default_corpus(20))]
    llm = llama_cpp.Llama(model_path=str(files["f16"]), vocab_only=True, verbose=False)
    try:
        for text in texts:
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text)["input_ids"], text
    finally:
        llm.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_greedy_equals_transformers(twins, arch):
    """f32 weights and cache: llama.cpp must follow the HF model token for token."""
    hf_dir, files = twins[arch]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    llm = _llama(files["f32"], kv_f32=True)
    try:
        for prompt in ("The red circle is left of the blue square. What is 12 + 30?", "Our robot counts the numbers"):
            ids = tok(prompt)["input_ids"]
            assert _cpp_greedy(llm, ids) == _hf_greedy(model, ids)[0]
    finally:
        llm.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_f16_logits_match_on_every_position(twins, arch):
    """A wrong Q/K layout or rope moves logits by whole units here; f16 rounding by ~1% of a std."""
    hf_dir, files = twins[arch]
    ids = _prompt_ids(AutoTokenizer.from_pretrained(hf_dir))
    ref, got = _hf_logits(hf_dir, ids), _cpp_logits(files["f16"], ids)
    assert np.abs(got - ref).max() < 0.03 * ref.std()
    top2 = np.sort(ref, -1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) >= 0.02 * ref.std(-1)
    agree = ref.argmax(-1) == got.argmax(-1)
    assert agree[decisive].all() and agree.mean() >= 0.97


def _favour_eos(hf_dir, tok, ids, step=3):
    """Make the twin end its answer after a few tokens, by the weights alone.

    The ``<|im_end|>`` row of lm_head becomes 1.5x the row of the token the model would
    emit at ``step``, so ``<|im_end|>`` wins there (or earlier). Returns the HF continuation.
    """
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        seq = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    fresh = [t for k, t in enumerate(seq) if k > 0 and t not in seq[:k]]  # tokens not seen before
    target = next((t for t in fresh if seq.index(t) >= step), fresh[0] if fresh else seq[0])
    weights = load_file(hf_dir / "model.safetensors")
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    weights["lm_head.weight"][eos] = 1.5 * weights["lm_head.weight"][target]
    save_file(weights, hf_dir / "model.safetensors", metadata={"format": "pt"})
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
    assert out[-1] == eos and len(out) < 32
    return out[:-1]


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_generation_stops_at_im_end(tmp_path, arch):
    hf_dir = make_tiny(arch, tmp_path / arch, hidden=128, intermediate=256, init_std=0.1, seed=2)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    messages = [{"role": "user", "content": "What colour is the circle?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    expected = _favour_eos(hf_dir, tok, ids)
    path = write_gguf(hf_dir, tmp_path / f"{arch}.gguf", dtype="f16")
    llm = _llama(path, n_ctx=256)
    try:
        # The chat template stored in the GGUF renders the same prompt in llama-cpp-python ...
        reply = llm.create_chat_completion(messages=messages, max_tokens=32, temperature=0.0, top_k=1)
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "stop"
        assert reply["usage"]["prompt_tokens"] == len(ids)
        assert reply["usage"]["completion_tokens"] == len(expected)
        # ... and a raw completion ends on the EOS/EOT token without it being asked as a stop string.
        raw = llm.create_completion(ids, max_tokens=32, temperature=0.0, top_k=1)
        assert raw["choices"][0]["finish_reason"] == "stop"
        assert raw["usage"]["completion_tokens"] == len(expected)
        # Token for token, the same answer and the same end token as transformers.
        assert llm.token_eos() == tok.convert_tokens_to_ids("<|im_end|>")
        tokens = []
        for t in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            tokens.append(t)
            if t == llm.token_eos() or len(tokens) > 32:
                break
        assert tokens == expected + [llm.token_eos()]
    finally:
        llm.close()


def test_tiny_gguf_helper(tmp_path):
    path = tiny_gguf("qwen3", tmp_path)
    assert path.is_file() and path.stat().st_size > 10_000
    assert (tmp_path / "qwen3-hf" / "config.json").is_file()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, verbose=False)
    try:
        out = llm.create_completion("The red circle", max_tokens=4, temperature=0.0)
        assert out["usage"]["completion_tokens"] <= 4
    finally:
        llm.close()
    with pytest.raises(GGUFExportError):
        tiny_gguf("llava", tmp_path)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64},
        {"rope_type": "linear", "factor": 4.0},
    ],
    ids=["llama3", "linear"],
)
def test_scaled_rope_matches(tmp_path, rope):
    hf = make_tiny("llama", tmp_path / "hf", hidden=128, intermediate=256, init_std=0.1, rope_parameters=rope)
    path = write_gguf(hf, tmp_path / "l.gguf", dtype="f32")
    if rope["rope_type"] == "llama3":
        reader, _ = _fields(path)
        assert "rope_freqs.weight" in {t.name for t in reader.tensors}
    ids = _prompt_ids(AutoTokenizer.from_pretrained(hf))
    ref = _hf_logits(hf, ids)
    assert np.abs(_cpp_logits(path, ids) - ref).max() < 0.02 * ref.std()


def test_unsupported_rope_is_a_clear_error(tmp_path):
    hf = make_tiny("qwen2", tmp_path / "hf", rope_parameters={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(GGUFExportError, match="rope type 'dynamic'"):
        write_gguf(hf, tmp_path / "x.gguf")
