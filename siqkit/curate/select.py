"""Difficulty-aware selection and label-diversity sampling, deterministic under the seed.

**Order.** Every candidate gets a uniform number ``u`` from a hash of the run seed and its
key. With ``favour_rare``, its sampling key is ``-log(u) * f`` where ``f`` is the pool
frequency of its rarest (non-ignored) label, so a candidate with a label seen 10 times comes
before one whose rarest label is seen 1,000 times about 100 times as often (weighted sampling
without replacement, Efraimidis–Spirakis). Before that order, a *coverage* pass takes, for
each label from the rarest up, the first candidate that carries it, so every label that can
appear does.

**Quotas.** With a mix (shares of easy/medium/hard that sum to 1) and a supply ``s_b`` per
bucket:

* ``shrink`` (default): the largest total ``N <= total`` for which every bucket can give
  ``N * share``: ``N = min(s_b / share_b)``. A bucket with a share but no supply at all cannot
  be met; the mix is renormalised over the others and the report says so;
* ``fill``: ``N = total`` (or the whole supply); short buckets give all they have, and the
  rest is shared by the others in proportion to their shares.

Quotas are ``N * share`` rounded by largest remainder, so the mix is met to within one sample
per bucket.

**Greedy pass.** Candidates in order are kept while their bucket has room and none of their
labels is at ``max_per_label``; otherwise dropped with ``difficulty quota`` or ``label cap``.
When caps leave a bucket short under ``shrink``, ``N`` is lowered and the pass repeated, so
the mix still holds; the report gives targets, shares before and after, and whether every
bucket is within ``tolerance``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xxhash

from siqkit.curate import reasons as R
from siqkit.curate.config import BUCKETS, SelectionConfig


@dataclass
class Selection:
    kept: np.ndarray  # bool per candidate
    reason: list[str | None]  # drop reason per candidate
    detail: list[str | None]
    rank: np.ndarray  # position in selection order (rare labels first), per candidate
    report: dict = field(default_factory=dict)


def uniform(seed: int, keys: list[str]) -> np.ndarray:
    """A number in (0, 1) per key, from the seed and the key alone."""
    h = np.fromiter((xxhash.xxh64_intdigest(k.encode(), seed=seed & 0xFFFFFFFFFFFFFFFF) for k in keys),
                    dtype=np.uint64, count=len(keys))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def quotas(supply: dict[str, int], shares: dict[str, float], total: int | None,
           mode: str) -> tuple[dict[str, int], list[str]]:
    """Per-bucket quotas and notes on what the supply could not give (see module docstring)."""
    notes: list[str] = []
    wanted = {b: s for b, s in shares.items() if s > 0}
    empty = [b for b in wanted if supply.get(b, 0) == 0]
    if empty:
        notes.append(f"no {', '.join(empty)} samples to select; the mix cannot be met for "
                     f"{'it' if len(empty) == 1 else 'them'}")
    live = {b: s for b, s in wanted.items() if b not in empty}
    if not live:
        return {b: 0 for b in BUCKETS}, notes
    norm = sum(live.values())
    live = {b: s / norm for b, s in live.items()}
    have = sum(supply.get(b, 0) for b in live)
    if mode == "shrink":
        n = min(math.floor(supply[b] / s + 1e-9) for b, s in live.items())
        limit = min(live, key=lambda b: supply[b] / live[b])
        if total is not None and n < total:
            notes.append(f"supply allows {n:,} of the {total:,} requested at this mix "
                         f"({limit}: {supply[limit]:,} available for a {live[limit]:.0%} share)")
        n = n if total is None else min(n, total)
        return _largest_remainder(n, live), notes
    n = have if total is None else min(total, have)
    if total is not None and total > have:
        notes.append(f"only {have:,} samples in the mix's buckets, fewer than the {total:,} requested")
    q = {b: 0 for b in live}
    left, open_ = n, dict(live)
    while left > 0 and open_:  # water-filling: short buckets give all they have
        norm = sum(open_.values())
        share = _largest_remainder(left, {b: s / norm for b, s in open_.items()})
        full = [b for b in open_ if q[b] + share[b] >= supply[b]]
        if not full:
            for b in open_:
                q[b] += share[b]
            break
        for b in full:
            left -= supply[b] - q[b]
            q[b] = supply[b]
            del open_[b]
            notes.append(f"{b}: all {supply[b]:,} available taken, short of its share; the others fill in")
    return {b: q.get(b, 0) for b in BUCKETS}, notes


def _largest_remainder(n: int, shares: dict[str, float]) -> dict[str, int]:
    raw = {b: n * s for b, s in shares.items()}
    q = {b: math.floor(v + 1e-9) for b, v in raw.items()}
    for b in sorted(raw, key=lambda b: (-(raw[b] - q[b]), BUCKETS.index(b)))[: n - sum(q.values())]:
        q[b] += 1
    return {b: q.get(b, 0) for b in BUCKETS}


def select(keys: list[str], buckets: list[str | None], labels: list[list[str]], cfg: SelectionConfig,
           seed: int) -> Selection:
    """Choose the candidates to keep (see the module docstring)."""
    n = len(keys)
    dcfg, lcfg = cfg.difficulty, cfg.labels
    ignore = set(lcfg.ignore)
    labs = [[x for x in dict.fromkeys(ls or []) if x not in ignore] for ls in labels]
    freq: dict[str, int] = {}
    for ls in labs:
        for x in ls:
            freq[x] = freq.get(x, 0) + 1
    order = _order(keys, labs, freq, lcfg.favour_rare, seed)
    shares = dcfg.targets()
    reason: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    unknown = [b not in BUCKETS for b in buckets]
    if shares is not None and dcfg.unknown == "drop":
        for i in np.flatnonzero(unknown):
            reason[i], detail[i] = R.NO_DIFFICULTY, "the mix needs a difficulty (annotate with gold or a judge)"
    supply = {b: sum(1 for x, r in zip(buckets, reason) if x == b and r is None) for b in BUCKETS}
    notes: list[str] = []
    quota: dict[str, int | None]
    if shares is not None:
        q, notes = quotas(supply, shares, dcfg.total, dcfg.on_shortfall)
        quota = dict(q)
    else:
        quota = {b: None for b in BUCKETS}
    for _ in range(8):  # shrink again while label caps leave a bucket short
        kept, got, why = _greedy(order, buckets, labs, reason, quota, dcfg.total if shares is None else None,
                                 lcfg.max_per_label)
        short = [b for b in BUCKETS if quota.get(b) and got[b] < quota[b]]
        if not (short and shares is not None and dcfg.on_shortfall == "shrink"):
            break
        live = {b: s for b, s in shares.items() if s > 0 and supply[b] > 0}
        norm = sum(live.values())
        new_n = min(math.floor(got[b] / (live[b] / norm) + 1e-9) for b in live)
        notes.append(f"label caps left {', '.join(short)} short; total lowered to {new_n:,} to keep the mix")
        quota = dict(_largest_remainder(new_n, {b: s / norm for b, s in live.items()}))
    for i in range(n):
        if reason[i] is None and not kept[i]:
            reason[i], detail[i] = why[i]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    report = _report(buckets, labs, kept, reason, shares, quota, supply, dcfg.tolerance, notes)
    return Selection(kept, reason, detail, rank, report)


def _order(keys, labs, freq, favour_rare: bool, seed: int) -> np.ndarray:
    u = uniform(seed, keys)
    if not favour_rare or not freq:
        return np.argsort(-u, kind="stable")
    common = max(freq.values())
    rarest = np.array([min((freq[x] for x in ls), default=common) for ls in labs], dtype=np.float64)
    order = list(np.lexsort((np.arange(len(keys)), -np.log(u) * rarest)))
    first: list[int] = []
    taken: set[int] = set()
    covered: set[str] = set()
    by_label: dict[str, int] = {}
    for i in order:  # the first candidate, in sampling order, carrying each label
        for x in labs[i]:
            by_label.setdefault(x, i)
    for x in sorted(freq, key=lambda x: (freq[x], x)):
        i = by_label[x]
        if x not in covered and i not in taken:
            first.append(i)
            taken.add(i)
            covered.update(labs[i])
    return np.array(first + [i for i in order if i not in taken], dtype=np.int64)


def _greedy(order, buckets, labs, reason, quota, total, cap):
    n = len(buckets)
    kept = np.zeros(n, dtype=bool)
    why: list[tuple[str, str] | None] = [None] * n
    got = {b: 0 for b in BUCKETS}
    count: dict[str, int] = {}
    taken = 0
    for i in order:
        if reason[i] is not None:
            continue
        b = buckets[i]
        if b in BUCKETS and quota.get(b) is not None and got[b] >= quota[b]:
            why[i] = (R.DIFFICULTY_QUOTA, f"{b} quota of {quota[b]:,} filled")
            continue
        if total is not None and taken >= total:
            why[i] = (R.TOTAL_REACHED, f"difficulty.total of {total:,} filled")
            continue
        full = next((x for x in labs[i] if cap is not None and count.get(x, 0) >= cap), None)
        if full is not None:
            why[i] = (R.LABEL_CAP, f"label '{full}' at its cap of {cap:,}")
            continue
        kept[i] = True
        taken += 1
        if b in got:
            got[b] += 1
        for x in labs[i]:
            count[x] = count.get(x, 0) + 1
    return kept, got, why


def _report(buckets, labs, kept, reason, shares, quota, supply, tolerance, notes) -> dict:
    def dist(mask) -> dict:
        c = {b: 0 for b in (*BUCKETS, "unknown")}
        for b, m in zip(buckets, mask):
            if m:
                c[b if b in BUCKETS else "unknown"] += 1
        return c

    def label_counts(mask) -> dict:
        c: dict[str, int] = {}
        for ls, m in zip(labs, mask):
            if m:
                for x in ls:
                    c[x] = c.get(x, 0) + 1
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    before = dist([True] * len(buckets))
    after = dist(kept)
    known = sum(after[b] for b in BUCKETS)
    out = {"before": before, "after": after, "labels_before": label_counts([True] * len(labs)),
           "labels_after": label_counts(kept), "notes": notes}
    out["label_coverage"] = {"before": len(out["labels_before"]), "after": len(out["labels_after"])}
    if shares is not None:
        actual = {b: (after[b] / known if known else 0.0) for b in BUCKETS}
        dev = {b: round(actual[b] - shares[b], 4) for b in BUCKETS}
        met = {b: abs(dev[b]) <= tolerance + 1e-9 for b in BUCKETS}
        out.update(targets={b: round(s, 4) for b, s in shares.items()}, quotas=quota, supply=supply,
                   shares_after={b: round(v, 4) for b, v in actual.items()}, deviation=dev,
                   met=all(met.values()) and known > 0, met_by_bucket=met)
    return out
