"""Near-duplicate detection: siqkit's dedup against datasketch (and datatrove, if installed).

Generates a corpus of ``--docs`` documents of 80-400 words (pseudo-words with Zipf-like
frequencies, some capitals and punctuation) in which about ``--dup-fraction`` of the
documents belong to known near-duplicate clusters of 2-5 members: edited copies of one base
document with 0-15% of their words substituted, deleted or inserted (and, for 0%, only case
and punctuation changed). Ground truth is the *exact* Jaccard similarity of word 5-gram sets
(lowercased, punctuation deleted), computed here with plain Python sets by an independent
normaliser, for every pair inside a cluster; a reported pair outside the clusters is checked
exactly too.

Each method runs in its own fresh process (so peak RSS is its own) on the same texts, with
the same ``num_perm`` and the same LSH banding (``bands x rows`` from siqkit's banding rule):

- ``siqkit``: :func:`siqkit.curate.dedup.find_duplicates` on the texts in memory (exact
  copies, MinHash, LSH, exact verification of candidates, clusters);
- ``siqkit-cli``: ``siqkit dedup`` end to end on the corpus Parquet file (reads, writes);
- ``datasketch``: its fastest path: Python shingling, ``MinHash.bulk`` with xxhash,
  ``LeanMinHash``, an ``insertion_session`` into ``MinHashLSH(params=(b, r))``, one query per
  document, and pairs kept when their estimated Jaccard reaches the threshold;
- ``datasketch-plain``: the per-document loop (``MinHash()``, ``update`` per shingle, default
  SHA-1, ``insert``, ``query``) on the first ``--plain-docs`` documents only (docs/s only);
- ``datatrove``: its MinHash signature, buckets and cluster steps on local disk, with a
  whitespace word tokenizer (to need no NLTK) and its xxhash helpers wrapped to encode text
  (xxhash 4 takes bytes only); its reported pairs are its ``.dups`` files.

docs/s is documents over the wall time of the dedup itself (texts already in memory, except
for ``siqkit-cli``, which reads and writes Parquet); peak RSS is the process's high-water
mark (``VmHWM``), the corpus in memory included (``corpus_rss_mb`` says how much that is).

    python benchmarks/dedup.py                 # 200,000 documents (a few minutes on 2 cores)
    python benchmarks/dedup.py --docs 20000 --methods siqkit,datasketch
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("siqkit", "siqkit-cli", "datasketch", "datasketch-plain", "datatrove")
EDIT_RATES = (0.0, 0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.15)


# ----------------------------------------------------------------------------- corpus


def make_corpus(n_docs: int, dup_fraction: float, seed: int) -> tuple[list[str], np.ndarray]:
    """(texts, cluster id per text: -1 for a unique document)."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    lengths = rng.integers(2, 11, size=30000)
    raw = letters[rng.integers(0, 26, size=int(lengths.sum()))].tobytes().decode()
    cuts = np.concatenate([[0], np.cumsum(lengths)])
    vocab = [raw[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    cdf = np.cumsum(1.0 / (np.arange(len(vocab)) + 10.0))
    cdf /= cdf[-1]

    def draw(k: int) -> list[str]:  # k words with Zipf-like frequencies
        return [vocab[i] for i in np.searchsorted(cdf, rng.random(k)).tolist()]

    cluster = np.full(n_docs, -1, dtype=np.int64)
    docs: list[list[str] | None] = [None] * n_docs
    n_dup = int(n_docs * dup_fraction)
    i, cid = 0, 0
    while i < n_dup:
        k = int(min(rng.integers(2, 6), n_docs - i))
        base = draw(int(rng.integers(80, 401)))
        docs[i] = base
        for j in range(1, k):
            docs[i + j] = _edit(base, float(rng.choice(EDIT_RATES)), rng, draw)
        cluster[i: i + k] = cid
        i += k
        cid += 1
    for j in range(i, n_docs):
        docs[j] = draw(int(rng.integers(80, 401)))
    order = rng.permutation(n_docs)  # clusters scattered through the file
    texts = [_render(docs[j], rng) for j in order]
    return texts, cluster[order]


def _edit(words: list[str], rate: float, rng, draw) -> list[str]:
    out = list(words)
    for _ in range(int(round(rate * len(words)))):
        pos = int(rng.integers(0, len(out)))
        op = rng.integers(0, 3)
        new = draw(1)[0]
        if op == 0:
            out[pos] = new
        elif op == 1 and len(out) > 80:
            del out[pos]
        else:
            out.insert(pos, new)
    return out


def _render(words: list[str], rng) -> str:
    """Sentences: a capital every ~24 words, a period or comma now and then."""
    marks = rng.integers(0, 24, size=len(words))
    out = [w.capitalize() if m == 0 else w + "." if m == 1 else w + "," if m == 2 else w
           for w, m in zip(words, marks)]
    return " ".join(out)


_PUNCT = re.compile(r"[^\w\s]")


def ref_shingles(text: str, n: int) -> set:
    words = _PUNCT.sub("", text.lower()).split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return set(zip(*(words[i:] for i in range(n))))


def ground_truth(texts: list[str], cluster: np.ndarray, n: int) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair inside a known cluster."""
    members: dict[int, list[int]] = {}
    for i, c in enumerate(cluster):
        if c >= 0:
            members.setdefault(int(c), []).append(i)
    truth = {}
    for idx in members.values():
        sets = {i: ref_shingles(texts[i], n) for i in idx}
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                x, y = sets[idx[a]], sets[idx[b]]
                truth[(idx[a], idx[b])] = len(x & y) / len(x | y)
    return truth


# ---------------------------------------------------------------------------- methods


def run_siqkit(texts, args, bands, rows):
    from siqkit.curate.dedup import DedupSettings, find_duplicates

    s = DedupSettings(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram)
    assert s.banding() == (bands, rows)
    bs = s.batch_size
    res = find_duplicates(lambda: (texts[i: i + bs] for i in range(0, len(texts), bs)), s)
    return res.all_pairs(), len(texts), {"removed": int((~res.keep).sum()),
                                               "candidate_pairs": len(res.pairs)}


def run_siqkit_cli(texts, args, bands, rows):
    from siqkit.curate.commands import dedup_command

    out = Path(args.workdir) / "cli_out.parquet"
    counts = dedup_command(Path(args.workdir) / "corpus.parquet", out, "text", threshold=args.threshold,
                           num_perm=args.num_perm, ngram=args.ngram, echo=lambda *_: None)
    return None, len(texts), {"removed": counts["removed"]}


def _shingle_bytes(text: str, n: int) -> list[bytes]:
    return [" ".join(s).encode() for s in ref_shingles(text, n)]


def run_datasketch(texts, args, bands, rows):
    import xxhash
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    sets = [_shingle_bytes(t, args.ngram) for t in texts]
    mhs = [LeanMinHash(m) for m in MinHash.bulk(sets, num_perm=args.num_perm, hashfunc=xxhash.xxh32_intdigest)]
    lsh = MinHashLSH(num_perm=args.num_perm, params=(bands, rows))
    with lsh.insertion_session() as session:
        for i, m in enumerate(mhs):
            if sets[i]:
                session.insert(i, m, check_duplication=False)
    pairs = []
    for i, m in enumerate(mhs):
        if not sets[i]:
            continue
        for j in lsh.query(m):
            if j > i and m.jaccard(mhs[j]) >= args.threshold:
                pairs.append((i, j))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), len(texts), {}


def run_datasketch_plain(texts, args, bands, rows):
    from datasketch import MinHash, MinHashLSH

    texts = texts[: args.plain_docs]
    lsh = MinHashLSH(num_perm=args.num_perm, params=(bands, rows))
    mhs = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=args.num_perm)
        for s in _shingle_bytes(t, args.ngram):
            m.update(s)
        lsh.insert(i, m)
        mhs.append(m)
    for m in mhs:
        lsh.query(m)
    return None, len(texts), {}


def run_datatrove(texts, args, bands, rows):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupSignature,
    )
    import datatrove.utils.hashes.xxhash as dt_xxhash
    import xxhash
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    # xxhash 4 hashes bytes only; datatrove 0.10 passes str (it was written for xxhash 3)
    dt_xxhash.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode() if isinstance(d, str) else d)
    dt_xxhash.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode() if isinstance(d, str) else d)

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    root = Path(tempfile.mkdtemp(dir=args.workdir))
    cfg = MinhashConfig(n_grams=args.ngram, num_buckets=bands, hashes_per_bucket=rows,
                        hash_config=HashConfig(precision=32))
    sig = MinhashDedupSignature(output_folder=str(root / "sigs"), config=cfg, language=Whitespace())
    sig.run((Document(text=t, id=str(i)) for i, t in enumerate(texts)), rank=0, world_size=1)
    for b in range(bands):
        MinhashDedupBuckets(input_folder=str(root / "sigs"), output_folder=str(root / "buckets"),
                            config=cfg).run(None, rank=b, world_size=bands)
    MinhashDedupCluster(input_folder=str(root / "buckets"), output_folder=str(root / "remove"),
                        config=cfg).run()
    pairs = []
    for f in sorted((root / "buckets").glob("*.dups")):
        raw = np.fromfile(f, dtype=np.uint32).reshape(-1, 4)
        pairs.append(np.sort(raw[:, [1, 3]].astype(np.int64), axis=1))
    removed = sum(f.stat().st_size // 4 for f in (root / "remove").glob("*.remove"))
    pairs = np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), np.int64)
    return pairs, len(texts), {"removed": int(removed)}


RUNNERS = {"siqkit": run_siqkit, "siqkit-cli": run_siqkit_cli, "datasketch": run_datasketch,
           "datasketch-plain": run_datasketch_plain, "datatrove": run_datatrove}


def worker(method: str, args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts: list[str] = []
    if method != "siqkit-cli":  # the command reads the file itself
        for batch in pq.ParquetFile(Path(args.workdir) / "corpus.parquet").iter_batches(8192, columns=["text"]):
            texts += batch.column(0).to_pylist()
    else:
        texts = [None] * pq.ParquetFile(Path(args.workdir) / "corpus.parquet").metadata.num_rows
    pa.default_memory_pool().release_unused()
    for module in ("siqkit.curate.dedup", "siqkit.curate.commands", "datasketch", "xxhash",
                   "datatrove.pipeline.dedup.minhash"):
        try:  # imports are not part of the timing
            importlib.import_module(module)
        except ImportError:
            pass
    base_rss = _rss_mb()
    bands, rows = json.loads((Path(args.workdir) / "banding.json").read_text())
    t0 = time.perf_counter()
    pairs, n, extra = RUNNERS[method](texts, args, bands, rows)
    seconds = time.perf_counter() - t0
    if pairs is not None:
        np.save(Path(args.workdir) / f"pairs-{method}.npy", pairs)
    peak = _status_mb("VmHWM")  # the high-water mark of this process image (ru_maxrss would
    # also count the parent's pages, inherited through fork before exec)
    print(json.dumps({"method": method, "docs": n, "seconds": seconds, "docs_per_s": n / seconds,
                      "peak_rss_mb": peak, "corpus_rss_mb": base_rss, "has_pairs": pairs is not None, **extra}))


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------- main


def score(pairs: np.ndarray, truth: dict, texts: list[str], threshold: float, n: int) -> dict:
    reported = {(int(a), int(b)) for a, b in pairs}
    true = {p for p, s in truth.items() if s >= threshold}
    good = 0
    for p in reported:
        s = truth.get(p)
        if s is None:  # outside the known clusters: check it exactly
            x, y = ref_shingles(texts[p[0]], n), ref_shingles(texts[p[1]], n)
            s = len(x & y) / len(x | y) if x | y else 1.0
        good += s >= threshold
    return {"reported_pairs": len(reported), "true_pairs": len(true),
            "precision": good / len(reported) if reported else 1.0,
            "recall": len(reported & true) / len(true) if true else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--dup-fraction", type=float, default=0.3)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--plain-docs", type=int, default=3000)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="keep the corpus and outputs here (default: a temp folder)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args)

    from siqkit.curate.minhash import lsh_params

    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    args.workdir = args.workdir or tmp.name
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    texts, cluster = make_corpus(args.docs, args.dup_fraction, args.seed)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": np.arange(len(texts)), "text": texts, "cluster": cluster}),
                   Path(args.workdir) / "corpus.parquet", row_group_size=16384)
    bands, rows = lsh_params(args.threshold, args.num_perm)
    (Path(args.workdir) / "banding.json").write_text(json.dumps([bands, rows]))
    truth = ground_truth(texts, cluster, args.ngram)
    sims = np.array(list(truth.values()))
    print(f"corpus: {len(texts):,} documents, {int((cluster >= 0).sum()):,} in {cluster.max() + 1:,} clusters, "
          f"{len(truth):,} in-cluster pairs ({int((sims >= args.threshold).sum()):,} with Jaccard >= "
          f"{args.threshold:g}); built in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"num_perm {args.num_perm}, word {args.ngram}-grams, LSH {bands} bands x {rows} rows", flush=True)
    results = []
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--worker", method, "--workdir", args.workdir,
               "--threshold", str(args.threshold), "--num-perm", str(args.num_perm),
               "--ngram", str(args.ngram), "--plain-docs", str(args.plain_docs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{method}: skipped ({tail})", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if r.pop("has_pairs"):
            r.update(score(np.load(Path(args.workdir) / f"pairs-{method}.npy"), truth, texts,
                           args.threshold, args.ngram))
        results.append(r)
        print(json.dumps(r), flush=True)
    fastest = next((r for r in results if r["method"] == "datasketch"), None)
    print("\n| method | docs | docs/s | vs datasketch bulk | peak RSS (MB) | of which corpus (MB) | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = f"{r['docs_per_s'] / fastest['docs_per_s']:.1f}x" if fastest else "-"
        prec = f"{r['precision']:.4f}" if "precision" in r else "-"
        rec = f"{r['recall']:.4f}" if "recall" in r else "-"
        print(f"| {r['method']} | {r['docs']:,} | {r['docs_per_s']:,.0f} | {ratio} | {r['peak_rss_mb']:,.0f} "
              f"| {r['corpus_rss_mb']:,.0f} | {prec} | {rec} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
