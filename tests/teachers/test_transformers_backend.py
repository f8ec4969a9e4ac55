"""The transformers teacher on tiny twins (4-bit NF4 on the CPU through bitsandbytes, and fp32):
static batches, batch sizing from a KV-cache budget, min_new_tokens, and continuous batching."""

from types import SimpleNamespace

import pytest
import torch

from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.backends.transformers_hf import (
    DEFAULT_WINDOW,
    KV_FRACTION,
    MAX_BATCH,
    ContinuousTransformersTeacher,
    ModelShape,
    TransformersTeacher,
    batch_for_memory,
    cpu_cache_blocks,
    load_kwargs,
)
from siqkit.teachers.base import iter_outputs
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


# -- batch sizing, min_new_tokens, windows ---------------------------------------------------------

QWEN3_8B = ModelShape(layers=36, kv_heads=8, head_dim=128, hidden=4096, intermediate=12288, vocab=151936, dtype_bytes=2)
GIB = 1024**3


def test_kv_bytes_and_row_bytes():
    assert QWEN3_8B.kv_bytes_per_token == 2 * 36 * 8 * 128 * 2  # 144 KiB a token in bf16
    row = QWEN3_8B.row_bytes(1000, 3000)
    assert row > QWEN3_8B.kv_bytes_per_token * 4000  # the KV cache plus an allowance
    assert row < QWEN3_8B.kv_bytes_per_token * 4000 * 1.2  # ... that does not dwarf it


def test_batch_for_memory_grows_with_memory_and_shrinks_with_length():
    sizes = [batch_for_memory(g * GIB, QWEN3_8B, 200, 2048) for g in (2, 8, 32, 64)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    lengths = ((100, 512), (100, 2048), (2000, 2048), (8000, 8192))
    longer = [batch_for_memory(32 * GIB, QWEN3_8B, p, n) for p, n in lengths]
    assert longer == sorted(longer, reverse=True) and longer[0] > longer[-1]
    # 0.75 x 32 GiB over 144 KiB x (200 + 2048) tokens of KV cache (331 MB) plus the allowance (356 MB in all)
    assert batch_for_memory(32 * GIB, QWEN3_8B, 200, 2048) == 72
    half, full = (batch_for_memory(g * GIB, QWEN3_8B, 200, 2048, fraction=f) for g, f in ((64, 0.5), (32, 1.0)))
    assert half == full == int(32 * GIB) // QWEN3_8B.row_bytes(200, 2048)


def test_batch_for_memory_clamps():
    assert batch_for_memory(0, QWEN3_8B, 100, 100) == 1
    assert batch_for_memory(10**6, QWEN3_8B, 8000, 32000) == 1
    assert batch_for_memory(10**15, QWEN3_8B, 10, 10) == MAX_BATCH == 256
    assert batch_for_memory(10**15, QWEN3_8B, 10, 10, hi=64) == 64


def test_cpu_cache_holds_a_long_request_and_stays_in_budget():
    tiny = ModelShape(2, 2, 16, 64, 128, 600, 4)
    assert cpu_cache_blocks(tiny, 512, 512, 256) * 256 >= 64 * (512 + 512)
    page_bytes = 256 * QWEN3_8B.kv_bytes_per_token
    blocks = cpu_cache_blocks(QWEN3_8B, 512, 4096, 256, budget_bytes=4 * GIB)
    assert blocks * 256 >= 4096 + 8192 and (blocks - 2) * page_bytes <= 4 * GIB  # within the budget
    blocks = cpu_cache_blocks(QWEN3_8B, 512, 4096, 256, budget_bytes=GIB)
    assert 4096 + 8192 <= blocks * 256 <= 4096 + 8192 + 512  # one long request fits, even over budget


@pytest.fixture(scope="module")
def fp32_teacher(tiny_text_dir):
    t = load_teacher(cfg(tiny_text_dir, batch_size=8, quantization="fp32"))
    yield t
    t.close()


@pytest.fixture(scope="module")
def cb_teacher(tiny_text_dir):
    t = load_teacher(cfg(tiny_text_dir, batching="continuous", quantization="fp32"))
    yield t
    t.close()


def test_batch_size_and_window_defaults(tiny_text_dir, text_teacher, cb_teacher):
    assert type(text_teacher) is TransformersTeacher and not hasattr(text_teacher, "stream")
    assert text_teacher.batch_size == 8 and text_teacher.window == 32  # four batches a call
    assert isinstance(cb_teacher, ContinuousTransformersTeacher) and cb_teacher.window == DEFAULT_WINDOW == 512
    t = load_teacher(cfg(tiny_text_dir, quantization="fp32", batch_size=None, window=None))
    assert t.batch_size is None and t._fixed_batch == 8 and t.window == 32  # a CPU without batch_size: 8
    t.close()
    t = load_teacher(cfg(tiny_text_dir, quantization="fp32", batch_size=3, window=10))
    assert (t._fixed_batch, t.window) == (3, 10)
    t.close()
    with pytest.raises(TeacherLoadError, match="batching"):
        load_teacher(cfg(tiny_text_dir, quantization="fp32", batching="dynamic"))


def test_sized_batches_follow_free_memory(fp32_teacher, mk, monkeypatch, caplog):
    """What a CUDA teacher without batch_size does, with the free memory faked."""
    t = fp32_teacher
    batch = [mk(f"k{i}", q, max_new_tokens=4) for i, q in enumerate(QUESTIONS)]
    longest = max(t._prompt_length(i, t._conversation(i)) for i in batch)
    rows_seen: list[int] = []
    real = t.model.generate

    def counting(**kw):
        rows_seen.append(kw["input_ids"].shape[0])
        return real(**kw)

    monkeypatch.setattr(t, "_fixed_batch", None)
    monkeypatch.setattr(t, "_logged_sizes", set())
    monkeypatch.setattr(t.model, "generate", counting)
    free = int(2.5 * t.shape.row_bytes(longest, 4) / KV_FRACTION)  # room for two rows of the longest
    monkeypatch.setattr(t, "_free_gpu_bytes", lambda: free)
    with caplog.at_level("INFO", logger="siqkit.teachers.backends.transformers_hf"):
        out = t.generate(batch)
    assert [o.key for o in out] == [i.key for i in batch] and all(o.finish_reason != "error" for o in out)
    assert max(rows_seen) <= 3 and sum(rows_seen) == len(batch) and len(rows_seen) >= 2
    logged = [r.getMessage() for r in caplog.records if "static batch of" in r.getMessage()]
    assert logged and all("static batch of 2 rows" in m for m in logged) and len(logged) == 1  # once per size

    rows_seen.clear()
    monkeypatch.setattr(t, "_free_gpu_bytes", lambda: 1000 * free)
    t.generate(batch)
    assert rows_seen == [len(batch)]  # plenty of memory: one batch


def test_failed_batch_is_retried_in_halves(fp32_teacher, mk, monkeypatch):
    real = fp32_teacher.model.generate
    calls: list[int] = []

    def oom_above_two(**kw):
        calls.append(kw["input_ids"].shape[0])
        if kw["input_ids"].shape[0] > 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(**kw)

    monkeypatch.setattr(fp32_teacher.model, "generate", oom_above_two)
    out = fp32_teacher.generate([mk(f"k{i}", q, max_new_tokens=3) for i, q in enumerate(QUESTIONS)])
    assert all(o.finish_reason != "error" for o in out), [o.error for o in out]
    assert calls[0] == 5 and max(calls[1:]) <= 3 and len(calls) < 1 + 5 + 2


def _eos_after_two(teacher, mk, monkeypatch):
    """Make the twin's third greedy token after "hi" an EOS, so unforced outputs stop early."""
    enc = teacher._encode([teacher._conversation(mk("probe", "hi"))])
    with torch.inference_mode():
        seq = teacher.model.generate(**enc, max_new_tokens=3, do_sample=False, temperature=None, top_p=None, top_k=None)
    token = int(seq[0, -1])
    monkeypatch.setattr(teacher, "eos_ids", [token, *teacher.eos_ids])
    return token


@pytest.mark.parametrize("which", ["fp32_teacher", "cb_teacher"])
def test_min_new_tokens_forces_the_length(which, request, mk, monkeypatch):
    teacher = request.getfixturevalue(which)
    _eos_after_two(teacher, mk, monkeypatch)
    free, forced = teacher.generate(
        [mk("a", "hi", max_new_tokens=12), mk("b", "hi", max_new_tokens=12, min_new_tokens=12)]
    )
    assert free.finish_reason == "stop" and free.completion_tokens <= 3  # cut at the new EOS
    assert forced.finish_reason == "length" and forced.completion_tokens == 12
    assert forced.text.startswith(free.text) and len(forced.text) > len(free.text)
    half = teacher.generate([mk("c", "hi", max_new_tokens=12, min_new_tokens=6)])[0]
    assert half.completion_tokens >= 6  # EOS allowed again after six tokens


def test_forced_outputs_are_the_same_on_both_paths(fp32_teacher, cb_teacher, mk):
    batch = [mk(f"k{i}", q, max_new_tokens=10, min_new_tokens=10) for i, q in enumerate(QUESTIONS)]
    static, continuous = fp32_teacher.generate(batch), cb_teacher.generate(batch)
    assert [o.text for o in continuous] == [o.text for o in static]
    assert all(o.completion_tokens == 10 and o.finish_reason == "length" for o in continuous)


def test_continuous_greedy_equals_static(fp32_teacher, cb_teacher, mk):
    batch = [mk(f"k{i}", q, max_new_tokens=16) for i, q in enumerate(QUESTIONS)]
    static, continuous = fp32_teacher.generate(batch), cb_teacher.generate(batch)
    assert [o.key for o in continuous] == [i.key for i in batch]
    assert [o.text for o in continuous] == [o.text for o in static]
    assert [o.finish_reason for o in continuous] == [o.finish_reason for o in static]
    assert [o.prompt_tokens for o in continuous] == [o.prompt_tokens for o in static]
    assert [o.completion_tokens for o in continuous] == [o.completion_tokens for o in static]
    assert len({o.text for o in continuous}) > 1


def test_continuous_eos_is_cut_and_counted(cb_teacher, mk, monkeypatch):
    _eos_after_two(cb_teacher, mk, monkeypatch)
    (o,) = cb_teacher.generate([mk("a", "hi", max_new_tokens=12)])
    assert o.finish_reason == "stop" and o.completion_tokens <= 3 and o.error is None
    assert "<|im_end|>" not in o.text and "hi" not in o.text


@pytest.fixture
def manager_count(monkeypatch):
    """Requests added to transformers' continuous-batching managers and not yet returned."""
    from transformers.generation.continuous_batching import ContinuousBatchingManager as M

    state = {"held": 0, "peak": 0, "added": 0, "engines": 0}
    add, get, init = M.add_request, M.get_result, M.__init__

    def counted_init(self, *a, **k):
        state["engines"] += 1
        init(self, *a, **k)

    def counted_add(self, *a, **k):
        rid = add(self, *a, **k)
        state["held"] += 1
        state["added"] += 1
        state["peak"] = max(state["peak"], state["held"])
        return rid

    def counted_get(self, *a, **k):
        r = get(self, *a, **k)
        if r is not None and r.is_finished():
            state["held"] -= 1
        return r

    monkeypatch.setattr(M, "__init__", counted_init)
    monkeypatch.setattr(M, "add_request", counted_add)
    monkeypatch.setattr(M, "get_result", counted_get)
    return state


def test_stream_is_lazy_and_keeps_the_window(cb_teacher, mk, monkeypatch, manager_count):
    monkeypatch.setattr(cb_teacher, "window", 2)
    inputs = [mk(f"k{i}", q, max_new_tokens=6 + 2 * i) for i, q in enumerate(QUESTIONS + ["last one"])]
    pulled = []

    def lazy():
        for inp in inputs:
            pulled.append(inp.key)
            yield inp

    seen = []
    for out in iter_outputs(cb_teacher, lazy(), chunk=100):  # a streaming teacher ignores chunk
        assert len(pulled) - len(seen) <= 2 + 1  # never more than the window ahead (plus the one waiting)
        seen.append(out)
    assert sorted(o.key for o in seen) == sorted(i.key for i in inputs)
    assert all(o.finish_reason != "error" and o.text is not None and o.prompt_tokens for o in seen)
    assert manager_count["added"] == len(inputs) and manager_count["held"] == 0
    assert manager_count["peak"] == 2  # the window, and no more


def test_stream_errors_and_sampling_switches(cb_teacher, mk, img, manager_count):
    batch = [
        mk("greedy", "hi", max_new_tokens=4),
        mk("picture", "q", images=[img("red")], max_new_tokens=4),  # a text-only model: error
        mk("sampled", "tell me", max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3),
        mk("greedy2", "count", max_new_tokens=4),
    ]
    out = {o.key: o for o in cb_teacher.stream(batch)}
    assert set(out) == {i.key for i in batch}
    assert out["picture"].finish_reason == "error" and "text-only" in out["picture"].error
    assert all(out[k].finish_reason != "error" for k in ("greedy", "sampled", "greedy2"))
    assert out["sampled"].completion_tokens >= 1
    assert manager_count["engines"] == 3  # greedy, then sampled, then greedy again


def test_stream_stopped_early_stops_the_engine(cb_teacher, mk, manager_count):
    it = cb_teacher.stream(mk(f"k{i}", q, max_new_tokens=8) for i, q in enumerate(QUESTIONS))
    first = next(it)
    it.close()
    assert first.key.startswith("k")
    assert cb_teacher.generate([mk("after", "hi", max_new_tokens=3)])[0].finish_reason != "error"


def test_continuous_vl_sends_images_through_static_batches(tiny_vl_dir, vl_teacher, mk, img, manager_count):
    t = load_teacher(cfg(tiny_vl_dir, batching="continuous", batch_size=8))
    try:
        batch = [
            mk("red", "what colour is it?", images=[img("red")], max_new_tokens=8),
            mk("none", "no picture here", max_new_tokens=8),
            mk("blue", "and this one?", images=[img("blue")], max_new_tokens=8),
        ]
        out = t.generate(batch)
        assert [o.key for o in out] == [i.key for i in batch]
        assert all(o.finish_reason != "error" for o in out), [o.error for o in out]
        static = vl_teacher.generate(batch)
        assert [out[0].text, out[2].text] == [static[0].text, static[2].text]
        assert manager_count["added"] == 1  # only the text-only input went to the engine
    finally:
        t.close()
