"""``kill -9`` in the middle of training, then the same command: it resumes where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from siqkit.train import StudentConfig, TrainConfig, train_curriculum
from siqkit.train.checkpoint import latest_checkpoint, read_state
from tests.conftest import REPO
from tests.train.traces import write_traces

STAGE = {"name": "reason", "data": "cot", "freeze": ["vision", "projector"], "epochs": 3}
TRAIN = {"batch_size": 2, "micro_batch": 1, "grad_accum": 2, "save_every": 5, "stages": [STAGE]}


def _log(out_dir) -> list[dict]:
    path = out_dir / "stages" / "01-reason" / "log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def _command(config, data, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return [sys.executable, "-m", "siqkit.train", str(config), str(data), str(out)], env


def test_kill_9_then_rerun_resumes_with_the_same_data_order(twin, tmp_path):
    data = write_traces(tmp_path / "data", 40)  # 3 epochs x 40 rows / 2 per step = 60 steps
    student = twin("qwen2")
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"student": {"path": str(student)}, "train": TRAIN}))
    out = tmp_path / "out"
    ckpts = out / "stages" / "01-reason" / "checkpoints"

    cmd, env = _command(config, data, out)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = latest_checkpoint(ckpts)
        if ckpt is not None and read_state(ckpt)["step"] >= 15:
            break
        time.sleep(0.01)
    time.sleep(0.05)  # usually lands between checkpoints, so some logged steps are redone
    if proc.poll() is not None:
        pytest.fail(f"training ended before it could be killed: {proc.communicate()[1].decode()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_state(latest_checkpoint(ckpts))["step"]
    assert 15 <= killed_at < 60 and not (out / "stages" / "01-reason" / "stage.json").exists()

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"(step {killed_at} of 60)" in done.stderr
    stage = json.loads((out / "stages" / "01-reason" / "stage.json").read_text())
    assert stage["resumed_at_step"] == killed_at and stage["steps"] == 60

    log = _log(out)
    assert [r["step"] for r in log] == list(range(1, 61))  # no step lost, none twice

    # The same run without the kill: same batches in the same order, same losses.
    reference = tmp_path / "reference"
    train_curriculum(StudentConfig(path=student), TrainConfig.model_validate(TRAIN), data, reference)
    expected = _log(reference)
    assert [r["batches"] for r in log] == [r["batches"] for r in expected]
    for got, want in zip(log, expected):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4), got["step"]


SPLIT_STAGE = {"name": "reason", "data": "cot", "freeze": ["vision", "projector"], "epochs": 1}
SPLIT = {"batch_size": 4, "micro_batch": 1, "grad_accum": 4, "save_every": 2, "keep_checkpoints": 10,
         "lora": {"dropout": 0.0}, "stages": [SPLIT_STAGE]}


def _crash_after(out, step: int) -> None:
    """Leave a finished stage as a crash after ``step`` would have: later checkpoints and outputs gone."""
    stage_dir = out / "stages" / "01-reason"
    for name in ("stage.json",):
        (stage_dir / name).unlink()
    for ckpt in (stage_dir / "checkpoints").iterdir():
        if int(ckpt.name.split("-")[1]) > step:
            for f in ckpt.iterdir():
                f.unlink()
            ckpt.rmdir()


def test_a_rerun_with_another_split_of_the_batch_resumes_on_the_same_examples(twin, traces, tmp_path):
    student = StudentConfig(path=twin("qwen2_vl"))
    reference = train_curriculum(student, TrainConfig.model_validate(SPLIT), traces, tmp_path / "out")
    expected = reference["stages"][0]["history"]
    assert len(expected) == 3  # 12 rows, 4 per step
    _crash_after(tmp_path / "out", 2)

    resumed = train_curriculum(student, TrainConfig.model_validate({**SPLIT, "micro_batch": 2, "grad_accum": 2}),
                               traces, tmp_path / "out")["stages"][0]
    assert resumed["resumed_at_step"] == 2 and (resumed["micro_batch"], resumed["grad_accum"]) == (2, 2)
    log = _log(tmp_path / "out")
    assert [r["step"] for r in log] == [1, 2, 3]
    assert [len(b) for b in log[2]["batches"]] == [2, 2]  # the new split ...
    assert sorted(k for b in log[2]["batches"] for k in b) == sorted(k for b in expected[2]["batches"] for k in b)
    assert log[2]["loss"] == pytest.approx(expected[2]["loss"], rel=1e-4)  # ... on the same examples
    assert not list((tmp_path / "out" / "stages").glob("*.stale-*"))

    # Another precision (as on another device) resumes too.
    _crash_after(tmp_path / "out", 2)
    again = train_curriculum(student, TrainConfig.model_validate({**SPLIT, "precision": "bf16"}), traces,
                             tmp_path / "out")["stages"][0]
    assert again["resumed_at_step"] == 2 and again["precision"] == "bf16" and again["steps"] == 3


def test_a_rerun_that_changes_what_the_stage_learns_is_refused_in_one_line(twin, traces, tmp_path):
    from siqkit.train.curriculum import StageChanged

    student = StudentConfig(path=twin("qwen2_vl"))
    train_curriculum(student, TrainConfig.model_validate(SPLIT), traces, tmp_path / "out")
    _crash_after(tmp_path / "out", 2)
    changed = {**SPLIT, "learning_rate": 1e-3}
    with pytest.raises(StageChanged) as err:
        train_curriculum(student, TrainConfig.model_validate(changed), traces, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and message.startswith("stage 'reason': step-000002 was written with learning_rate")
    assert "learning_rate 0.0002 (now 0.001)" in message and "train.restart_changed=true" in message
    assert latest_checkpoint(tmp_path / "out" / "stages" / "01-reason" / "checkpoints") is not None  # untouched

    again = train_curriculum(student, TrainConfig.model_validate({**changed, "restart_changed": True}), traces,
                             tmp_path / "out")["stages"][0]
    assert again["status"] == "done" and again["resumed_at_step"] is None
    assert len(list((tmp_path / "out" / "stages").glob("01-reason.stale-*"))) == 1
