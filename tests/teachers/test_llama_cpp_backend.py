"""The llama.cpp teacher on a real GGUF of a tiny twin, through llama-cpp-python."""

from types import SimpleNamespace

import pytest

from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.registry import load_teacher

pytest.importorskip("llama_cpp")


def cfg(path, **kw):
    return SimpleNamespace(**{"name": "gguf", "backend": "llama_cpp", "path": str(path), "n_ctx": 512, **kw})


@pytest.fixture(scope="module")
def teacher(tiny_gguf_pair):
    t = load_teacher(cfg(tiny_gguf_pair[0]))
    yield t
    t.close()


def test_uses_the_gguf_chat_template(teacher):
    assert teacher.llm.chat_format == "chat_template.default"
    assert "<|im_start|>" in teacher.llm.metadata["tokenizer.chat_template"]


def test_generate_keeps_order_and_counts(teacher, mk):
    batch = [mk("a", "hello there", max_new_tokens=8), mk("b", "a longer question for the model", max_new_tokens=5)]
    a, b = teacher.generate(batch)
    assert (a.key, b.key) == ("a", "b")
    for o, n in ((a, 8), (b, 5)):
        assert o.error is None and o.finish_reason in ("stop", "length")
        assert o.prompt_tokens > 5 and 1 <= o.completion_tokens <= n
        if o.finish_reason == "length":
            assert o.completion_tokens == n
    assert b.prompt_tokens > a.prompt_tokens


def test_greedy_is_deterministic(teacher, mk):
    inp = [mk("k", "count to three", max_new_tokens=10)]
    assert teacher.generate(inp)[0].text == teacher.generate(inp)[0].text


def test_greedy_matches_transformers(teacher, tiny_gguf_pair, mk):
    hf = load_teacher(SimpleNamespace(name="hf", backend="transformers", path=str(tiny_gguf_pair[1]), quantization="fp32"))
    batch = [mk(str(i), q, max_new_tokens=10) for i, q in enumerate(["what is in the box?", "hello", "count the dots"])]
    ours, theirs = teacher.generate(batch), hf.generate(batch)
    hf.close()
    for a, b in zip(ours, theirs):
        assert a.prompt_tokens == b.prompt_tokens  # same chat template, same tokens
        # A random model emits invalid UTF-8: transformers shows U+FFFD, llama-cpp-python drops
        # the bytes and may generate a token or two more to finish a character.
        assert a.text.startswith(b.text.replace("\ufffd", ""))


def test_images_without_mmproj_are_an_error_output(teacher, mk, img):
    ok, bad = teacher.generate([mk("a", "q", max_new_tokens=2), mk("b", "q", images=[img("red")], max_new_tokens=2)])
    assert ok.finish_reason != "error"
    assert bad.finish_reason == "error" and "mmproj" in bad.error


def test_prompt_longer_than_context_is_an_error_output(teacher, mk):
    (o,) = teacher.generate([mk("long", "word " * 2000, max_new_tokens=2)])
    assert o.finish_reason == "error" and o.error


def test_missing_files_are_load_errors(tmp_path, tiny_gguf_pair):
    with pytest.raises(TeacherLoadError, match="GGUF file not found"):
        load_teacher(cfg(tmp_path / "none.gguf"))
    with pytest.raises(TeacherLoadError, match="mmproj file not found"):
        load_teacher(cfg(tiny_gguf_pair[0], mmproj=str(tmp_path / "mmproj.gguf")))


def test_images_through_a_real_mmproj(tmp_path, mk, img):
    """A Qwen2-VL twin written as GGUF + mmproj by siqkit, answering an image prompt in llama.cpp."""
    from siqkit.export import write_gguf, write_mmproj
    from siqkit.models.twins import make_tiny

    hf = make_tiny("qwen2_vl", tmp_path / "hf", hidden=128, intermediate=256, seed=1)
    gguf_file = write_gguf(hf, tmp_path / "model.gguf", dtype="f16")
    mmproj = write_mmproj(hf, tmp_path / "mmproj.gguf")
    t = load_teacher(cfg(gguf_file, mmproj=str(mmproj), n_ctx=1024))
    try:
        with_image, text_only = t.generate([
            mk("a", "what is it?", images=[img("red")], max_new_tokens=6, seed=3),
            mk("b", "what is it?", max_new_tokens=6, seed=3),
        ])
    finally:
        t.close()
    assert with_image.error is None, with_image.error
    assert with_image.finish_reason in ("stop", "length") and 1 <= with_image.completion_tokens <= 6
    # the image's tokens are in the prompt
    assert with_image.prompt_tokens > text_only.prompt_tokens + 2
