"""Difficulty-aware selection and label-diversity sampling: quotas, caps, coverage, determinism."""

from __future__ import annotations

import random

import numpy as np
import pytest

from siqkit.curate.config import SelectionConfig
from siqkit.curate.select import quotas, select

MIX = {"easy": 30, "medium": 40, "hard": 30}


def pool(n_easy: int, n_medium: int, n_hard: int, seed: int = 0):
    rng = random.Random(seed)
    buckets = ["easy"] * n_easy + ["medium"] * n_medium + ["hard"] * n_hard
    common = ["color", "shape", "counting", "ocr"]
    labels = []
    for i in range(len(buckets)):
        ls = [rng.choice(common), "visual-perception"]
        if i % 97 == 0:
            ls.append(f"rare-{i}")  # rare labels
        labels.append(ls)
    keys = [f"k{i}" for i in range(len(buckets))]
    return keys, buckets, labels


def shares(sel, buckets):
    kept = [b for b, k in zip(buckets, sel.kept) if k]
    return {b: kept.count(b) / len(kept) for b in ("easy", "medium", "hard")}


@pytest.mark.parametrize("supply", [(5000, 800, 300), (300, 300, 300), (1000, 2000, 3000), (47, 61, 33)])
def test_mix_met_within_two_points_wherever_the_supply_allows(supply):
    keys, buckets, labels = pool(*supply)
    sel = select(keys, buckets, labels, SelectionConfig.model_validate({"difficulty": {"mix": MIX}}), seed=0)
    got = shares(sel, buckets)
    for b, t in {"easy": 0.3, "medium": 0.4, "hard": 0.3}.items():
        assert abs(got[b] - t) <= 0.02, (supply, got)
    assert sel.report["met"] and not sel.report["notes"]
    # the largest total the supply allows: one bucket is used up (to rounding)
    n = int(sel.kept.sum())
    assert any(n * t > s - 2 for t, s in zip((0.3, 0.4, 0.3), supply))
    dropped = [r for r in sel.reason if r]
    assert set(dropped) <= {"difficulty quota"} and len(dropped) == len(keys) - n


def test_total_and_shortfall_are_reported():
    keys, buckets, labels = pool(5000, 800, 100)
    cfg = SelectionConfig.model_validate({"difficulty": {"mix": MIX, "total": 1000}})
    sel = select(keys, buckets, labels, cfg, seed=0)
    assert sel.kept.sum() == 333  # hard limits: 100 / 0.3
    assert sel.report["met"]
    assert "supply allows 333 of the 1,000 requested" in sel.report["notes"][0]
    # fill: keep the total, deviate from the mix, and say so
    cfg = SelectionConfig.model_validate({"difficulty": {"mix": MIX, "total": 1000, "on_shortfall": "fill"}})
    sel = select(keys, buckets, labels, cfg, seed=0)
    assert sel.kept.sum() == 1000
    assert not sel.report["met"] and any("hard: all 100 available" in n for n in sel.report["notes"])
    # a bucket without any supply cannot be met: the others keep their relative shares
    keys, buckets, labels = pool(600, 800, 0)
    sel = select(keys, buckets, labels, SelectionConfig.model_validate({"difficulty": {"mix": MIX}}), seed=0)
    assert not sel.report["met"] and "no hard samples" in sel.report["notes"][0]
    got = shares(sel, buckets)
    assert got["easy"] == pytest.approx(3 / 7, abs=0.01)


def test_quotas_sum_and_round():
    q, notes = quotas({"easy": 100, "medium": 100, "hard": 100}, {"easy": 0.3, "medium": 0.4, "hard": 0.3}, 7,
                      "shrink")
    assert sum(q.values()) == 7 and q["medium"] == 3 and not notes
    q, _ = quotas({"easy": 10, "medium": 1000, "hard": 1000}, {"easy": 0.5, "medium": 0.25, "hard": 0.25}, 100,
                  "fill")
    assert q == {"easy": 10, "medium": 45, "hard": 45}


def test_label_cap_and_rare_label_coverage():
    keys, buckets, labels = pool(3000, 0, 0)
    cfg = SelectionConfig.model_validate({"labels": {"max_per_label": 100}})
    sel = select(keys, buckets, labels, cfg, seed=0)
    counts: dict[str, int] = {}
    for ls, k in zip(labels, sel.kept):
        if k:
            for x in ls:
                counts[x] = counts.get(x, 0) + 1
    assert max(v for x, v in counts.items() if x != "visual-perception") <= 100  # ignored labels are not capped
    rare = {x for ls in labels for x in ls if x.startswith("rare-")}
    assert rare <= set(counts)  # every rare label kept
    assert sel.report["label_coverage"]["after"] == sel.report["label_coverage"]["before"]
    assert {r for r in sel.reason if r} == {"label cap"}
    # rare labels come first in the selection order
    first = sorted(range(len(keys)), key=lambda i: sel.rank[i])[: len(rare)]
    assert all(any(x.startswith("rare-") for x in labels[i]) for i in first)


def test_caps_with_a_mix_still_keep_the_mix():
    keys, buckets, labels = pool(2000, 2000, 2000)
    cfg = SelectionConfig.model_validate({"difficulty": {"mix": MIX}, "labels": {"max_per_label": 300}})
    sel = select(keys, buckets, labels, cfg, seed=0)
    got = shares(sel, buckets)
    assert all(abs(got[b] - t) <= 0.02 for b, t in {"easy": 0.3, "medium": 0.4, "hard": 0.3}.items())


def test_deterministic_under_the_seed_and_not_on_order():
    keys, buckets, labels = pool(500, 500, 500)
    cfg = SelectionConfig.model_validate({"difficulty": {"mix": MIX, "total": 300}})
    a = select(keys, buckets, labels, cfg, seed=1)
    b = select(keys, buckets, labels, cfg, seed=1)
    c = select(keys, buckets, labels, cfg, seed=2)
    assert np.array_equal(a.kept, b.kept) and not np.array_equal(a.kept, c.kept)
    perm = list(reversed(range(len(keys))))
    d = select([keys[i] for i in perm], [buckets[i] for i in perm], [labels[i] for i in perm], cfg, seed=1)
    assert {keys[i] for i in np.flatnonzero(a.kept)} == {keys[perm[i]] for i in np.flatnonzero(d.kept)}


def test_unknown_difficulty():
    keys, buckets, labels = pool(100, 100, 100)
    buckets[:10] = [None] * 10
    sel = select(keys, buckets, labels, SelectionConfig.model_validate({"difficulty": {"mix": MIX}}), seed=0)
    assert sel.kept[:10].all() and sel.report["after"]["unknown"] == 10
    sel = select(keys, buckets, labels,
                 SelectionConfig.model_validate({"difficulty": {"mix": MIX, "unknown": "drop"}}), seed=0)
    assert not sel.kept[:10].any() and sel.reason[0] == "no difficulty"
