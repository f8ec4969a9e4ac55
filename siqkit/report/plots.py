"""Plots for the run report: matplotlib figures rendered to PNG bytes (no files, no display)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display, and no dependence on one

import matplotlib.pyplot as plt  # noqa: E402

PALETTE = ["#3b6ea8", "#e07b39", "#5aa469", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def bars(groups: dict[str, dict[str, float]], title: str, ylabel: str, percent: bool = False) -> bytes:
    """Grouped bars: ``groups[group][series] = value`` (e.g. teacher -> split -> accuracy)."""
    return _png(bars_figure(groups, title, ylabel, percent))


def bars_figure(groups: dict[str, dict[str, float]], title: str, ylabel: str, percent: bool = False):
    """The figure of :func:`bars`: vertical bars for a few short group names; horizontal bars,
    one row per group and as tall as they need, when more than four groups or a long name would
    not fit side by side under the axis."""
    series = sorted({s for g in groups.values() for s in g})
    names = list(groups)
    across = len(names) > 4 or any(len(str(n)) > 12 for n in names)
    size = (6.4, 0.8 + 0.22 * len(names) * max(1, len(series))) if across else (6.4, 3.2)
    fig, ax = plt.subplots(figsize=size)
    width = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        pos = [j + i * width for j in range(len(names))]
        vals = [groups[n].get(s, 0) for n in names]
        (ax.barh if across else ax.bar)(pos, vals, width, label=s, color=PALETTE[i % len(PALETTE)])
        for p, v in zip(pos, vals):
            text = f"{v:.1%}" if percent else f"{v:,.0f}"
            if across:
                ax.annotate(text, (v, p), xytext=(2, 0), textcoords="offset points", va="center", fontsize=7)
            else:
                ax.annotate(text, (p, v), ha="center", va="bottom", fontsize=7)
    ticks = [j + width * (len(series) - 1) / 2 for j in range(len(names))]
    value_axis = ax.xaxis if across else ax.yaxis
    if across:
        ax.set_yticks(ticks, names, fontsize=8)
        ax.invert_yaxis()  # the first group on top
        ax.set_xlabel(ylabel, fontsize=8)
    else:
        ax.set_xticks(ticks, names, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    if percent:
        (ax.set_xlim if across else ax.set_ylim)(0, 1.05)
        value_axis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def stacked(groups: dict[str, dict[str, int]], order: list[str], title: str) -> bytes:
    """Horizontal stacked shares: ``groups[name][part] = count``, parts in ``order``."""
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.45 * max(1, len(groups))))
    names = list(groups)
    left = [0.0] * len(names)
    for i, part in enumerate(order):
        totals = [max(1, sum(groups[n].values())) for n in names]
        vals = [groups[n].get(part, 0) / t for n, t in zip(names, totals)]
        ax.barh(names, vals, left=left, label=part, color=PALETTE[i % len(PALETTE)])
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncols=len(order), loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def histogram(values: dict[str, list[float]], title: str, xlabel: str, bins: int = 30) -> bytes:
    """Overlaid histograms, one per series."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for i, (name, vals) in enumerate(values.items()):
        if vals:
            ax.hist(vals, bins=bins, alpha=0.6, label=name, color=PALETTE[i % len(PALETTE)])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("traces", fontsize=8)
    if len(values) > 1:
        ax.legend(fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def top_counts(counts: list[tuple[str, int]], title: str) -> bytes:
    """Horizontal bars of the most frequent items, largest on top."""
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.28 * max(1, len(counts))))
    names = [c[0] for c in counts][::-1]
    vals = [c[1] for c in counts][::-1]
    ax.barh(names, vals, color=PALETTE[0])
    for y, v in enumerate(vals):
        ax.annotate(f"{v:,}", (v, y), va="center", fontsize=7, xytext=(2, 0), textcoords="offset points")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def curves(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str) -> bytes:
    """Line plot of (x, y) series, e.g. training loss per stage."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for i, (name, pts) in enumerate(series.items()):
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=name, color=PALETTE[i % len(PALETTE)], lw=1.4,
                    marker="o" if len(xs) < 30 else None, ms=3)  # a short stage is still visible
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def accuracy_bars(rows: list[tuple[str, str, float]], title: str) -> bytes:
    """Horizontal bars, one per ``(name, group, accuracy)`` in the given order, coloured by group."""
    groups = list(dict.fromkeys(g for _, g, _ in rows))
    fig, ax = plt.subplots(figsize=(6.4, 0.7 + 0.38 * max(1, len(rows))))
    names = [n for n, _, _ in rows][::-1]
    values = [v for _, _, v in rows][::-1]
    colours = [PALETTE[groups.index(g) % len(PALETTE)] for _, g, _ in rows][::-1]
    ax.barh(names, values, color=colours)
    for y, v in enumerate(values):
        ax.annotate(f"{v:.1%}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlim(0, 1.1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
