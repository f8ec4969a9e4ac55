"""Watching a stage train: a progress bar with ETA, tokens/s, loss and learning rate; TensorBoard; W&B.

On a terminal each stage gets a rich progress bar; elsewhere (a log file, CI) a log line
every ``save_every`` steps and at the end carries the same numbers. ``train.report_to``
adds trackers, each optional and imported only when named:

- ``tensorboard``: ``torch.utils.tensorboard``'s writer (needs the ``tensorboard``
  package), event files in ``<stage folder>/tensorboard/``; ``tensorboard --logdir RUN_DIR/train``;
- ``wandb``: Weights & Biases (needs ``wandb``), one run per stage, its files in the stage
  folder; the project is ``$WANDB_PROJECT`` (default ``siqkit``). W&B reads its own key
  (``WANDB_API_KEY``) and mode from the environment; ``WANDB_MODE=offline`` keeps
  everything local (``wandb sync`` uploads later). siqkit never writes the key anywhere.

Both get, per optimizer step: loss, learning rate, gradient norm, tokens/s, target tokens.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from siqkit.errors import SiqkitError

TRACKERS = ("tensorboard", "wandb")
log = logging.getLogger(__name__)


class TrackerError(SiqkitError):
    """A tracker named in ``train.report_to`` cannot start."""


def _eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StageWatch:
    """The loop's ``progress`` callback for one stage; use as a context manager."""

    def __init__(self, name: str, stage_dir: Path, *, every: int, report_to: list[str] | tuple[str, ...] = (),
                 config: dict | None = None, console: Any = None):
        from siqkit.progress import console as default_console

        self.name, self.every = name, every
        self.console = console or default_console
        self.tokens = self.seconds = 0.0
        self.steps_run = 0
        self._bar = self._task = None
        self.writers: dict[str, Any] = {}
        for tracker in report_to:
            self.writers[tracker] = _open(tracker, name, stage_dir, config or {})

    def __enter__(self) -> "StageWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stats(self, row: dict) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return f"{rate:,.0f} tok/s, loss {row['loss']:.4f}, lr {row['lr']:.2e}"

    def __call__(self, step: int, total: int, row: dict) -> None:
        self.tokens += row["tokens"]
        self.seconds += row["seconds"]
        self.steps_run += 1
        rate = self.tokens / self.seconds if self.seconds else 0.0
        if self.console.is_terminal:
            self._show(step, total, row)
        elif step % self.every == 0 or step == total:
            eta = _eta((total - step) * self.seconds / self.steps_run)
            log.info("stage %s: step %d/%d, %s, eta %s", self.name, step, total, self.stats(row), eta)
        values = {"loss": row["loss"], "lr": row["lr"], "grad_norm": row["grad_norm"], "tokens_per_s": rate,
                  "target_tokens": row["target_tokens"]}
        if "tensorboard" in self.writers:
            for key, value in values.items():
                self.writers["tensorboard"].add_scalar(f"train/{key}", value, step)
        if "wandb" in self.writers:
            self.writers["wandb"].log({f"train/{k}": v for k, v in values.items()}, step=step)

    def _show(self, step: int, total: int, row: dict) -> None:
        if self._bar is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]stage {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task(self.name, total=total, completed=step - 1, stats="")
        self._bar.update(self._task, completed=step, stats=self.stats(row))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        for tracker, writer in self.writers.items():
            writer.close() if tracker == "tensorboard" else writer.finish()
        self.writers = {}


def _open(tracker: str, name: str, stage_dir: Path, config: dict) -> Any:
    if tracker == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackerError("train.report_to: tensorboard needs the tensorboard package "
                               "(pip install tensorboard)") from None
        return SummaryWriter(log_dir=str(stage_dir / "tensorboard"))
    if tracker == "wandb":
        try:
            import wandb
        except ImportError:
            raise TrackerError("train.report_to: wandb needs the wandb package (pip install wandb)") from None
        return wandb.init(project=os.environ.get("WANDB_PROJECT", "siqkit"), name=name, dir=str(stage_dir),
                          config=config, reinit="create_new")
    raise TrackerError(f"train.report_to: unknown tracker '{tracker}'; expected one of {', '.join(TRACKERS)}")
