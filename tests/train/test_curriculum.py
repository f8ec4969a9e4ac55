"""align -> instruct -> reason with QLoRA on a tiny twin of every student class, on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from siqkit.evaluate import EvalRefusedError
from siqkit.models import SUPPORTED_TINY, is_vision
from siqkit.store import Store
from siqkit.train import StudentConfig, TrainConfig, train_curriculum
from siqkit.train.memory import PlanError
from siqkit.train.qlora import part_of
from tests.train.traces import eval_seeds, write_traces


def small_config(**over) -> TrainConfig:
    """The default three stages, a handful of steps each."""
    return TrainConfig.model_validate({"batch_size": 4, "micro_batch": 2, "save_every": 2, "eval_max_new_tokens": 4,
                                       "eval_batch_size": 4, **over})


def _weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def _changed(a: dict, b: dict) -> set[str]:
    return {part_of(n) for n in a if not torch.equal(a[n], b[n])}


@pytest.mark.parametrize("arch", SUPPORTED_TINY)
def test_every_student_class_runs_the_curriculum(twin, traces, tmp_path, arch):
    base = twin(arch)
    store = Store.open(tmp_path / "run", create=True)
    summary = train_curriculum(StudentConfig(path=base), small_config(), traces, tmp_path / "out", store=store,
                               eval_seeds=eval_seeds(2), stage_run=7)
    stages = {s["stage"]: s for s in summary["stages"]}
    if is_vision(arch):
        assert [s["status"] for s in summary["stages"]] == ["done"] * 3
    else:  # a text-only student has no projector to align
        assert stages["align"]["status"] == "skipped" and "no projector" in stages["align"]["reason"]
        assert stages["instruct"]["status"] == stages["reason"]["status"] == "done"
    for s in summary["stages"]:
        if s["status"] == "done":
            assert s["method"] == "qlora" and s["steps"] >= 1 and s["micro_batch"] == 2 and s["grad_accum"] == 2
            assert (Path(s["merged_dir"]) / "model.safetensors").is_file()
            assert (Path(s["merged_dir"]) / "tokenizer.json").is_file()
    assert (Path(stages["reason"]["adapter_dir"]) / "adapter_config.json").is_file()
    assert summary["final_model"] == stages["reason"]["merged_dir"]

    # Freezing rules hold in the merged weights.
    before, last = _weights(base), _weights(stages["reason"]["merged_dir"])
    instruct = _weights(stages["instruct"]["merged_dir"])
    assert _changed(instruct, last) == {"language"}  # reason: projector and vision frozen
    if is_vision(arch):
        aligned = _weights(stages["align"]["merged_dir"])
        assert _changed(before, aligned) == {"projector"}
        assert _changed(aligned, instruct) == {"language", "projector"}
        assert (Path(stages["align"]["merged_dir"]).parent / "trained.safetensors").is_file()

    # Evaluated before training and after every stage that ran; all of it in the store.
    labels = [e["label"] for e in summary["evals"]]
    assert labels == ["before"] + [f"after-{s['stage']}" for s in summary["stages"] if s["status"] == "done"]
    for e in summary["evals"]:
        assert e["seeds"] == 2 and e["judged"] == 2 and 0 <= e["format_ok"] <= 1
    con = store.con
    assert con.execute("SELECT count(*) FROM train_stages WHERE stage_run = 7").fetchone()[0] == 3
    steps = sum(s.get("steps") or 0 for s in summary["stages"])
    assert con.execute("SELECT count(*) FROM train_steps").fetchone()[0] == steps
    assert con.execute("SELECT list(after_stage ORDER BY after_stage) FROM eval_runs").fetchone()[0] == sorted(labels)
    assert con.execute("SELECT count(*) FROM eval_outputs").fetchone()[0] == 2 * len(labels)
    store.close()
    assert (tmp_path / "out" / "plots" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "out" / "plots" / "eval.png").stat().st_size > 1000
    assert (tmp_path / "out" / "eval" / "00-before" / "side_by_side.md").is_file()


def test_loss_falls_and_a_rerun_skips_finished_stages(twin, traces, tmp_path):
    cfg = small_config(learning_rate=5e-3, warmup_ratio=0.0, stages=[
        {"name": "reason", "data": "cot", "freeze": ["vision", "projector"], "epochs": 6}])
    student = StudentConfig(path=twin("qwen2_vl"))
    first = train_curriculum(student, cfg, traces, tmp_path / "out")
    history = first["stages"][0]["history"]
    assert len(history) == 18 and history[-1]["loss"] < 0.9 * history[0]["loss"]
    again = train_curriculum(student, cfg, traces, tmp_path / "out")
    assert again["stages"][0]["fingerprint"] == first["stages"][0]["fingerprint"]
    assert again["stages"][0]["history"] == history  # read back, not retrained

    changed = small_config(learning_rate=1e-3, stages=[
        {"name": "reason", "data": "cot", "freeze": ["vision", "projector"], "max_steps": 1}])
    third = train_curriculum(student, changed, traces, tmp_path / "out")
    assert third["stages"][0]["steps"] == 1
    assert len(list((tmp_path / "out" / "stages").glob("01-reason.stale-*"))) == 1


def test_text_only_student_learns_from_multimodal_traces(twin, traces, tmp_path):
    cfg = small_config(stages=[{"name": "reason", "data": "cot"}])
    summary = train_curriculum(StudentConfig(path=twin("qwen3")), cfg, traces, tmp_path / "out")
    log = [json.loads(x) for x in (tmp_path / "out" / "stages" / "01-reason" / "log.jsonl").read_text().splitlines()]
    assert summary["text_only"] and sum(len(b) for r in log for b in r["batches"]) == 12


def test_training_seed_in_evaluation_is_refused_before_training(twin, tmp_path):
    data = write_traces(tmp_path / "data", 8)
    leaked = eval_seeds(2) + [{"seed_id": "seed-003", "question": "q", "gold": "red"}]
    with pytest.raises(EvalRefusedError, match=r"1 evaluation seed\(s\) were used in training: seed-003"):
        train_curriculum(StudentConfig(path=twin("qwen2")), small_config(), data, tmp_path / "out", eval_seeds=leaked)
    assert not (tmp_path / "out" / "stages").exists()


def test_auto_settings_come_from_the_memory_planner(twin, traces, tmp_path):
    cfg = TrainConfig.model_validate({"vram": "8GB", "batch_size": 4, "stages": [
        {"name": "reason", "data": "cot", "method": "auto", "max_steps": 1}]})
    stage = train_curriculum(StudentConfig(path=twin("qwen2")), cfg, traces, tmp_path / "out")["stages"][0]
    # A tiny model fits 8 GiB without quantisation or recomputation, whole batch at once.
    assert stage["plan_source"] == "planner for 8.00 GiB"
    assert (stage["method"], stage["quantization"], stage["gradient_checkpointing"]) == ("lora", "none", False)
    assert (stage["micro_batch"], stage["grad_accum"]) == (4, 1)


def test_the_planner_counts_the_stage_images_and_the_pixel_cap_applies(twin, traces, tmp_path, caplog):
    import logging

    stages = [{"name": "reason", "data": "cot", "method": "auto", "max_steps": 1}]
    cfg = TrainConfig.model_validate({"vram": "8GB", "batch_size": 4, "max_image_pixels": 20 * 20, "stages": stages})
    with caplog.at_level(logging.INFO, logger="siqkit.train.curriculum"):
        stage = train_curriculum(StudentConfig(path=twin("qwen2_vl")), cfg, traces, tmp_path / "out")["stages"][0]
    assert "stage reason: images take 1-1 tokens each (median 1), up to 1 in a row, of max_seq_len 2048" in caplog.text
    # 64x64 images become 2x2 merged patches; capped at 20x20 pixels, one.
    assert stage["status"] == "done" and stage["image_tokens"]["per_row_max"] == 1
    assert stage["image_tokens"]["images"] == 12

    tight = TrainConfig.model_validate({"vram": "8GB", "batch_size": 4, "max_seq_len": 4, "stages": stages})
    with pytest.raises(PlanError) as err:
        train_curriculum(StudentConfig(path=twin("qwen2_vl")), tight, traces, tmp_path / "tight")
    message = str(err.value)
    assert "\n" not in message and message.startswith("stage 'reason': images take up to 4 tokens in a row")
    assert "would fit: max_image_pixels 1024 " in message


def test_answer_only_twin_trains_the_same_steps_from_the_same_model(twin, traces, tmp_path):
    cfg = small_config(stages=[
        {"name": "instruct", "data": "answer", "freeze": ["vision"]},
        {"name": "reason", "data": "cot", "freeze": ["vision", "projector"], "answer_only_baseline": True},
    ])
    summary = train_curriculum(StudentConfig(path=twin("qwen2_vl")), cfg, traces, tmp_path / "out",
                               eval_seeds=eval_seeds(2))
    stages = {s["stage"]: s for s in summary["stages"]}
    cot, answer_only = stages["reason"], stages["reason-answer-only"]
    assert answer_only["baseline_of"] == "reason" and answer_only["data"] == "answer"
    assert answer_only["input_model"] == cot["input_model"] == stages["instruct"]["merged_dir"]
    assert answer_only["steps"] == cot["steps"] and answer_only["examples"] == cot["examples"]
    assert answer_only["target_tokens"] < cot["target_tokens"]  # no reasoning in its targets
    assert summary["final_model"] == cot["merged_dir"]  # the twin feeds nothing
    assert [e["label"] for e in summary["evals"]] == [
        "before", "after-instruct", "after-reason", "after-reason-answer-only"]
    assert (tmp_path / "out" / "stages" / "02-reason-answer-only" / "merged" / "model.safetensors").is_file()
