"""The transformers teacher on tiny twins, 4-bit NF4 on the CPU through bitsandbytes."""

from types import SimpleNamespace

import pytest
import torch

from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.backends.transformers_hf import load_kwargs
from siqkit.teachers.registry import load_teacher

QUESTIONS = [
    "hi",
    "what is the colour of the square in the picture, please?",
    "count",
    "a medium length question here",
    "one more question that is rather long so that padding matters a lot in this batch",
]


def cfg(path, **kw):
    return SimpleNamespace(name="hf", backend="transformers", path=str(path), **kw)


@pytest.fixture(scope="module")
def text_teacher(tiny_text_dir):
    t = load_teacher(cfg(tiny_text_dir, batch_size=8))
    yield t
    t.close()


@pytest.fixture(scope="module")
def vl_teacher(tiny_vl_dir):
    t = load_teacher(cfg(tiny_vl_dir, batch_size=8))
    yield t
    t.close()


def test_text_model_is_4bit_by_default(text_teacher):
    import bitsandbytes as bnb

    layers = [m for m in text_teacher.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers, "no 4-bit layers"
    assert layers[0].weight.quant_type == "nf4"
    q = text_teacher.model.config.quantization_config
    assert q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.float32
    assert not text_teacher.vision


def test_text_batched_equals_one_at_a_time(text_teacher, mk):
    batch = [mk(f"k{i}", q, max_new_tokens=16) for i, q in enumerate(QUESTIONS)]
    together = text_teacher.generate(batch)
    alone = [text_teacher.generate([inp])[0] for inp in batch]
    assert [o.key for o in together] == [i.key for i in batch]
    assert [o.text for o in together] == [o.text for o in alone]
    assert [o.completion_tokens for o in together] == [o.completion_tokens for o in alone]
    assert [o.prompt_tokens for o in together] == [o.prompt_tokens for o in alone]
    assert len({o.text for o in together}) > 1  # the twin does not say the same thing to everyone
    assert len({o.prompt_tokens for o in together}) == len(QUESTIONS)  # so the batch was padded


def test_prompt_not_in_output_and_counts(text_teacher, mk):
    (o,) = text_teacher.generate([mk("k", "hello there", max_new_tokens=6)])
    assert "hello there" not in o.text and "<|im_start|>" not in o.text
    assert o.finish_reason in ("stop", "length") and o.error is None
    assert o.prompt_tokens > 3 and 1 <= o.completion_tokens <= 6
    if o.finish_reason == "length":
        assert o.completion_tokens == 6


def test_small_batch_size_keeps_order(tiny_text_dir, text_teacher, mk):
    small = load_teacher(cfg(tiny_text_dir, batch_size=2, quantization="fp32"))
    batch = [mk(f"k{i}", q, max_new_tokens=4) for i, q in enumerate(QUESTIONS)]
    out = small.generate(batch)
    assert [o.key for o in out] == [i.key for i in batch]
    assert all(o.finish_reason != "error" for o in out)
    small.close()


def test_eos_and_length_are_cut_and_mapped(text_teacher, mk, monkeypatch):
    tok = text_teacher.tokenizer
    eos, pad = text_teacher.eos_ids[0], text_teacher.pad_id
    a, b = tok.convert_tokens_to_ids(["a", "b"])

    def fake_generate(input_ids, attention_mask, **kw):
        assert kw["max_new_tokens"] == 4 and kw["do_sample"] is False
        rows = torch.tensor([[a, b, eos, pad], [a, a, b, b]])
        return torch.cat([input_ids, rows], dim=1)

    monkeypatch.setattr(text_teacher.model, "generate", fake_generate)
    stop, cut = text_teacher.generate([mk("s", "q", max_new_tokens=4), mk("l", "q", max_new_tokens=4)])
    assert (stop.text, stop.finish_reason, stop.completion_tokens) == ("ab", "stop", 3)
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("aabb", "length", 4)


def test_chat_template_kwargs_reach_the_template(tiny_text_dir, mk):
    # The twin's Qwen3-style template writes an empty think block when thinking is off.
    t = load_teacher(cfg(tiny_text_dir, quantization="fp32", chat_template_kwargs={"enable_thinking": False}))
    conv = t._conversation(mk("k", "q"))
    ids = t._encode([conv])["input_ids"][0]
    assert t.tokenizer.decode(ids).endswith("<think>\n\n</think>\n\n")
    t.close()


def test_sampling_is_seeded(text_teacher, mk):
    inp = [mk("k", "tell me", max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)]
    assert text_teacher.generate(inp)[0].text == text_teacher.generate(inp)[0].text


def test_images_for_a_text_model_are_an_error_output(text_teacher, mk, img):
    ok, bad = text_teacher.generate([mk("a", "q", max_new_tokens=2), mk("b", "q", images=[img("red")], max_new_tokens=2)])
    assert ok.finish_reason != "error"
    assert bad.finish_reason == "error" and "text-only" in bad.error


def test_vl_model_keeps_vision_tower_unquantized(vl_teacher):
    import bitsandbytes as bnb

    assert vl_teacher.vision
    names = [n for n, m in vl_teacher.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert names and not any("visual" in n for n in names)
    assert any("language_model" in n for n in names)


def test_vl_batched_equals_one_at_a_time(vl_teacher, mk, img):
    batch = [
        mk("red", "what colour is it?", images=[img("red")], max_new_tokens=12),
        mk("blue", "and this much longer question, what colour is this one?", images=[img("blue")], max_new_tokens=12),
        mk("two", "compare", images=[img("green"), img("yellow", 48)], max_new_tokens=12),
        mk("none", "no picture here", max_new_tokens=12),
    ]
    together = vl_teacher.generate(batch)
    alone = [vl_teacher.generate([inp])[0] for inp in batch]
    assert all(o.finish_reason != "error" for o in together), [o.error for o in together]
    assert [o.key for o in together] == [i.key for i in batch]
    assert [o.text for o in together] == [o.text for o in alone]
    # Image tokens are part of the prompt count.
    assert together[2].prompt_tokens > together[0].prompt_tokens


def test_vl_image_count_mismatch_is_an_error_output(vl_teacher, mk, img):
    bad = mk("bad", "q", max_new_tokens=2)
    bad.images = [img("red")]
    good = mk("good", "q", images=[img("red")], max_new_tokens=2)
    out = vl_teacher.generate([bad, good])
    assert out[0].finish_reason == "error" and "image" in out[0].error
    assert out[1].finish_reason != "error"


def test_missing_checkpoint_is_a_load_error(tmp_path):
    with pytest.raises(TeacherLoadError, match="never downloaded"):
        load_teacher(cfg(tmp_path / "nope"))


def test_unknown_quantization(tiny_text_dir):
    with pytest.raises(TeacherLoadError, match="unknown quantization"):
        load_teacher(cfg(tiny_text_dir, quantization="3bit"))


def test_load_kwargs():
    k = load_kwargs("4bit", "cuda")
    q = k["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and k["dtype"] == torch.bfloat16
    assert load_kwargs("8bit", "cpu")["quantization_config"].load_in_8bit
    assert load_kwargs("bf16", "cpu") == {"dtype": torch.bfloat16}
    assert load_kwargs("fp32", "cuda") == {"dtype": torch.float32}
    assert "lm_head" in load_kwargs("4bit", "cpu", keep_vision=True)["quantization_config"].llm_int8_skip_modules
