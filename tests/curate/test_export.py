"""Exports in the training contract, loadable with ``datasets`` from anywhere and through TRL's
chat template; the LLaMA-Factory variant; the card; subsets; reading them back."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
import yaml

from siqkit.curate.card import card_license, size_category
from siqkit.curate.commands import UsageError, subset_command
from siqkit.curate.datasets import ExportRow, export_samples
from tests.curate.roundtrip import import_seeds, import_traces, read_export
from siqkit.curate.stage import run_curate
from siqkit.errors import StoreError
from siqkit.store import Store
from siqkit.teachers.parse import format_target

from tests.curate.conftest import build_store, png, recipe, sample

FIELDS = [f.name for f in dataclasses.fields(ExportRow)]  # the contract's one definition


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


def card_header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def snippets(card: str) -> list[str]:
    return re.findall(r"```python\n(.+?)```", card, re.S)


def test_the_contract_names_its_fields_once():
    assert FIELDS[:11] == ["id", "seed_id", "teacher", "split", "difficulty", "labels", "images", "messages",
                           "answer", "gold", "caption"]
    assert "finish_reason" in FIELDS  # a trace column added in ExportRow alone reaches every export


def test_rows_follow_the_training_contract(curated):
    run_dir, counts = curated
    out = (run_dir / "datasets" / "curated").resolve()
    rows = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
    assert len(rows) == counts["kept"] == 36
    store = Store.open(run_dir, read_only=True)
    for r in rows:
        assert list(r) == FIELDS
        user, assistant = r["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert [c["type"] for c in user["content"]] == ["image"] * len(r["images"]) + ["text"]
        assert all(p.startswith(f"{out}/images/") and (out / p).is_file() for p in r["images"])
        g = store.con.execute("SELECT reasoning, answer FROM generations WHERE key = ?", [r["id"]]).fetchone()
        assert assistant["content"] == [{"type": "text", "text": format_target(*g)}]
        assert r["difficulty"] in ("easy", "medium", "hard") and r["gold"] == "red" and r["finish_reason"] == "stop"
    store.close()
    card = (out / "README.md").read_text()
    header = card_header(card)
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "data.parquet"}]
    assert header["license"] == "unknown"  # the fixture's source is not one siqkit knows
    assert header["language"] == ["en"] and header["size_categories"] == ["n<1K"]
    assert "visual-question-answering" in header["task_categories"]
    from huggingface_hub import DatasetCardData

    assert DatasetCardData(**header).license == "unknown"
    assert "36 reasoning traces" in card and "## Difficulty" in card and "Filters applied" in card


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """The quickstart student's processor (a Qwen2-VL twin's)."""
    from siqkit.models.processors import load_processor
    from siqkit.models.twins import cached_tiny

    return load_processor(cached_tiny("qwen2_vl", tmp_path_factory.mktemp("twins")))


def through_trl(row: dict, processor) -> None:
    """TRL's conversational check and chat template, then the processor on the text and images."""
    from trl.data_utils import apply_chat_template, is_conversational

    assert is_conversational(row)
    text = apply_chat_template({"messages": row["messages"]}, processor)["text"]
    assert row["messages"][0]["content"][-1]["text"] in text and "<think>" in text
    batch = processor(text=[text], images=row["images"] or None, return_tensors="pt")
    if row["images"]:
        assert batch["pixel_values"].shape[0] > 0 and len(batch["image_grid_thw"]) == len(row["images"])


def test_each_export_loads_from_another_directory_with_images(curated, tmp_path, monkeypatch, processor):
    import datasets
    from datasets import load_dataset
    from PIL.Image import Image as PILImage

    out = (curated[0] / "datasets" / "curated").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cache = str(tmp_path / "hf")
    monkeypatch.setenv("HF_DATASETS_CACHE", cache)
    a = load_dataset("json", data_files=str(out / "data.jsonl"), split="train", cache_dir=cache)
    a = a.cast_column("images", datasets.List(datasets.Image()))
    b = load_dataset("parquet", data_files=str(out / "data.parquet"), split="train", cache_dir=cache)
    c = load_dataset(str(out), split="train", cache_dir=cache)
    assert len(a) == len(b) == len(c) == 36
    assert list(a.features) == list(b.features) == FIELDS  # every contract field, in every format
    assert a[0]["id"] == b[0]["id"] and b[0]["messages"] == c[0]["messages"]
    assert b[0]["messages"][1]["content"][0]["text"].startswith("<think>\n")
    assert isinstance(b.features["images"].feature, datasets.Image)
    with_two = next(i for i in range(36) if len(b[i]["images"]) == 2)
    for ds in (a, b, c):
        imgs = ds[with_two]["images"]
        assert len(imgs) == 2 and all(isinstance(im, PILImage) for im in imgs)
        assert imgs[0].tobytes() == a[with_two]["images"][0].tobytes()
        through_trl(ds[with_two], processor)
    # the Parquet file alone, away from the images folder, still holds its images
    lone = tmp_path / "lone.parquet"
    shutil.copy(out / "data.parquet", lone)
    d = load_dataset("parquet", data_files=str(lone), split="train", cache_dir=cache)
    assert d[with_two]["images"][1].tobytes() == b[with_two]["images"][1].tobytes()
    # the card's own snippets run, from another directory
    codes = snippets((out / "README.md").read_text())
    assert len(codes) == 2
    for code in codes:
        scope: dict = {}
        exec(code, scope)  # noqa: S102 -- the card's snippet, as a user would paste it
        assert len(scope["ds"]) == 36 and isinstance(scope["ds"][with_two]["images"][0], PILImage)


def test_llamafactory_variant_follows_its_documented_format(curated):
    """LLaMA-Factory's sharegpt format with OpenAI-style tags: one string per message, an
    ``<image>`` per image (its multimodal plugin counts them against ``images``), user and
    assistant alternating, and the ``dataset_info.json`` entry naming the columns and tags."""
    out = (curated[0] / "datasets" / "curated").resolve()
    rows = [json.loads(x) for x in (out / "llamafactory.jsonl").read_text().splitlines()]
    contract = {r["id"]: r for r in map(json.loads, (out / "data.jsonl").read_text().splitlines())}
    assert len(rows) == 36
    for r in rows:
        user, assistant = r["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert user["content"].count("<image>") == len(r["images"]) and "<image>" not in assistant["content"]
        assert all(p.startswith("/") and (out / p).is_file() for p in r["images"])
        want = contract[r["id"]]
        assert user["content"] == "<image>" * len(r["images"]) + want["messages"][0]["content"][-1]["text"]
        assert assistant["content"] == want["messages"][1]["content"][0]["text"]
    assert sum(len(r["images"]) for r in rows) == 40
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {"siqkit_curated": {
        "file_name": str(out / "llamafactory.jsonl"), "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}
    assert json.dumps(info, indent=2) in (out / "README.md").read_text()


def test_card_credits_known_sources_and_their_licenses(tmp_path):
    store = build_store(tmp_path / "run", [sample(i, source="shapes" if i < 3 else "sums",
                                                 images=[png(size=40 + i)]) for i in range(5)])
    run = store.begin_stage("seeds", {"seeds": {"sources": [{"name": "shapes", "type": "easy_vqa"},
                                                            {"name": "sums", "type": "digits"}]}})
    store.end_stage(run, {})
    keys = [f"k{i:04d}" for i in range(5)]
    counts = export_samples(store, keys, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert card_header(card)["license"] == ["bsd-3-clause", "mit"] == card_license(counts["sources"], None)
    assert [(s["name"], s["samples"], s["license"]) for s in counts["sources"]] == [
        ("shapes", 3, "mit"), ("sums", 2, "bsd-3-clause")]
    assert "easy-VQA by Victor Zhou" in card and "UCI ML repository" in card and "scikit-learn" in card
    export_samples(store, keys[:3], tmp_path / "out", card={"license": "cc-by-4.0", "language": ["de"]})
    header = card_header((tmp_path / "out" / "README.md").read_text())
    assert (header["license"], header["language"]) == ("cc-by-4.0", ["de"])
    assert [size_category(n) for n in (0, 999, 1000, 36_000, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]
    store.close()


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
    assert all((out / f).is_file() for f in ("data.parquet", "llamafactory.jsonl", "dataset_info.json", "README.md"))
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
    moved = tmp_path / "moved"  # absolute paths of a moved folder are found again beside the file
    shutil.copytree(out, moved)
    shutil.rmtree(out / "images")
    again = list(read_export(moved / "data.jsonl"))
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    assert all(f.parent == moved / "images" and f.is_file() for r in again for f in r["image_files"])
    from_parquet = Store.open(tmp_path / "from-parquet", create=True)  # embedded bytes, no image files
    assert import_seeds(from_parquet, out / "data.parquet") == 36
    assert from_parquet.con.execute("SELECT count(*) FROM media").fetchone()[0] == len({f.name for r in rows for f in r["image_files"]})
    from_parquet.close()
    store = Store.open(tmp_path / "again", create=True)
    assert import_traces(store, moved / "data.jsonl", source="round-trip") == 36
    src = Store.open(curated[0], read_only=True)
    for key, seed_id, reasoning, answer in src.con.execute(
            "SELECT key, seed_id, reasoning, answer FROM generations ORDER BY key").fetchall():
        got = store.con.execute("SELECT g.reasoning, g.answer, g.parse_status, s.question, s.images "
                                "FROM generations g JOIN seeds s ON s.id = g.seed_id WHERE g.key = ?", [key]).fetchone()
        want_q, want_imgs = src.con.execute("SELECT question, images FROM seeds WHERE id = ?", [seed_id]).fetchone()
        assert got == (reasoning, answer, "ok", want_q, want_imgs)
    n_seeds = store.con.execute("SELECT count(*) FROM seeds").fetchone()[0]
    import_seeds(store, moved, source="again")  # seeds already there are left as they are
    assert store.con.execute("SELECT count(*) FROM seeds").fetchone()[0] == n_seeds == 36
    src.close()
    store.close()
