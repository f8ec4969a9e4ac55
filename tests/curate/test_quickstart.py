"""The curate stage on real quickstart data (easy-VQA and digits, built-in teachers)."""

from __future__ import annotations

import json

from siqkit.curate.stage import curation_summary, run_curate
from siqkit.store import Store

from tests.curate.conftest import recipe


def test_curates_the_quickstart_run(quickstart_copy):
    store = Store.open(quickstart_copy)
    cfg = {"selection": {"labels": {"max_per_label": 400}},
           "subsets": [{"name": "arithmetic", "labels": ["addition", "subtraction", "multiplication"], "max": 100}]}
    counts = run_curate(store, recipe(**cfg))
    train = store.con.execute("SELECT count(*) FROM generations g JOIN seeds s ON s.id = g.seed_id "
                              "WHERE s.split = 'train'").fetchone()[0]
    wrong = store.con.execute("SELECT count(*) FROM annotations a JOIN seeds s ON s.id = a.seed_id "
                              "WHERE s.split = 'train' AND NOT a.correct").fetchone()[0]
    assert counts["input"] == train > 0
    assert counts["dropped"]["rules"].get("wrong answer", 0) == wrong
    assert store.con.execute("SELECT count(*) FROM curation WHERE NOT kept AND reason IS NULL").fetchone()[0] == 0
    assert counts["dedup"]["question"]["documents"] > 0 and "histogram" in counts["dedup"]["reasoning"]
    labels = counts["selection"]["labels_after"]
    assert max(v for k, v in labels.items()) <= 400
    assert counts["selection"]["label_coverage"]["after"] == counts["selection"]["label_coverage"]["before"]
    rows = (quickstart_copy / "datasets" / "curated" / "data.jsonl").read_text().splitlines()
    assert len(rows) == counts["kept"]
    first = json.loads(rows[0])
    assert first["messages"][1]["content"][0]["text"].startswith("<think>\n")
    assert (quickstart_copy / "datasets" / "curated" / first["images"][0]).is_file()
    assert 0 < counts["subsets"]["arithmetic"]["samples"] <= 100
    from siqkit.train.data import load_traces  # the training stages read exactly this export

    traces = load_traces(quickstart_copy / "datasets" / "curated")
    assert len(traces) == counts["kept"] and all(p.is_file() for p in traces[0].images)
    assert any(t.caption for t in traces)  # easy-VQA seeds carry a caption
    summary = curation_summary(store)
    assert summary["kept"] == counts["kept"] and sum(summary["by_layer"].values()) == counts["dropped_total"]
    before = store.con.execute("SELECT key, kept, reason FROM curation ORDER BY key").fetchall()
    run_curate(store, recipe(**cfg))  # a rerun decides the same (image fingerprints come from the cache)
    assert store.con.execute("SELECT key, kept, reason FROM curation ORDER BY key").fetchall() == before
    store.close()


def test_report_shows_curation_before_and_after(quickstart_copy, tmp_path):
    from siqkit.report.build import build_report

    store = Store.open(quickstart_copy)
    run_curate(store, recipe(selection={"labels": {"max_per_label": 400}}))
    store.close()
    page = build_report(quickstart_copy, tmp_path / "r.html").read_text()
    assert "id=curation" in page
    assert 'alt="difficulty before and after"' in page and 'alt="labels before and after"' in page
    assert "label cap" in page and "wrong answer" in page  # drops by layer and reason
    assert 'alt="reasoning length by difficulty"' in page


def test_reasoning_length_follows_difficulty_on_the_quickstart(quickstart_copy):
    """The quickstart's teachers write a short and a brief trace per question; one-step
    questions come out easy and keep the short one, two-step ones medium and keep the brief."""
    store = Store.open(quickstart_copy)
    try:
        counts = run_curate(store, recipe(selection={"reasoning_length": {}}))
        kept = store.con.execute(
            """SELECT g.seed_id, coalesce(json_extract_string(s.metadata, '$.steps'), '1'), a.difficulty_bucket,
                      g.sample_index
               FROM curation c JOIN generations g ON g.key = c.key JOIN annotations a ON a.key = c.key
               JOIN seeds s ON s.id = g.seed_id WHERE c.kept""").fetchall()
    finally:
        store.close()
    assert len({r[0] for r in kept}) == len(kept) == counts["kept"] > 0  # one trace per question
    by_steps = {steps: {(bucket, sample) for _, st, bucket, sample in kept if st == steps} for steps in ("1", "2")}
    assert by_steps == {"1": {("easy", 0)}, "2": {("medium", 1)}}
    assert counts["length_matched"] == {"easy: shortest": sum(1 for r in kept if r[1] == "1"),
                                        "medium: median": sum(1 for r in kept if r[1] == "2")}
