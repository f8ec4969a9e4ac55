"""Word n-gram shingles, MinHash signatures and LSH bands, vectorised with numpy.

Text to shingles (:func:`words` is the plain-Python statement of the rule; :class:`Shingler`
computes the same thing in bulk):

1. lowercase;
2. delete punctuation, symbols and control characters (Unicode categories P, S and C, other
   than whitespace), so ``don't`` becomes ``dont``;
3. split on whitespace;
4. every run of ``n`` consecutive words is a shingle (``n = 5`` by default); a text with
   fewer than ``n`` words (but at least one) is a single shingle of all its words, and a text
   without words has no shingles.

Each word is hashed from its UTF-8 bytes (read eight at a time, see :func:`_word_hashes`),
each n-gram by a fixed position-weighted sum of its words' hashes finished with the 64-bit
MurmurHash3 mixer and cut to 32 bits.

Signatures follow datasketch's MinHash in its default ``affine32`` scheme: the 32-bit
shingle hash is pre-mixed with the 32-bit MurmurHash3 finalizer, permutation ``k`` maps it to
``a_k * h + b_k mod 2**32`` (``a_k`` odd), with ``a_k, b_k`` drawn exactly as datasketch draws
them from ``numpy.random.RandomState(seed)``, and the signature keeps the minimum of each
permutation. Fed the same shingle hashes, :meth:`MinHasher.signatures` returns datasketch's
hash values bit for bit (the tests check this). Documents are processed in blocks laid out
permutation-major, so one ``numpy.minimum.reduceat`` reduces a whole block.

LSH: ``b`` bands of ``r`` rows; two documents are candidates when all ``r`` values of some
band agree. :func:`lsh_params` picks the steepest banding that still finds a pair at the
threshold with probability ``min_recall``; candidates are then checked exactly, so the
banding trades only speed, not precision.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable, Sequence

import numpy as np

U32 = np.uint32
U64 = np.uint64
MAX32 = np.uint32(0xFFFFFFFF)
BLOCK_SHINGLES = 8192  # shingles per MinHash block: a 128 x 8192 uint32 block is 4 MB

_LOWER = bytes(range(256)).lower()
# ASCII characters deleted before splitting: everything but letters, digits and whitespace.
_ASCII_DELETE = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c).isspace()))
_rng = np.random.default_rng(0x5151)
_POS = _rng.integers(0, 2**63, size=64, dtype=np.uint64) * U64(2) + U64(1)
_LEN = _rng.integers(0, 2**63, size=1, dtype=np.uint64)[0]
_R = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_R_INV = pow(_R, -1, 1 << 64)
_pow_cache: list[np.ndarray] = []
_MASK = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
SUB_BYTES = 1 << 20  # word hashing works on about this many bytes at a time


def powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(R**j, R**-j) modulo 2**64 for j < n, as uint64 (cached, grown by doubling)."""
    if not _pow_cache or len(_pow_cache[0]) < n:
        size = max(n, 1 << 16, 2 * len(_pow_cache[0]) if _pow_cache else 0)
        pw = np.full(size, _R, dtype=U64)
        pw[0] = 1
        inv = np.full(size, _R_INV, dtype=U64)
        inv[0] = 1
        _pow_cache[:] = [np.multiply.accumulate(pw), np.multiply.accumulate(inv)]
    return _pow_cache[0][:n], _pow_cache[1][:n]


class _UnicodeTable(dict):
    """``str.translate`` table for non-ASCII text: drops P/S/C characters, maps spaces to ' '."""

    def __missing__(self, code: int):
        ch = chr(code)
        if ch.isspace():
            value: int | None = 32
        elif unicodedata.category(ch)[0] in "PSC":
            value = None
        else:
            value = code
        self[code] = value
        return value


_UNICODE = _UnicodeTable()


def normalize(text: str) -> str:
    """Lowercased text without punctuation, symbols or control characters (whitespace kept)."""
    text = text.lower()
    if not text.isascii():
        text = text.translate(_UNICODE)
    return text.encode("utf-8", "replace").translate(_LOWER, _ASCII_DELETE).decode("utf-8")


def words(text: str | None) -> list[str]:
    """The words of a text, by the rule in the module docstring (the reference for tests)."""
    return normalize(text or "").split()


def shingles(text: str | None, n: int = 5) -> set[tuple[str, ...]]:
    """The set of word n-grams of a text, by the rule in the module docstring."""
    w = words(text)
    if not w:
        return set()
    if len(w) < n:
        return {tuple(w)}
    return {tuple(w[i: i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection), in place on a uint64 array."""
    h ^= h >> U64(33)
    h *= U64(0xFF51AFD7ED558CCD)
    h ^= h >> U64(33)
    h *= U64(0xC4CEB9FE1A85EC53)
    h ^= h >> U64(33)
    return h


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it to input hashes."""
    h = h ^ (h >> U32(16))
    h *= U32(0x85EBCA6B)
    h ^= h >> U32(13)
    h *= U32(0xC2B2AE35)
    h ^= h >> U32(16)
    return h


def _word_hashes(parts: list[bytes], lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash per word, words per part) of normalised UTF-8 parts.

    A word's bytes are read eight at a time as little-endian integers (unaligned loads from
    a strided view, masked to the word's length), chained through the 64-bit mixer for words
    longer than eight bytes, then mixed with the length.
    """
    doc_start = np.zeros(len(parts), dtype=np.int64)
    np.cumsum(lens[:-1] + 1, out=doc_start[1:])
    joined = b"\n".join(parts) + bytes(8)  # padding: an 8-byte load never runs past the end
    buf = np.frombuffer(joined, dtype=np.uint8)[:-8]
    is_word = buf > 32  # after deletion only word bytes and whitespace remain
    edge = np.empty(len(buf) + 1, dtype=bool)  # word starts and ends: where is_word flips
    edge[0] = is_word[0] if len(buf) else False
    edge[-1] = is_word[-1] if len(buf) else False
    np.not_equal(is_word[1:], is_word[:-1], out=edge[1:-1])
    bounds = np.flatnonzero(edge)
    if len(bounds) == 0:
        return np.zeros(0, dtype=U64), np.zeros(len(parts), dtype=np.int64)
    starts, ends = bounds[0::2], bounds[1::2]
    length = ends - starts
    eight = np.ndarray((len(joined) - 7,), dtype="<u8", buffer=joined, strides=(1,))
    h = eight[starts] & _MASK[np.minimum(length, 8)]
    longer = np.flatnonzero(length > 8)
    k = 1
    while len(longer):
        more = eight[starts[longer] + 8 * k] & _MASK[np.minimum(length[longer] - 8 * k, 8)]
        h[longer] = fmix64(h[longer] + _POS[k % len(_POS)]) ^ more
        k += 1
        longer = longer[length[longer] > 8 * k]
    h += length.astype(U64) * _LEN
    fmix64(h)
    counts = np.diff(np.append(np.searchsorted(starts, doc_start), len(starts)))
    return h, counts


class Shingler:
    """Bulk shingle hashing: texts in, one flat uint32 array and per-document offsets out."""

    def __init__(self, ngram: int = 5):
        if not 1 <= ngram <= len(_POS):
            raise ValueError(f"ngram must be between 1 and {len(_POS)}, got {ngram}")
        self.n = ngram

    def word_hashes(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(uint64 hash per word, int64 offsets of each text's words; len(texts) + 1)."""
        parts = []
        for t in texts:
            if not t:
                parts.append(b"")
                continue
            if not t.isascii():
                t = t.lower().translate(_UNICODE)
            parts.append(t.encode("utf-8", "replace").translate(_LOWER, _ASCII_DELETE))
        lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        ends = np.cumsum(lens + 1)
        hashes, counts = [], []
        i = 0
        while i < len(parts):  # sub-buffers of whole texts, about SUB_BYTES each
            j = int(np.searchsorted(ends, (ends[i - 1] if i else 0) + SUB_BYTES, side="right"))
            j = max(j, i + 1)
            h, c = _word_hashes(parts[i:j], lens[i:j])
            hashes.append(h)
            counts.append(c)
            i = j
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        if counts:
            np.cumsum(np.concatenate(counts), out=offsets[1:])
        return (np.concatenate(hashes) if hashes else np.zeros(0, U64)), offsets

    def hashes(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(uint32 shingle hashes of all texts in order, int64 offsets; len(texts) + 1)."""
        return self.shingles_from_words(*self.word_hashes(texts))

    def shingles_from_words(self, wh: np.ndarray, woff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes from :meth:`word_hashes` output."""
        n = self.n
        ndoc = len(woff) - 1
        counts = np.diff(woff)
        nsh = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
        offsets = np.zeros(ndoc + 1, dtype=np.int64)
        np.cumsum(nsh, out=offsets[1:])
        total = int(offsets[-1])
        if total == 0:
            return np.zeros(0, dtype=U32), offsets
        nw = len(wh)
        out = np.empty(total, dtype=U64)
        short = (counts > 0) & (counts < n)
        if nw >= n:  # every full window of the flat word array, then those inside one text
            full = wh[: nw - n + 1] * _POS[0]
            for j in range(1, n):
                full += wh[j: nw - n + 1 + j] * _POS[j]
            inside = np.ones(nw - n + 1, dtype=bool)
            crossing = (woff[1:, None] - np.arange(1, n)[None, :]).ravel()
            inside[crossing[(crossing >= 0) & (crossing < len(inside))]] = False
            full = full[inside]
            full += U64(n * int(_LEN) % (1 << 64))
        else:
            full = np.zeros(0, dtype=U64)
        if short.any():  # a text of m < n words is one shingle of all m
            docs = np.flatnonzero(short)
            m = counts[docs]
            acc = np.zeros(len(docs), dtype=U64)
            for j in range(n - 1):
                has = m > j
                acc[has] += wh[woff[docs[has]] + j] * _POS[j]
            acc += m.astype(U64) * _LEN
            is_short = np.repeat(short, nsh)
            out[is_short] = acc
            out[~is_short] = full
        else:
            out[:] = full
        fmix64(out)
        return (out >> U64(32)).astype(U32), offsets


class MinHasher:
    """MinHash signatures in datasketch's ``affine32`` scheme (see the module docstring)."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm}")
        self.num_perm = num_perm
        self.seed = seed
        gen = np.random.RandomState(seed)  # the same draws, in the same order, as datasketch
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * U32(2) + U32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        self.a = a[:, None]
        self.b = b[:, None]

    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(documents, num_perm) uint32; a document without shingles gets all 0xFFFFFFFF."""
        ndoc = len(offsets) - 1
        out = np.full((ndoc, self.num_perm), MAX32, dtype=U32)
        x = fmix32(hashes.astype(U32, copy=False))
        sizes = np.diff(offsets)
        docs = np.flatnonzero(sizes)
        ends = offsets[docs + 1]
        buf = np.empty((self.num_perm, BLOCK_SHINGLES), dtype=U32)
        i = 0
        while i < len(docs):
            # a block of whole documents, at least one, about BLOCK_SHINGLES shingles
            lo = offsets[docs[i]]
            j = int(np.searchsorted(ends, lo + BLOCK_SHINGLES, side="right"))
            j = max(j, i + 1)
            block = docs[i:j]
            hi = offsets[block[-1] + 1]
            xs = x[lo:hi]
            m = buf[:, : len(xs)] if len(xs) <= BLOCK_SHINGLES else np.empty((self.num_perm, len(xs)), U32)
            np.multiply(self.a, xs[None, :], out=m)
            m += self.b
            # blocks hold only non-empty documents, laid out contiguously
            out[block] = np.minimum.reduceat(m, offsets[block] - lo, axis=1).T
            i = j
        return out


def lsh_params(threshold: float, num_perm: int, min_recall: float = 0.995) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose banding still finds a pair of similarity
    ``threshold`` with probability ``min_recall`` (fewest false candidates at that recall)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    best = (num_perm, 1)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if b < 1:
            break
        if candidate_probability(threshold, b, r) >= min_recall:
            best = (b, r)
    return best


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that a pair of this Jaccard similarity shares at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64: a 64-bit hash of each band's ``rows`` values."""
    n = len(signatures)
    keys = np.empty((n, bands), dtype=U64)
    for k in range(bands):
        acc = np.full(n, k + 1, dtype=U64)
        acc *= _LEN
        for j in range(rows):
            acc += signatures[:, k * rows + j].astype(U64) * _POS[j % len(_POS)]
        keys[:, k] = fmix64(acc)
    return keys


def candidate_pairs(keys: np.ndarray, active: np.ndarray | None = None, max_bucket: int = 64) -> np.ndarray:
    """Unique (i, j) pairs, i < j, of documents that share a band key; (m, 2) int64.

    A bucket of up to ``max_bucket`` documents gives all its pairs; a larger one gives a star
    (its lowest index paired with each other member), so one huge bucket cannot explode.
    ``active`` (bool per document) leaves the others out.
    """
    n = len(keys)
    idx = np.arange(n) if active is None else np.flatnonzero(active)
    found = []
    for k in range(keys.shape[1]):
        col = keys[idx, k]
        order = np.argsort(col)
        sk, sd = col[order], idx[order]
        new = np.ones(len(sk), dtype=bool)
        new[1:] = sk[1:] != sk[:-1]
        run = np.cumsum(new) - 1
        run_start = np.flatnonzero(new)
        run_len = np.diff(np.append(run_start, len(sk)))[run]
        small = run_len <= max_bucket
        if not small.all():  # star edges from each large bucket's lowest document
            lowest = np.minimum.reduceat(sd, run_start)[run]
            big = ~small & (sd != lowest)
            found.append(np.stack([lowest[big], sd[big]], axis=1))
        members = np.flatnonzero(small & (run_len > 1))
        for d in range(1, max_bucket):
            members = members[members + d < len(sk)]
            members = members[run[members + d] == run[members]]
            if len(members) == 0:
                break
            found.append(np.stack([sd[members], sd[members + d]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    pairs.sort(axis=1)
    code = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([code // n, code % n], axis=1)


class ShingleSets:
    """Sorted, unique shingle hashes of selected documents, for exact Jaccard of pairs."""

    def __init__(self, docs: np.ndarray, hashes: np.ndarray, offsets: np.ndarray):
        self.docs = docs  # sorted document indices
        self.hashes = hashes
        self.offsets = offsets

    @classmethod
    def build(cls, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> "ShingleSets":
        """From (document indices, hashes, offsets) chunks, in increasing document order."""
        docs, hashes, sizes = [], [], []
        for d, h, off in chunks:
            local = np.repeat(np.arange(len(d), dtype=U64), np.diff(off))
            u = np.sort((local << U64(32)) | h.astype(U64))
            if len(u):
                first = np.ones(len(u), dtype=bool)
                first[1:] = u[1:] != u[:-1]
                u = u[first]
            owner = (u >> U64(32)).astype(np.int64)
            docs.append(d)
            hashes.append((u & U64(0xFFFFFFFF)).astype(U32))
            sizes.append(np.bincount(owner, minlength=len(d)))
        if not docs:
            return cls(np.zeros(0, np.int64), np.zeros(0, U32), np.zeros(1, np.int64))
        size = np.concatenate(sizes)
        offsets = np.zeros(len(size) + 1, dtype=np.int64)
        np.cumsum(size, out=offsets[1:])
        return cls(np.concatenate(docs).astype(np.int64), np.concatenate(hashes), offsets)

    def jaccard(self, pairs: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Exact Jaccard similarity of each (i, j) pair of held documents."""
        out = np.empty(len(pairs), dtype=np.float64)
        pos = np.searchsorted(self.docs, pairs)
        for c in range(0, len(pairs), chunk):
            p = pos[c: c + chunk]
            a_keys, a_pair = self._keys(p[:, 0])
            b_keys, _ = self._keys(p[:, 1])
            hit = np.searchsorted(b_keys, a_keys)
            hit[hit == len(b_keys)] = 0
            same = b_keys[hit] == a_keys if len(b_keys) else np.zeros(len(a_keys), bool)
            inter = np.bincount(a_pair[same], minlength=len(p))
            na = self.offsets[p[:, 0] + 1] - self.offsets[p[:, 0]]
            nb = self.offsets[p[:, 1] + 1] - self.offsets[p[:, 1]]
            union = na + nb - inter
            out[c: c + chunk] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        return out

    def _keys(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated hashes of the given held rows, tagged with their pair number (sorted)."""
        starts = self.offsets[rows]
        lens = self.offsets[rows + 1] - starts
        pair = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
        first = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(lens[:-1], out=first[1:])
        take = np.arange(len(pair), dtype=np.int64) - first[pair] + starts[pair]
        keys = (pair.astype(U64) << U64(32)) | self.hashes[take].astype(U64)
        return keys, pair
