"""Exports in the training contract, loadable with ``datasets``; subsets; reading them back."""

from __future__ import annotations

import json

import pytest

from siqkit.curate.commands import UsageError, subset_command
from siqkit.curate.export import import_seeds, import_traces, read_export
from siqkit.curate.stage import run_curate
from siqkit.errors import StoreError
from siqkit.store import Store
from siqkit.teachers.parse import format_target

from tests.curate.conftest import build_store, png, recipe, sample

FIELDS = ["id", "seed_id", "teacher", "split", "difficulty", "labels", "images", "messages", "answer", "gold",
          "caption"]


@pytest.fixture
def curated(tmp_path):
    colours = ["red", "green", "blue", "orange", "purple", "black"]
    samples = []
    for i in range(36):
        imgs = [png("circle" if i % 2 else "square", colours[i % 6], size=48 + i)]
        if i % 9 == 0:
            imgs.append(png("square", colours[(i + 1) % 6], size=40))
        samples.append(sample(i, teacher=["t1", "t2"][i % 2], bucket=["easy", "medium", "hard"][i % 3],
                              labels=[["color", "counting", "ocr"][i % 3], "visual-perception"], images=imgs))
    store = build_store(tmp_path / "run", samples)
    counts = run_curate(store, recipe(subsets=[{"name": "hard-counting", "difficulty": ["hard"],
                                                "labels": ["counting", "ocr"], "max": 5},
                                               {"name": "t2", "teachers": ["t2"]}]))
    store.close()
    return tmp_path / "run", counts


def test_rows_follow_the_training_contract(curated):
    run_dir, counts = curated
    out = run_dir / "datasets" / "curated"
    rows = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
    assert len(rows) == counts["kept"] == 36
    store = Store.open(run_dir, read_only=True)
    for r in rows:
        assert list(r) == FIELDS
        user, assistant = r["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert [c["type"] for c in user["content"]] == ["image"] * len(r["images"]) + ["text"]
        assert all(p.startswith("images/") and (out / p).is_file() for p in r["images"])
        g = store.con.execute("SELECT reasoning, answer FROM generations WHERE key = ?", [r["id"]]).fetchone()
        assert assistant["content"] == [{"type": "text", "text": format_target(*g)}]
        assert r["difficulty"] in ("easy", "medium", "hard") and r["gold"] == "red"
    store.close()
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "36 reasoning traces" in card and "## Difficulty" in card
    assert "Filters applied" in card


def test_datasets_loads_jsonl_parquet_and_the_folder(curated, tmp_path):
    from datasets import load_dataset

    out = curated[0] / "datasets" / "curated"
    cache = str(tmp_path / "hf")
    a = load_dataset("json", data_files=str(out / "data.jsonl"), split="train", cache_dir=cache)
    b = load_dataset("parquet", data_files=str(out / "data.parquet"), split="train", cache_dir=cache)
    c = load_dataset(str(out), split="train", cache_dir=cache)
    assert len(a) == len(b) == len(c) == 36
    assert a[0]["id"] == b[0]["id"] and b[0]["messages"] == c[0]["messages"]
    assert b[0]["messages"][1]["content"][0]["text"].startswith("<think>\n")


def test_recipe_subsets_and_the_subset_command(curated, tmp_path):
    run_dir, counts = curated
    hard = [json.loads(x) for x in (run_dir / "datasets" / "hard-counting" / "data.jsonl").read_text().splitlines()]
    assert 0 < len(hard) <= 5 and all(r["difficulty"] == "hard" for r in hard)
    assert counts["subsets"]["t2"]["samples"] == 18
    out = tmp_path / "mine"
    c = subset_command(run_dir, out, difficulty=["medium"], teachers=["t1"], max=3, echo=lambda _: None)
    rows = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
    assert c["samples"] == len(rows) == 3
    assert all(r["difficulty"] == "medium" and r["teacher"] == "t1" for r in rows)
    assert (out / "data.parquet").is_file() and (out / "README.md").is_file()
    with pytest.raises(UsageError, match="--difficulty extreme"):
        subset_command(run_dir, out, difficulty=["extreme"], echo=lambda _: None)
    empty = build_store(tmp_path / "empty", [sample(0)])
    empty.close()
    with pytest.raises(StoreError, match="nothing curated yet"):
        subset_command(tmp_path / "empty", out, echo=lambda _: None)


def test_exports_read_back_as_seeds_and_traces(curated, tmp_path):
    out = curated[0] / "datasets" / "curated"
    rows = list(read_export(out))
    assert len(rows) == 36 and rows[0]["question"].startswith("Question number")
    assert all(f.is_file() for r in rows for f in r["image_files"])
    store = Store.open(tmp_path / "again", create=True)
    assert import_traces(store, out / "data.jsonl", source="round-trip") == 36
    src = Store.open(curated[0], read_only=True)
    for key, seed_id, reasoning, answer in src.con.execute(
            "SELECT key, seed_id, reasoning, answer FROM generations ORDER BY key").fetchall():
        got = store.con.execute("SELECT g.reasoning, g.answer, g.parse_status, s.question, s.images "
                                "FROM generations g JOIN seeds s ON s.id = g.seed_id WHERE g.key = ?", [key]).fetchone()
        want_q, want_imgs = src.con.execute("SELECT question, images FROM seeds WHERE id = ?", [seed_id]).fetchone()
        assert got == (reasoning, answer, "ok", want_q, want_imgs)
    n_seeds = store.con.execute("SELECT count(*) FROM seeds").fetchone()[0]
    import_seeds(store, out, source="again")  # seeds already there are left as they are
    assert store.con.execute("SELECT count(*) FROM seeds").fetchone()[0] == n_seeds == 36
    src.close()
    store.close()
