"""Evaluation on held-out seeds: refusal of training seeds, the numbers, the side-by-side table."""

from __future__ import annotations

import json

import pytest

from siqkit.evaluate import EvalRefusedError, check_held_out, evaluate_student
from siqkit.evaluate.heldout import training_seed_ids
from siqkit.teachers.backends.transformers_hf import TransformersTeacher
from siqkit.teachers.base import TeacherOutput
from tests.train.traces import eval_seeds, write_traces


def test_refusal_lists_five_ids_and_the_count():
    seeds = [{"seed_id": f"s{i}", "question": "q"} for i in range(9)]
    with pytest.raises(EvalRefusedError) as info:
        check_held_out(seeds, {f"s{i}" for i in range(2, 9)} | {"other"})
    msg = str(info.value)
    assert "7 evaluation seed(s) were used in training: s2, s3, s4, s5, s6, … (2 more)" in msg
    check_held_out(seeds, {"other"})  # disjoint: fine


def test_a_training_seed_is_refused(twin, tmp_path):
    data = write_traces(tmp_path / "data", 6)
    seeds = eval_seeds(2) + [{"seed_id": "seed-004", "question": "What color is the shape?", "gold": "green"}]
    with pytest.raises(EvalRefusedError, match=r"1 evaluation seed\(s\) were used in training: seed-004;"):
        evaluate_student(twin("qwen2"), seeds, training_seed_ids(data))


def test_numbers_follow_the_outputs(twin, monkeypatch):
    canned = {
        "held-000": "<think>\nIt is a red circle.\n</think>\n\nred",  # correct, well formed
        "held-001": "<think>\nFour straight sides\n</think>\n\nsquare",  # wrong, well formed
        "held-002": "Answer: blue",  # correct, no reasoning
        "held-003": "<think>\nI keep thinking",  # truncated
    }

    def fake_generate(self, batch):
        return [TeacherOutput(key=i.key, text=canned[i.seed_id], finish_reason="stop") for i in batch]

    monkeypatch.setattr(TransformersTeacher, "generate", fake_generate)
    result = evaluate_student(twin("qwen2_vl"), eval_seeds(4), {"seed-000"})
    assert result["accuracy"] == 0.5 and result["correct"] == 2 and result["judged"] == 4
    assert result["format_ok"] == 0.5
    assert result["parse_status"] == {"ok": 2, "no_reasoning": 1, "truncated": 1}
    assert result["mean_reasoning_tokens"] == pytest.approx((5 + 3 + 3) / 3)


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3"])
def test_real_generation_and_side_by_side_table(twin, tmp_path, arch):
    result = evaluate_student(twin(arch), eval_seeds(3), set(), max_new_tokens=6, out_dir=tmp_path, label="before")
    assert result["seeds"] == 3 and all(r["output"] is not None for r in result["rows"])
    stored = json.loads((tmp_path / "eval.json").read_text())
    assert stored["accuracy"] == result["accuracy"]
    table = (tmp_path / "side_by_side.md").read_text()
    assert table.count("\n| held-") == 3 and "I see a red circle." in table
    assert len(list((tmp_path / "images").glob("*.png"))) == 3  # the images, even for a text-only student


def test_an_exported_gguf_is_evaluated_in_llama_cpp(tmp_path):
    """A GGUF file runs through the llama_cpp backend: with its mmproj it reads the images,
    without one it sees each image as its caption, as a text-only student."""
    from siqkit.export import tiny_gguf, write_mmproj

    gguf = tiny_gguf("qwen2_vl", tmp_path)
    mmproj = write_mmproj(tmp_path / "qwen2_vl-hf", tmp_path / "mmproj.gguf")
    seeds = eval_seeds(3)
    with_images = evaluate_student(gguf, seeds, set(), max_new_tokens=6, mmproj=mmproj, out_dir=tmp_path / "e1",
                                   label="gguf-f16")
    captions = evaluate_student(gguf, seeds, set(), max_new_tokens=6, label="gguf-f16-text")
    for result in (with_images, captions):
        assert result["seeds"] == result["judged"] == 3
        assert all(r["finish_reason"] in ("stop", "length") and r["output"] for r in result["rows"])
        assert result["correct"] == sum(bool(r["correct"]) for r in result["rows"])
    assert (tmp_path / "e1" / "eval.json").is_file()
    with pytest.raises(EvalRefusedError):
        evaluate_student(gguf, seeds, {seeds[0]["seed_id"]}, mmproj=mmproj)


def test_evaluate_checkpoint_reuses_an_identical_evaluation(tmp_path, monkeypatch):
    """One folder per evaluation; the same model, seeds and settings are not evaluated twice."""
    import os

    from siqkit.evaluate import evaluate as ev

    calls = []

    def fake_evaluate_student(model_dir, seeds, train_ids, **kw):
        calls.append(kw)
        kw["out_dir"].mkdir(parents=True, exist_ok=True)
        return {"label": kw["label"], "model": str(model_dir), "accuracy": 0.5, "format_ok": 1.0,
                "mean_reasoning_tokens": 3.0, "rows": []}

    monkeypatch.setattr(ev, "evaluate_student", fake_evaluate_student)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    seeds = [ev.as_seed(s) for s in eval_seeds(2)]

    def run(**kw):
        return ev.evaluate_checkpoint(model, "after-reason", 3, seeds, {"seed-000"}, tmp_path / "train",
                                      **{"text_only": False, "max_new_tokens": 8, **kw})

    first = run(batch_size=2, table_rows=1, image_text="<{caption}>", device="cpu")
    assert calls == [{"max_new_tokens": 8, "batch_size": 2, "text_only": False, "image_text": "<{caption}>",
                      "device": "cpu", "table_rows": 1, "out_dir": tmp_path / "train" / "eval" / "03-after-reason",
                      "label": "after-reason"}]
    stored = json.loads((tmp_path / "train" / "eval" / "03-after-reason" / "eval.json").read_text())
    assert stored == first and len(first["fingerprint"]) == 16
    assert run() == first and len(calls) == 1  # reused
    run(max_new_tokens=16)  # another generation budget: evaluated again
    run(text_only=True)
    stat = (model / "model.safetensors").stat()
    os.utime(model / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # new weights
    run(text_only=True)
    assert len(calls) == 4
