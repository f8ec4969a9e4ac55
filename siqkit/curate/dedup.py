"""Duplicate finding on a text column: exact copies first, then MinHash + LSH near-duplicates.

:func:`find_duplicates` reads the texts twice, in batches, through a callable that returns a
fresh iterator of batches each time, so memory stays bounded by the batch size plus a few
numbers per document:

1. **pass 1**: per batch, word hashes, an exact fingerprint of the word sequence, shingle
   hashes, MinHash signatures and LSH band keys (signatures are dropped once banded);
2. **exact duplicates**: documents with the same fingerprint (and the same ``group``) are one
   cluster;
3. **candidates**: pairs of exact-cluster representatives that share a band
   (:func:`~siqkit.curate.minhash.candidate_pairs`);
4. **pass 2**: shingle sets of the candidate documents only, and the *exact* Jaccard
   similarity of every candidate pair, so a reported pair is never a MinHash estimate;
5. **clusters**: connected components of exact-copy links and pairs at or above the
   threshold; each cluster keeps its member with the lowest ``priority`` (then the lowest
   index), and every member records the kept one as its cluster id.

``group`` (one integer per document) confines duplicates to documents of the same group:
the curate stage uses it so that questions only match questions about the same images, and
reasoning only matches reasoning for the same problem. Documents without words are never
duplicates of anything.

:class:`DedupResult` also answers "what would another threshold remove?", from the same
candidate pairs: :meth:`DedupResult.threshold_table` and :meth:`DedupResult.histogram`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from siqkit.curate.minhash import (
    U64, MinHasher, Shingler, ShingleSets, band_keys, candidate_pairs, candidate_probability, fmix64,
    lsh_params, powers,
)

Batches = Callable[[], Iterable[Sequence[str | None]]]
REPORT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class DedupSettings:
    """How near-duplicates are found; the defaults are those of ``siqkit dedup``."""

    threshold: float = 0.8  # exact Jaccard of word n-gram sets at or above which two texts are duplicates
    num_perm: int = 128
    ngram: int = 5
    seed: int = 1  # MinHash permutations (datasketch's default seed)
    min_recall: float = 0.995  # LSH: chance that a pair at the threshold becomes a candidate
    lsh_threshold: float | None = None  # design the banding for this similarity instead (to see lower ones)
    max_bucket: int = 64  # LSH buckets larger than this give star edges instead of all pairs
    batch_size: int = 2048

    def banding(self) -> tuple[int, int]:
        return lsh_params(self.lsh_threshold or self.threshold, self.num_perm, self.min_recall)


@dataclass
class DedupResult:
    """Clusters and the evidence behind them; arrays have one entry per document."""

    settings: DedupSettings
    bands: int
    rows: int
    words: np.ndarray  # words per document
    exact_of: np.ndarray  # representative of each document's exact-copy cluster (itself if none)
    pairs: np.ndarray  # (m, 2) candidate pairs of exact representatives
    similarity: np.ndarray  # (m,) exact Jaccard of each pair
    cluster: np.ndarray  # kept member of each document's cluster (itself when kept)
    stats: dict = field(default_factory=dict)

    @property
    def keep(self) -> np.ndarray:
        return self.cluster == np.arange(len(self.cluster))

    @property
    def exact_removed(self) -> int:
        return int((self.exact_of != np.arange(len(self.exact_of))).sum())

    def duplicate_pairs(self, threshold: float | None = None) -> np.ndarray:
        """Candidate pairs whose exact similarity is at or above the threshold."""
        t = self.settings.threshold if threshold is None else threshold
        return self.pairs[self.similarity >= t]

    def all_pairs(self, threshold: float | None = None) -> np.ndarray:
        """Every pair of documents found at or above the threshold: exact copies with each
        other, and each near pair expanded to the copies of both its ends."""
        n = len(self.exact_of)
        order = np.argsort(self.exact_of, kind="stable")
        first = np.searchsorted(self.exact_of[order], np.arange(n))
        count = np.bincount(self.exact_of, minlength=n)

        def members(r: int) -> np.ndarray:
            return order[first[r]: first[r] + count[r]]

        out = []
        for r in np.flatnonzero(count > 1):
            m = members(r)
            i, j = np.triu_indices(len(m), 1)
            out.append(np.stack([m[i], m[j]], axis=1))
        near = self.duplicate_pairs(threshold)
        single = (count[near[:, 0]] == 1) & (count[near[:, 1]] == 1)
        out.append(near[single])
        for a, b in near[~single]:
            ma, mb = members(a), members(b)
            out.append(np.stack(np.meshgrid(ma, mb, indexing="ij"), axis=-1).reshape(-1, 2))
        pairs = np.sort(np.concatenate(out), axis=1) if out else np.zeros((0, 2), np.int64)
        return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]

    def removed_at(self, threshold: float) -> int:
        """Documents removed if the same candidates were clustered at this threshold."""
        return len(self.cluster) - _components(len(self.cluster), self.exact_of,
                                               self.duplicate_pairs(threshold))[0]

    def threshold_table(self) -> list[dict]:
        """For each report threshold and the chosen one: documents removed, and how likely
        the banding finds a pair of exactly that similarity (removals below the design
        threshold are lower bounds)."""
        ts = sorted({*REPORT_THRESHOLDS, self.settings.threshold})
        return [{"threshold": t, "removed": self.removed_at(t), "near_pairs": int((self.similarity >= t).sum()),
                 "lsh_finds": round(candidate_probability(t, self.bands, self.rows), 4),
                 "chosen": t == self.settings.threshold} for t in ts]

    def histogram(self, bins: int = 10) -> list[dict]:
        """Exact similarity of candidate pairs in ``bins`` equal bins, plus identical sets."""
        s = self.similarity
        edges = np.linspace(0.0, 1.0, bins + 1)
        counts, _ = np.histogram(s[s < 1.0], bins=edges)
        out = [{"low": round(float(lo), 3), "high": round(float(hi), 3), "pairs": int(n)}
               for lo, hi, n in zip(edges[:-1], edges[1:], counts)]
        out.append({"low": 1.0, "high": 1.0, "pairs": int((s >= 1.0).sum())})
        return out

    def summary(self) -> dict:
        keep = self.keep
        return {
            "documents": len(keep), "kept": int(keep.sum()), "removed": int((~keep).sum()),
            "exact_removed": self.exact_removed, "near_removed": int((~keep).sum()) - self.exact_removed,
            "candidate_pairs": len(self.pairs), "duplicate_pairs": int(len(self.duplicate_pairs())),
            "bands": self.bands, "rows": self.rows, "threshold": self.settings.threshold,
            "num_perm": self.settings.num_perm, "ngram": self.settings.ngram,
            "histogram": self.histogram(), "thresholds": self.threshold_table(), **self.stats,
        }


def find_duplicates(batches: Batches, settings: DedupSettings = DedupSettings(),
                    priority: np.ndarray | None = None, group: np.ndarray | None = None,
                    progress: Callable[[int], None] | None = None) -> DedupResult:
    """Cluster near-duplicate texts (see the module docstring). ``priority``: lower is kept."""
    shingler = Shingler(settings.ngram)
    hasher = MinHasher(settings.num_perm, settings.seed)
    bands, rows = settings.banding()
    fps, nwords, keys = [], [], []
    for texts in batches():  # pass 1
        wh, woff = shingler.word_hashes(texts)
        fps.append(_fingerprints(wh, woff))
        nwords.append(np.diff(woff))
        h, off = shingler.shingles_from_words(wh, woff)
        keys.append(band_keys(hasher.signatures(h, off), bands, rows))
        if progress:
            progress(len(texts))
    n = sum(len(w) for w in nwords)
    words = np.concatenate(nwords) if nwords else np.zeros(0, np.int64)
    fp = np.concatenate(fps) if fps else np.zeros(0, U64)
    key = np.concatenate(keys) if keys else np.zeros((0, bands), U64)
    order = np.arange(n) if priority is None else np.lexsort((np.arange(n), np.asarray(priority)))
    if group is not None:
        g = fmix64(np.asarray(group).astype(U64) + U64(1))
        fp ^= g
        key ^= g[:, None]
    exact_of = _exact_clusters(fp, words, order)
    active = (exact_of == np.arange(n)) & (words > 0)
    pairs = candidate_pairs(key, active, settings.max_bucket)
    del key
    similarity = _verify(batches, shingler, pairs, settings.batch_size)
    dup = pairs[similarity >= settings.threshold]
    _, labels = _components(n, exact_of, dup)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    best = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(best, labels, rank)
    cluster = order[best[labels]] if n else np.zeros(0, np.int64)
    return DedupResult(settings, bands, rows, words, exact_of, pairs, similarity, cluster)


def _fingerprints(wh: np.ndarray, woff: np.ndarray) -> np.ndarray:
    """uint64 per document: sum(word_hash_i * R**i) over its words, i counted from 0 in the
    document (a running sum over the batch, shifted by R**-start). Two documents are exact
    copies when this and their word counts agree; a chance collision needs about 2**32
    documents."""
    pw, inv = powers(len(wh) + 2)
    cs = np.zeros(len(wh) + 1, dtype=U64)
    np.cumsum(wh * pw[1: len(wh) + 1], out=cs[1:])
    return (cs[woff[1:]] - cs[woff[:-1]]) * inv[woff[:-1] + 1]


def _exact_clusters(fp: np.ndarray, words: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For each document, the best-ranked document with the same fingerprint (itself if unique)."""
    n = len(fp)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    srt = np.lexsort((rank, words, fp))
    f, w = fp[srt], words[srt]
    new = np.ones(n, dtype=bool)
    new[1:] = (f[1:] != f[:-1]) | (w[1:] != w[:-1])
    new |= w == 0  # texts without words are never copies of each other
    head = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    out = np.empty(n, dtype=np.int64)
    out[srt] = srt[head]
    return out


def _verify(batches: Batches, shingler: Shingler, pairs: np.ndarray, batch_size: int) -> np.ndarray:
    """Exact Jaccard of each candidate pair, from a second pass over the candidates' texts."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    need = np.unique(pairs)

    def chunks():
        base = 0
        for texts in batches():
            lo, hi = np.searchsorted(need, [base, base + len(texts)])
            if hi > lo:
                local = need[lo:hi] - base
                h, off = shingler.hashes([texts[i] for i in local])
                yield need[lo:hi], h, off
            base += len(texts)

    return ShingleSets.build(chunks()).jaccard(pairs)


def _components(n: int, exact_of: np.ndarray, pairs: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of exact-copy links and the given pairs."""
    src = np.concatenate([np.arange(n), pairs[:, 0]])
    dst = np.concatenate([exact_of, pairs[:, 1]])
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    return connected_components(graph, directed=False)


def format_report(result: DedupResult, what: str = "documents") -> list[str]:
    """Plain lines: counts, the histogram of candidate similarities, and the threshold table."""
    s = result.summary()
    lines = [
        f"{s['documents']:,} {what}: kept {s['kept']:,}, removed {s['removed']:,} (exact copies "
        f"{s['exact_removed']:,}, near-duplicates at Jaccard >= {s['threshold']:g} {s['near_removed']:,})",
        f"MinHash {s['num_perm']} permutations, word {s['ngram']}-grams, LSH {s['bands']} bands x {s['rows']} rows; "
        f"{s['candidate_pairs']:,} candidate pairs checked exactly",
    ]
    hist = result.histogram()
    top = max((h["pairs"] for h in hist), default=0)
    if top:
        lines.append("exact Jaccard of candidate pairs:")
        for h in hist:
            label = "  1.0 (same set)" if h["low"] == 1.0 else f"  {h['low']:.1f}-{h['high']:.1f}       "
            bar = "#" * max(1 if h["pairs"] else 0, round(40 * h["pairs"] / top))
            lines.append(f"{label} {h['pairs']:>9,} {bar}")
    lines.append("threshold  would remove  near pairs  LSH finds a pair at exactly this similarity")
    for row in result.threshold_table():
        mark = "  <- chosen" if row["chosen"] else ""
        floor = "" if row["lsh_finds"] >= result.settings.min_recall - 1e-9 else " (at least)"
        lines.append(f"  {row['threshold']:<8.2f} {row['removed']:>12,}{floor:<11} {row['near_pairs']:>9,}  "
                     f"{row['lsh_finds']:.1%}{mark}")
    return lines
