"""Shingles, MinHash signatures (bit for bit against datasketch), LSH banding and exact Jaccard."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from siqkit.curate.minhash import (
    MinHasher, Shingler, ShingleSets, band_keys, candidate_pairs, candidate_probability, jaccard, lsh_params,
    shingles, words,
)

TRICKY = [
    "Hello, World! Don't stop.", "", None, "a b c", "   \t\n ", "one two three four five six seven",
    "Ünïcode — “quotes” and\u00a0no-break  Ärger, 3.5 x_y", "\x00nul\x01 ctrl\ttab\nnewline\r\nend",
    "ÉCOLE École école", "日本語 の テキスト です 。 これ は テスト", "emoji 😀 mixed 😀 in text",
    "supercalifragilisticexpialidocious antidisestablishmentarianism x", "İstanbul ΣΊΣΥΦΟΣ straße",
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = ["alpha", "Beta,", "gamma.", "delta!", "ÉPSILON", "zeta", "eta", "thêta", "iota", "kappa",
             "lambdaaaaaaaaaaaaaaaa", "mu", "nu", "xi;", "omicron", "pi", "日本", "😀", "don't", "x_y"]
    return [" ".join(rng.choices(vocab, k=rng.randint(0, 14))) for _ in range(n)] + TRICKY


def test_words_rule():
    assert words("Hello, World! Don't stop.") == ["hello", "world", "dont", "stop"]
    assert words("3.5 x_y a-b") == ["35", "xy", "ab"]
    assert words(None) == [] and words(" \n\t") == []
    assert words("Ünïcode “quotes”\u00a0nbsp") == ["ünïcode", "quotes", "nbsp"]
    assert shingles("a b c", 5) == {("a", "b", "c")}
    assert len(shingles("one two three four five six seven", 5)) == 3
    assert shingles("", 5) == set()


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_bulk_shingles_match_the_reference_rule(n):
    """Same word counts, same number of distinct shingles, and one hash per distinct shingle."""
    texts = random_texts(1500)
    sh = Shingler(n)
    wh, woff = sh.word_hashes(texts)
    assert np.diff(woff).tolist() == [len(words(t)) for t in texts]
    h, off = sh.hashes(texts)
    seen: dict[tuple, int] = {}
    for i, t in enumerate(texts):
        w = words(t)
        wins = [tuple(w[j: j + n]) for j in range(len(w) - n + 1)] if len(w) >= n else ([tuple(w)] if w else [])
        got = h[off[i]: off[i + 1]].tolist()
        assert len(got) == len(wins)
        for win, value in zip(wins, got):
            assert seen.setdefault(win, value) == value  # same shingle, same hash, in any text
    assert len(set(seen.values())) == len(seen)  # no collisions among these


def test_batching_does_not_change_hashes():
    texts = random_texts(700, seed=3)
    sh = Shingler(5)
    whole, off = sh.hashes(texts)
    parts = [sh.hashes(texts[i: i + 37])[0] for i in range(0, len(texts), 37)]
    assert np.array_equal(whole, np.concatenate(parts))


def test_signatures_equal_datasketch_bit_for_bit():
    """Fed our shingle hashes, datasketch's MinHash (default scheme) gives the same values."""
    texts = random_texts(200, seed=5)
    h, off = Shingler(5).hashes(texts)
    for num_perm, seed in ((128, 1), (64, 7)):
        sig = MinHasher(num_perm, seed).signatures(h, off)
        for i in range(len(texts)):
            m = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
            m.update_batch(h[off[i]: off[i + 1]].tolist())
            assert np.array_equal(m.hashvalues, sig[i]), i


def test_estimates_track_exact_jaccard():
    rng = random.Random(1)
    base = [f"w{rng.randint(0, 5000)}" for _ in range(400)]
    texts, exact = [], []
    for rate in (0.0, 0.01, 0.03, 0.1, 0.3):
        other = list(base)
        for _ in range(int(rate * len(base))):
            other[rng.randrange(len(other))] = f"z{rng.randint(0, 10**6)}"
        texts.append(" ".join(other))
        exact.append(jaccard(shingles(" ".join(base)), shingles(texts[-1])))
    h, off = Shingler(5).hashes([" ".join(base)] + texts)
    sig = MinHasher(256).signatures(h, off)
    est = (sig[1:] == sig[0]).mean(axis=1)
    assert np.all(np.abs(est - np.array(exact)) < 0.1)


def test_lsh_params_meet_the_recall_target():
    for t in (0.5, 0.7, 0.8, 0.9):
        b, r = lsh_params(t, 128)
        assert b * r <= 128
        assert candidate_probability(t, b, r) >= 0.995
        # one more row per band would miss the target: this is the steepest banding
        assert candidate_probability(t, 128 // (r + 1), r + 1) < 0.995
    assert lsh_params(0.8, 128) == (21, 6)


def test_candidate_pairs_match_datasketch_lsh():
    texts = random_texts(400, seed=9)
    texts += [t + " extra" for t in texts[:60]]  # near copies
    h, off = Shingler(5).hashes(texts)
    sig = MinHasher(128).signatures(h, off)
    b, r = 16, 8
    ours = {tuple(p) for p in candidate_pairs(band_keys(sig, b, r), np.diff(off) > 0, max_bucket=10**6).tolist()}
    lsh = MinHashLSH(num_perm=128, params=(b, r))
    mh = {}
    for i in range(len(texts)):
        if off[i + 1] > off[i]:
            mh[i] = LeanMinHash(seed=1, hashvalues=sig[i], scheme="affine32")
            lsh.insert(i, mh[i])
    theirs = {(min(i, j), max(i, j)) for i in mh for j in lsh.query(mh[i]) if i != j}
    assert ours == theirs and len(ours) >= 60


def test_large_buckets_give_star_edges():
    keys = np.zeros((100, 1), dtype=np.uint64)  # one bucket of 100
    pairs = candidate_pairs(keys, max_bucket=10)
    assert len(pairs) == 99 and set(pairs[:, 0]) == {0}
    assert len(candidate_pairs(keys, max_bucket=100)) == 100 * 99 // 2


def test_exact_jaccard_of_pairs():
    texts = random_texts(300, seed=11)
    h, off = Shingler(3).hashes(texts)
    docs = np.arange(len(texts))
    sets = ShingleSets.build([(docs[:100], h[: off[100]], off[:101]),
                              (docs[100:], h[off[100]:], off[100:] - off[100])])
    rng = np.random.default_rng(0)
    pairs = np.sort(rng.integers(0, len(texts), (500, 2)), axis=1)
    got = sets.jaccard(pairs)
    for (i, j), s in zip(pairs, got):
        want = jaccard(shingles(texts[i], 3), shingles(texts[j], 3))
        assert s == pytest.approx(want), (texts[i], texts[j])
