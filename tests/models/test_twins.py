"""Tiny twins and local tokenizers: build, load back offline, run forward and generate."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer

from siqkit.models import (
    SUPPORTED_TINY,
    TEXT_ARCHS,
    VISION_ARCHS,
    build_tokenizer,
    is_vision,
    load_processor,
    load_tiny,
    make_tiny,
    tiny_from,
)

EXPECTED_CLASS = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
}


def test_supported_list_is_complete():
    assert set(SUPPORTED_TINY) == set(EXPECTED_CLASS)
    assert set(TEXT_ARCHS) | set(VISION_ARCHS) == set(SUPPORTED_TINY)


# --- tokenizer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(out)
    return AutoTokenizer.from_pretrained(out)


def test_tokenizer_specials_and_roundtrip(qwen_tok):
    tok = qwen_tok
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None
    for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|vision_start|>", "<|image_pad|>"):
        ids = tok.encode(t, add_special_tokens=False)
        assert len(ids) == 1, t
    text = "The red circle is left of the blue square. 12 + 30 = 42\n\n  ünïcode ✓"
    assert tok.decode(tok.encode(text)) == text
    # Qwen2 pre-tokenizer: digits one by one.
    assert [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("2024")] == ["2", "0", "2", "4"]
    # think tags are not special: they survive skip_special_tokens
    ids = tok.encode("<think>\nx\n</think>\n\ny<|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\nx\n</think>\n\ny"


def test_llama_style_groups_digits(tmp_path):
    tok = build_tokenizer(tmp_path, style="llama")
    pieces = [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("1234567")]
    assert pieces == ["123", "456", "7"]
    assert tok.decode(tok.encode("1234567")) == "1234567"
    with pytest.raises(ValueError, match="style"):
        build_tokenizer(tmp_path, style="gpt9")


def test_chat_template_renders_thinking_and_images(qwen_tok):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "red", "reasoning_content": "The shape is red."},
    ]
    text = qwen_tok.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Colour?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nThe shape is red.\n</think>\n\nred<|im_end|>\n"
    )
    # The same turn written with the think block inside the content renders identically.
    inline = msgs[:2] + [{"role": "assistant", "content": "<think>\nThe shape is red.\n</think>\n\nred"}]
    assert qwen_tok.apply_chat_template(inline, tokenize=False) == text
    prompt = qwen_tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    off = qwen_tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # Assistant-token masks cover exactly the assistant answer (think block and <|im_end|>).
    enc = qwen_tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert qwen_tok.decode(masked) == "<think>\nThe shape is red.\n</think>\n\nred<|im_end|>"


# --- twins ---------------------------------------------------------------------------------


def _inputs(path, arch):
    if is_vision(arch):
        proc = load_processor(path)
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        image = Image.new("RGB", (64, 64), (220, 40, 40))
        return proc, proc(images=[image], text=[text], return_tensors="pt")
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], add_generation_prompt=True,
                                   tokenize=False)
    return tok, tok([text], return_tensors="pt")


@pytest.mark.parametrize("arch", SUPPORTED_TINY)
def test_twin_loads_offline_and_generates(tiny_model, arch):
    path = tiny_model(arch)
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == arch
    assert cfg.architectures == [EXPECTED_CLASS[arch]]
    assert (path / "model.safetensors").is_file()
    model = load_tiny(path).eval()
    assert type(model).__name__ == EXPECTED_CLASS[arch]
    assert sum(p.numel() for p in model.parameters()) < 400_000

    proc, inputs = _inputs(path, arch)
    tok = proc.tokenizer if is_vision(arch) else proc
    if is_vision(arch):
        image_token = getattr(proc, "image_token", None)
        n_image = int((inputs["input_ids"] == tok.convert_tokens_to_ids(image_token)).sum())
        assert 0 < n_image <= 64, "a 64x64 image should give only a few visual tokens"
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape[-1] == len(tok)
    assert torch.isfinite(out.logits).all()
    gen = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 4 or tok.eos_token_id in gen[0].tolist()


def test_twin_is_deterministic_per_seed(tmp_path):
    a = make_tiny("qwen3", tmp_path / "a", seed=3)
    b = make_tiny("qwen3", tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_tiny_from_keeps_the_class_and_shrinks(tmp_path, tiny_model):
    real_like = {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    }
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "config.json").write_text(json.dumps(real_like))
    twin = tiny_from(tmp_path / "real", tmp_path / "twin")
    cfg = AutoConfig.from_pretrained(twin)
    assert cfg.model_type == "qwen2" and cfg.hidden_size == 64 and cfg.num_hidden_layers == 2
    assert cfg.tie_word_embeddings is True
    assert cfg.rope_parameters["rope_theta"] == 1e6

    # A VL checkpoint's config: the twin of a twin keeps the class.
    vl = tiny_from(tiny_model("qwen2_5_vl"), tmp_path / "vl")
    assert AutoConfig.from_pretrained(vl).model_type == "qwen2_5_vl"


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="supported: llama, qwen2"):
        make_tiny("gpt_neox", tmp_path)
    with pytest.raises(ValueError, match="model_type 'mamba'"):
        tiny_from({"model_type": "mamba"}, tmp_path)


def test_llava_variants_and_scaled_rope_survive_tiny_from(tmp_path):
    twin = make_tiny("llava", tmp_path / "siglip", vision_model_type="siglip_vision_model", text_model_type="llama")
    cfg = AutoConfig.from_pretrained(twin)
    assert (cfg.vision_config.model_type, cfg.text_config.model_type) == ("siglip_vision_model", "llama")
    _, inputs = _inputs(twin, "llava")
    with torch.no_grad():
        assert torch.isfinite(load_tiny(twin)(**inputs).logits).all()
    again = AutoConfig.from_pretrained(tiny_from(twin, tmp_path / "again"))
    assert again.vision_config.model_type == "siglip_vision_model"

    llama31 = {"model_type": "llama", "hidden_size": 2048, "num_attention_heads": 32, "num_hidden_layers": 16,
               "intermediate_size": 8192, "rope_theta": 500000.0, "tie_word_embeddings": True,
               "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    cfg = AutoConfig.from_pretrained(tiny_from(llama31, tmp_path / "llama31"))
    assert cfg.rope_parameters["rope_type"] == "llama3" and cfg.rope_parameters["factor"] == 32.0
    assert cfg.rope_parameters["rope_theta"] == 500000.0 and cfg.tie_word_embeddings
