"""Watching training: the progress bar, the log lines, TensorBoard and W&B (offline)."""

from __future__ import annotations

import logging

import pytest
from rich.console import Console

from siqkit.train.watch import StageWatch, TrackerError, _open

ROWS = [{"loss": 2.0 - 0.1 * i, "lr": 2e-4, "grad_norm": 1.0, "tokens": 1000, "target_tokens": 600,
         "seconds": 0.5} for i in range(6)]


def test_the_bar_shows_eta_tokens_per_second_loss_and_lr(tmp_path):
    console = Console(record=True, force_terminal=True, width=150)
    with StageWatch("reason", tmp_path, every=50, console=console) as watch:
        for step, row in enumerate(ROWS, 1):
            watch(step, 6, row)
    text = console.export_text()
    assert "stage reason" in text and "6/6" in text and "2,000 tok/s" in text
    assert "loss 1.5000" in text and "lr 2.00e-04" in text and "eta" in text


def test_without_a_terminal_log_lines_carry_the_same_numbers(tmp_path, caplog):
    console = Console(record=True, force_terminal=False)
    with caplog.at_level(logging.INFO, logger="siqkit.train.watch"):
        with StageWatch("reason", tmp_path, every=4, console=console) as watch:
            for step, row in enumerate(ROWS, 1):
                watch(step, 10, row)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["stage reason: step 4/10, 2,000 tok/s, loss 1.7000, lr 2.00e-04, eta 0m03s"]


def test_tensorboard_gets_every_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with StageWatch("reason", tmp_path, every=50, report_to=["tensorboard"], console=Console(file=None)) as watch:
        for step, row in enumerate(ROWS, 1):
            watch(step, 6, row)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    losses = [(e.step, round(e.value, 4)) for e in events.Scalars("train/loss")]
    assert losses == [(i + 1, round(2.0 - 0.1 * i, 4)) for i in range(6)]
    assert {"train/lr", "train/tokens_per_s", "train/grad_norm"} <= set(events.Tags()["scalars"])


def test_wandb_offline_run_is_written_in_the_stage_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with StageWatch("reason", tmp_path, every=50, report_to=["wandb"], config={"learning_rate": 2e-4},
                    console=Console(file=None)) as watch:
        for step, row in enumerate(ROWS, 1):
            watch(step, 6, row)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_an_unknown_tracker_is_a_clear_error(tmp_path):
    with pytest.raises(TrackerError, match="train.report_to: unknown tracker 'mlflow'"):
        _open("mlflow", "reason", tmp_path, {})
