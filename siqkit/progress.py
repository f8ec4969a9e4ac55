"""Progress bars and the run log: one look for every long loop, one log file per run folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")

console = Console(stderr=True)  # progress, logs and errors
out = Console()  # tables and results, on stdout
log = logging.getLogger("siqkit")


class RateColumn(ProgressColumn):
    """Items per second, with the unit the caller names (seeds/s, samples/s, tok/s)."""

    def render(self, task) -> Text:  # type: ignore[override]
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="cyan")


def make_progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate with a progress bar showing count, rate and ETA (plain log lines when not a terminal)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total, unit=unit)
        n = 0
        for item in items:
            yield item
            n += 1
            progress.advance(task)
        if not console.is_terminal and n:
            elapsed = progress.tasks[0].elapsed or 0.0
            rate = f", {n / elapsed:,.0f} {unit}/s" if elapsed > 0 else ""
            log.info("%s: %d %s in %.1f s%s", description, n, unit, elapsed, rate)


def setup_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    """Console logging through rich; with ``log_file``, also a plain, timestamped log there."""
    root = logging.getLogger("siqkit")
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()
    if not any(getattr(h, "_siqkit_console", False) for h in root.handlers):
        handler: logging.Handler
        if console.is_terminal:
            handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
        else:  # piped or captured: plain lines that never wrap, so they can be grepped
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler._siqkit_console = True  # type: ignore[attr-defined]
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(logging.DEBUG)
        root.addHandler(fh)
        root.debug("command: %s", " ".join(sys.argv))
