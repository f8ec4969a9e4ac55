"""Duplicate finding against exact Jaccard, and ``siqkit dedup`` on JSONL and Parquet files."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from siqkit.curate.commands import DataError, UsageError, dedup_command
from siqkit.curate.dedup import DedupSettings, find_duplicates
from siqkit.curate.minhash import jaccard, shingles

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import dedup as bench  # noqa: E402  (the benchmark's corpus generator)


@pytest.fixture(scope="module")
def corpus():
    texts, cluster = bench.make_corpus(3000, 0.4, seed=1)
    truth = bench.ground_truth(texts, cluster, 5)
    return texts, cluster, truth


def batches_of(texts, size=256):
    return lambda: (texts[i: i + size] for i in range(0, len(texts), size))


def test_finds_every_pair_above_the_threshold_and_only_those(corpus):
    texts, _, truth = corpus
    res = find_duplicates(batches_of(texts), DedupSettings(threshold=0.8))
    found = {tuple(p) for p in res.all_pairs().tolist()}
    true = {p for p, s in truth.items() if s >= 0.8}
    assert true and found == true  # recall and precision 1 on this corpus: candidates are checked exactly
    # every cluster keeps exactly one member, the lowest index (no priority given)
    keep = res.keep
    for c in set(res.cluster.tolist()):
        members = np.flatnonzero(res.cluster == c)
        assert keep[members].sum() == 1 and keep[members.min()]
    assert res.summary()["removed"] == (~keep).sum() == res.removed_at(0.8)


def test_reported_similarities_are_exact(corpus):
    texts, _, _ = corpus
    res = find_duplicates(batches_of(texts), DedupSettings(threshold=0.8))
    for (i, j), s in list(zip(res.pairs.tolist(), res.similarity))[:300]:
        assert s == pytest.approx(jaccard(shingles(texts[i]), shingles(texts[j])))


def test_batch_size_and_threshold_table(corpus):
    texts, _, _ = corpus
    a = find_duplicates(batches_of(texts, 100), DedupSettings(threshold=0.8))
    b = find_duplicates(batches_of(texts, 1000), DedupSettings(threshold=0.8))
    assert np.array_equal(a.cluster, b.cluster)
    table = a.threshold_table()
    removed = [row["removed"] for row in table]
    assert removed == sorted(removed, reverse=True)  # a lower threshold never removes less
    assert [row for row in table if row["chosen"]][0]["threshold"] == 0.8
    hist = a.histogram()
    assert sum(h["pairs"] for h in hist) == len(a.pairs)


def test_exact_copies_priority_groups_and_empty_texts():
    base = "the quick brown fox jumps over the lazy dog by the river at dawn"
    texts = [base, base.upper() + "!!", "", None, "", "something else entirely different from the rest",
             base.replace("dawn", "dusk")]
    res = find_duplicates(batches_of(texts), DedupSettings(threshold=0.5))
    assert res.exact_of[1] == 0 and res.cluster[1] == 0
    assert res.keep[2] and res.keep[3] and res.keep[4]  # texts without words are never duplicates
    assert res.cluster[6] == 0
    # a priority picks the kept member; groups keep texts of different groups apart
    res = find_duplicates(batches_of(texts), DedupSettings(threshold=0.5), priority=np.array([5, 1, 0, 0, 0, 0, 9]))
    assert res.keep[1] and not res.keep[0] and res.cluster[0] == 1
    res = find_duplicates(batches_of(texts), DedupSettings(threshold=0.5), group=np.array([0, 1, 0, 0, 0, 0, 0]))
    assert res.keep[1] and res.keep[0] and res.cluster[6] == 0


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dedup_command_jsonl_and_parquet(tmp_path, corpus):
    texts, _, _ = corpus
    rows = [{"id": i, "text": t, "meta": {"n": i}} for i, t in enumerate(texts[:800])]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    lines: list[str] = []
    counts = dedup_command(src, tmp_path / "out.jsonl", "text", echo=lines.append)
    want = find_duplicates(batches_of(texts[:800]), DedupSettings())
    assert counts["kept"] == int(want.keep.sum()) and counts["removed"] == int((~want.keep).sum())
    kept = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in kept] == np.flatnonzero(want.keep).tolist()
    assert kept[0] == rows[kept[0]["id"]]  # all columns, unchanged
    assert any("exact Jaccard of candidate pairs" in x for x in lines)
    assert any("<- chosen" in x for x in lines)
    # Parquet in, Parquet out, same decision; and JSONL in, Parquet out
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    c2 = dedup_command(tmp_path / "in.parquet", tmp_path / "out.parquet", "text", echo=lambda _: None)
    out = pq.read_table(tmp_path / "out.parquet")
    assert c2["kept"] == counts["kept"] and out.column("id").to_pylist() == [r["id"] for r in kept]
    assert out.schema.names == ["id", "text", "meta"]
    dedup_command(src, tmp_path / "x.parquet", "text", echo=lambda _: None)
    assert pq.read_table(tmp_path / "x.parquet").num_rows == counts["kept"]
    # a dry run writes nothing
    c3 = dedup_command(src, tmp_path / "dry.jsonl", "text", dry_run=True, echo=lambda _: None)
    assert c3["removed"] == counts["removed"] and not (tmp_path / "dry.jsonl").exists()


def test_dedup_command_errors(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"a": "x y z"}])
    with pytest.raises(DataError, match="no row has a 'text' field"):
        dedup_command(src, tmp_path / "o.jsonl", "text", echo=lambda _: None)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        dedup_command(tmp_path / "bad.jsonl", tmp_path / "o.jsonl", "text", echo=lambda _: None)
    with pytest.raises(DataError, match="must be .jsonl"):
        dedup_command(src, tmp_path / "o.csv", "a", echo=lambda _: None)
    with pytest.raises(DataError, match="file not found"):
        dedup_command(tmp_path / "missing.jsonl", tmp_path / "o.jsonl", "a", echo=lambda _: None)
    with pytest.raises(UsageError, match=r"--threshold 1.5: must be in \(0, 1\]"):
        dedup_command(src, tmp_path / "o.jsonl", "a", threshold=1.5, echo=lambda _: None)
    with pytest.raises(UsageError, match="--out: required"):
        dedup_command(src, None, "a", echo=lambda _: None)
    pq.write_table(pa.table({"a": ["x"]}), tmp_path / "in.parquet")
    with pytest.raises(DataError, match="no column 'text'; columns are a"):
        dedup_command(tmp_path / "in.parquet", tmp_path / "o.parquet", "text", echo=lambda _: None)


def test_random_text_is_never_a_duplicate():
    rng = random.Random(4)
    texts = [" ".join(f"w{rng.randint(0, 300)}" for _ in range(60)) for _ in range(1500)]
    res = find_duplicates(batches_of(texts), DedupSettings(threshold=0.8))
    assert res.keep.all()
