"""Loss and evaluation curves as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(stages: list[tuple[str, list[dict]]], path: Path) -> Path:
    """Training loss per optimizer step, stages one after another, each in its own colour."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    offset = 0
    for name, history in stages:
        if not history:
            continue
        xs = [offset + r["step"] for r in history]
        ax.plot(xs, [r["loss"] for r in history], marker="." if len(xs) < 50 else None, label=name)
        offset = xs[-1]
        ax.axvline(offset + 0.5, color="0.8", linewidth=0.8)
    ax.set_xlabel("optimizer step (all stages)")
    ax.set_ylabel("loss (mean over assistant tokens)")
    ax.set_title("training loss")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_evals(evals: list[dict], path: Path) -> Path:
    """Accuracy and format adherence (left axis), mean reasoning tokens (right), per evaluation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [e["label"] for e in evals]
    xs = list(range(len(evals)))
    ax.plot(xs, [e["accuracy"] if e["accuracy"] is not None else float("nan") for e in evals], marker="o",
            label="accuracy")
    ax.plot(xs, [e["format_ok"] for e in evals], marker="s", label="format adherence")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(xs, labels)
    ax.set_ylabel("share of held-out seeds")
    right = ax.twinx()
    right.plot(xs, [e["mean_reasoning_tokens"] for e in evals], color="0.5", linestyle="--", marker="^",
               label="mean reasoning tokens")
    right.set_ylabel("mean reasoning tokens")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    ax.set_title("held-out evaluation")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
