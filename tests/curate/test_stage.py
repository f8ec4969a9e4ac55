"""The curate stage on hand-built stores: every rule, dedup layers, selection, the curation table."""

from __future__ import annotations

import pytest

from siqkit.curate.stage import curation_summary, run_curate
from siqkit.errors import RecipeError

from tests.curate.conftest import build_store, png, reasoning_text, recipe, sample


def decisions(store) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in store.con.execute(
        "SELECT key, kept, layer, reason, detail, question_cluster, reasoning_cluster FROM curation").fetchall()}


def test_every_rule_drops_with_its_reason(tmp_path):
    long = " ".join(f"w{i}" for i in range(60))
    samples = [
        sample(0),  # kept
        sample(1, annotated=False),
        sample(2, parse_status="error", parse_reason="teacher error: boom", reasoning=None, answer=None),
        sample(3, parse_status="empty", reasoning=None, answer=None),
        sample(4, parse_status="truncated", finish_reason="length", answer=None),
        sample(5, parse_status="no_answer", answer=None),
        sample(6, parse_status="no_reasoning", reasoning=""),
        sample(7, correct=False, answer="blue"),
        sample(8, reasoning="too short"),
        sample(9, reasoning=long + " " + long),
        sample(10, answer=" ".join(["red"] * 20)),
        sample(11, reasoning="这是 一个 测试。 这个 形状 是 红色 的 圆形， 位于 图片 中央， 背景 是 白色 的。 shape red"),
        sample(12, reasoning="I'm sorry, but I can't help with identifying this image. " + reasoning_text(12)),
        sample(13, reasoning="\n".join(["Let me look at the shape again."] * 8)),
        sample(14, reasoning=" ".join(["the shape is red and round"] * 12)),
        sample(15, correct=None, gold=None),  # no gold: kept unless require_gold
    ]
    store = build_store(tmp_path / "run", samples)
    counts = run_curate(store, recipe(rules={"max_reasoning_tokens": 100, "max_answer_tokens": 10,
                                             "min_reasoning_tokens": 5}))
    d = decisions(store)
    want = {1: "not annotated", 2: "teacher error", 3: "empty output", 4: "truncated", 5: "no answer",
            6: "no reasoning", 7: "wrong answer", 8: "reasoning too short", 9: "reasoning too long",
            10: "answer too long", 11: "charset", 12: "refusal", 13: "loop", 14: "repetition"}
    for i, reason in want.items():
        kept, layer, got, detail = d[f"k{i:04d}"][:4]
        assert (kept, layer, got) == (False, "rules", reason), (i, d[f"k{i:04d}"])
        assert detail
    assert d["k0000"][0] and d["k0015"][0]
    assert counts["dropped"]["rules"] == {r: 1 for r in want.values()}
    assert counts["kept"] == 2
    assert "120 tokens > 100" in d["k0009"][3]
    # switching rules off keeps those traces; require_gold drops the unchecked one
    store2 = build_store(tmp_path / "run2", samples)
    run_curate(store2, recipe(rules={"drop_incorrect": False, "require_gold": True, "refusal_patterns": [],
                                     "scripts": None, "max_line_repeats": None,
                                     "max_repeated_ngram_fraction": None}))
    d2 = decisions(store2)
    assert d2["k0007"][0] and d2["k0011"][0] and d2["k0012"][0] and d2["k0013"][0] and d2["k0014"][0]
    assert d2["k0015"][2] == "no gold answer"


def test_bad_script_name_is_a_recipe_error(tmp_path):
    store = build_store(tmp_path / "run", [sample(0)])
    with pytest.raises(RecipeError, match="curate.rules.scripts"):
        run_curate(store, recipe(rules={"scripts": ["Latinish"]}))


def test_dedup_layers_keep_the_best_annotated(tmp_path):
    q = "What colour is the shape in the middle of this picture, and what is its outline?"
    img, jpeg_copy = png("circle", "red"), png("circle", "red", fmt="JPEG", quality=70)
    blue = png("circle", "blue")
    samples = [
        # the same question on the same image, re-encoded: one problem; the judged trace wins
        sample(0, seed_id="sA", question=q, images=[img], judge_quality=2),
        sample(1, seed_id="sB", question=q.upper() + "!!", images=[jpeg_copy], judge_quality=5),
        # the same question on a different image: a different problem
        sample(2, seed_id="sC", question=q, images=[blue]),
        # a near-duplicate question (one word changed at the end) on the same image as sC
        sample(3, seed_id="sD", question=q.replace("outline?", "outline exactly?"), images=[blue],
               correct=False, answer="red"),
        # two traces of one seed with the same reasoning, and one with different reasoning
        sample(4, seed_id="sE", question="Count the dots please, carefully, one by one, in the picture",
               reasoning=reasoning_text(40)),
        sample(5, seed_id="sE", question="Count the dots please, carefully, one by one, in the picture",
               reasoning=reasoning_text(40) + " Done.", teacher="t2"),
        sample(6, seed_id="sE", question="Count the dots please, carefully, one by one, in the picture",
               reasoning=reasoning_text(41), teacher="t3"),
        # the same reasoning for a different problem is not a duplicate
        sample(7, seed_id="sF", question="Another question entirely about something else in the picture",
               reasoning=reasoning_text(40)),
    ]
    store = build_store(tmp_path / "run", samples)
    counts = run_curate(store, recipe(rules={"drop_incorrect": False}))
    d = decisions(store)
    assert d["k0001"][0] and not d["k0000"][0]
    assert d["k0000"][1:3] == ("dedup", "duplicate question") and "sB" in d["k0000"][3]
    assert d["k0000"][4] == "sB" and d["k0001"][4] == "sB"
    assert d["k0002"][0] and not d["k0003"][0]  # sC's trace is correct, sD's is not
    assert d["k0003"][2] == "near-duplicate question" and d["k0003"][4] == "sC"
    assert d["k0004"][0] and not d["k0005"][0] and d["k0006"][0] and d["k0007"][0]
    assert d["k0005"][2] == "near-duplicate reasoning" and d["k0005"][5] == "k0004"
    assert counts["dedup"]["question"]["removed"] == 2 and counts["dedup"]["reasoning"]["removed"] == 1
    # the media fingerprints were cached
    assert store.con.execute("SELECT count(*) FROM media_phash").fetchone()[0] == 3


def test_curation_table_accounts_for_every_trace(tmp_path):
    samples = [sample(i, bucket=["easy", "medium", "hard"][i % 3],
                      labels=[["color", "shape", "counting"][i % 3 if i % 10 else 0], "visual-perception"],
                      correct=i % 17 != 0)
               for i in range(300)]
    samples += [sample(1000 + i, split="test") for i in range(20)]
    store = build_store(tmp_path / "run", samples)
    counts = run_curate(store, recipe(selection={"difficulty": {"mix": {"easy": 50, "medium": 30, "hard": 20}},
                                                 "labels": {"max_per_label": 80}}))
    n, dropped_without_reason, test_rows = store.con.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT kept AND (reason IS NULL OR layer IS NULL)), "
        "count(*) FILTER (WHERE split = 'test') FROM curation").fetchone()
    assert n == 300 and dropped_without_reason == 0 and test_rows == 0
    assert counts["not_curated"]["splits"] == {"test": 20}
    assert counts["kept"] + counts["dropped_total"] == 300
    sel = counts["selection"]
    assert sel["met"], sel
    assert set(counts["dropped"]["selection"]) <= {"difficulty quota", "label cap"}
    summary = curation_summary(store)
    assert summary["kept"] == counts["kept"]
    assert summary["by_layer"]["rules"] == counts["dropped"]["rules"]["wrong answer"]
    assert summary["by_reason"]["selection"] == counts["dropped"]["selection"]
    assert summary["subsets"] == {"curated": counts["kept"]}
    # a rerun gives the same decisions
    before = decisions(store)
    run_curate(store, recipe(selection={"difficulty": {"mix": {"easy": 50, "medium": 30, "hard": 20}},
                                        "labels": {"max_per_label": 80}}))
    assert decisions(store) == before


def test_refusal_patterns_re2_cannot_compile_run_in_python(tmp_path):
    samples = [sample(0), sample(1, reasoning="Honestly I cannot tell from this picture. " + reasoning_text(1))]
    store = build_store(tmp_path / "run", samples)
    run_curate(store, recipe(rules={"refusal_patterns": [r"(?<=I )cannot tell"]}))  # lookbehind: not RE2
    d = decisions(store)
    assert d["k0000"][0] and d["k0001"][2] == "refusal" and "cannot tell" in d["k0001"][3]


def test_reasoning_length_matches_difficulty(tmp_path):
    """One trace per question: the shortest for easy questions, the longest for hard ones,
    the upper median for medium ones; questions with one trace keep it."""
    def traces(seed: str, bucket: str, lengths: list[int], start: int) -> list[dict]:
        return [sample(start + j, seed_id=seed, question=f"Question {seed}: what is in this picture, and where?",
                       teacher=f"t{j}", bucket=bucket, reasoning=reasoning_text(start + j, words=n))
                for j, n in enumerate(lengths)]

    samples = (traces("sE", "easy", [30, 9, 60], 0) + traces("sM", "medium", [9, 60, 30], 10)
               + traces("sH", "hard", [30, 60, 9], 20) + traces("s1", "hard", [30], 30))
    store = build_store(tmp_path / "run", samples)
    counts = run_curate(store, recipe(selection={"reasoning_length": {}}))
    kept = {k for k, (ok, *_) in decisions(store).items() if ok}
    assert kept == {"k0001", "k0012", "k0021", "k0030"}
    assert counts["length_matched"] == {"easy: shortest": 1, "medium: median": 1, "hard: longest": 1}
    assert counts["dropped"]["selection"] == {"reasoning length": 6}
    detail = decisions(store)["k0000"][3]
    assert detail.startswith("easy question: its shortest trace (") and detail.endswith("is kept, of 3")
    # each bucket's choice is the recipe's
    run_curate(store, recipe(selection={"reasoning_length": {"easy": "all", "hard": "shortest"}}))
    kept = {k for k, (ok, *_) in decisions(store).items() if ok}
    assert kept == {"k0000", "k0001", "k0002", "k0012", "k0022", "k0030"}
