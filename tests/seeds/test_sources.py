"""Seed sources: real built-in data (easy-VQA, digits) and every kind of broken input.

Broken inputs are hand-made files: each row of a test file exercises one way a row
can be malformed, and the test pins which line gets which reject reason and field.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from siqkit.errors import SiqkitError
from siqkit.records import RawSeed, Reject
from siqkit.seeds.sources import REJECT_REASONS, Source, SourceError, build_source
from siqkit.seeds.sources import images as images_mod

# -- helpers ----------------------------------------------------------------------------


def make_png(color: str = "red", size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def truncated_png() -> bytes:
    """A PNG whose header PIL accepts but whose pixel data is cut short."""
    noise = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buf, "PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def cfg(type: str, path=None, **kw) -> SimpleNamespace:
    """A source config with only the attributes a test cares about."""
    kw.setdefault("name", "t")
    return SimpleNamespace(type=type, path=path, **kw)


def jline(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def line_of(item) -> int:
    return item.line if isinstance(item, Reject) else int(item.origin.rsplit(":", 1)[1])


def outcomes(source) -> dict[int, object]:
    """line -> "ok" or (reason, field), for everything a source yields."""
    out: dict[int, object] = {}
    for item in source.read():
        assert isinstance(item, (RawSeed, Reject))
        assert line_of(item) not in out, f"line {line_of(item)} yielded twice"
        out[line_of(item)] = "ok" if isinstance(item, RawSeed) else (item.reason, item.field)
    return out


def seeds(source) -> dict[int, RawSeed]:
    return {line_of(s): s for s in source.read() if isinstance(s, RawSeed)}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """The dataset root ``data/``: img/{red,blue}.png (good), img/notimage.png (text),
    img/truncated.png, img/escape.png (symlink out of the root); ``outside.png`` beside it."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "img" / "red.png").write_bytes(make_png("red"))
    (root / "img" / "blue.png").write_bytes(make_png("blue"))
    (root / "img" / "notimage.png").write_bytes(b"this is not an image\n")
    (root / "img" / "truncated.png").write_bytes(truncated_png())
    (tmp_path / "outside.png").write_bytes(make_png("green"))
    os.symlink(tmp_path / "outside.png", root / "img" / "escape.png")
    return root


# -- JSONL (plain and as an image folder's questions file) ------------------------------


def write_jsonl(root: Path) -> Path:
    outside = str(root.parent / "outside.png")
    lines = [
        jline({"question": " What colour is it? ", "answer": "red", "image": "img/red.png", "difficulty": 3}),
        b'{"question": "broken", ',
        jline({"answer": "x", "image": "img/red.png"}),
        jline({"question": 42, "image": "img/red.png"}),
        jline({"question": "q", "image": "img/notimage.png"}),
        jline({"question": "q", "image": "img/truncated.png"}),
        jline({"question": "q", "image": "img/nope.png"}),
        jline({"question": "q", "image": "../outside.png"}),
        '{"question": "caf\xe9?", "image": "img/red.png"}'.encode("latin-1"),
        jline({"question": "   ", "image": "img/red.png"}),
        jline({"question": "Is 2 even?", "answer": True}),  # text-only
        jline({"question": "q", "image": "img/escape.png"}),
        jline({"question": "q", "image": outside}),
        jline({"question": "Both?", "answer": 3.0, "image": ["img/red.png", "img/blue.png"], "split": "test"}),
        b"[1, 2]",
        b"   ",
        jline({"question": "q", "answer": ["a"], "image": "img/red.png"}),
        jline({"question": "q", "image": 5}),
        jline({"question": "q", "image": str(root / "img" / "blue.png")}),  # absolute, inside root
    ]
    path = root / "questions.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


JSONL_EXPECTED = {
    1: "ok",
    2: ("bad JSON", None),
    3: ("missing field", "question"),
    4: ("wrong type", "question"),
    5: ("unreadable image", "image"),
    6: ("truncated image", "image"),
    7: ("image not found", "image"),
    8: ("image path outside dataset root", "image"),
    9: ("non-UTF-8 text", None),
    10: ("empty question", "question"),
    11: "ok",
    12: ("image path outside dataset root", "image"),
    13: ("image path outside dataset root", "image"),
    14: "ok",
    15: ("bad JSON", None),
    17: ("wrong type", "answer"),
    18: ("wrong type", "image"),
    19: "ok",
}


@pytest.mark.parametrize("kind", ["jsonl", "images"])
def test_jsonl_rows(dataset: Path, kind: str):
    path = write_jsonl(dataset)
    source = build_source(cfg(kind, path), seed=0)
    expected = dict(JSONL_EXPECTED)
    if kind == "images":  # an image folder's rows must have an image
        expected[11] = ("missing field", "image")
    assert outcomes(source) == expected

    got = seeds(source)
    first = got[1]
    assert first.question == "What colour is it?"
    assert first.answer == "red" and first.split == "train"
    assert first.images == [(dataset / "img" / "red.png").read_bytes()]  # original bytes
    assert first.metadata == {"difficulty": 3}
    assert first.origin == "questions.jsonl:1"
    both = got[14]
    assert both.answer == "3" and both.split == "test" and len(both.images) == 2
    if kind == "jsonl":
        assert got[11].answer == "yes" and got[11].images == []


def test_jsonl_reject_details(dataset: Path):
    rejects = {r.line: r for r in build_source(cfg("jsonl", write_jsonl(dataset)), 0).read() if isinstance(r, Reject)}
    assert rejects[4].detail == "expected string, got int"
    assert rejects[9].detail.startswith("byte 0xe9")
    assert rejects[17].detail == "expected string or number, got list"
    assert all(r.file == "questions.jsonl" and r.reason in REJECT_REASONS for r in rejects.values())
    assert str(rejects[7]).startswith("questions.jsonl:7: field 'image' image not found")


def test_splits_filter_and_field_mapping(dataset: Path):
    path = dataset / "q.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                jline({"q": "A?", "a": 1, "pic": "img/red.png", "part": "val", "desc": "red square"}),
                jline({"q": "B?", "a": 2, "part": "train"}),
                jline({"q": "C?"}),  # no split: default
                jline({"q": "", "part": "train"}),  # bad, but its split is not wanted: skipped
            ]
        )
    )
    fields = {"question": "q", "answer": "a", "image": "pic", "split": "part", "caption": "desc"}
    source = build_source(cfg("jsonl", path, fields=fields, split="dev", splits=["val", "dev"]), 0)
    got = seeds(source)
    assert sorted(got) == [1, 3] and outcomes(source) == {1: "ok", 3: "ok"}
    assert got[1].split == "val" and got[1].metadata == {"caption": "red square"} and got[1].answer == "1"
    assert got[3].split == "dev"


def test_jsonl_bom_crlf_surrogates_and_mistyped_split_or_caption(dataset: Path):
    path = dataset / "q.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + b"\r\n".join(
            [
                jline({"question": "A?", "image": "img/red.png"}),
                jline({"question": "B?", "split": 5}),
                jline({"question": "C?", "caption": ["x"]}),
                jline({"question": "D?", "caption": "a red square", "split": ""}),
                b'{"question": "lone \\udc80 surrogate"}',
                b'{"question": "emoji \\ud83d\\ude00 pair"}',
            ]
        )
    )
    source = build_source(cfg("jsonl", path), 0)
    assert outcomes(source) == {
        1: "ok",
        2: ("wrong type", "split"),
        3: ("wrong type", "caption"),
        4: "ok",
        5: ("non-UTF-8 text", None),
        6: "ok",
    }
    got = seeds(source)
    assert got[4].metadata == {"caption": "a red square"} and got[4].split == "train"


def test_each_image_decoded_once(dataset: Path, monkeypatch):
    calls = []
    real = images_mod.check_image_bytes
    monkeypatch.setattr(images_mod, "check_image_bytes", lambda data, *a: calls.append(1) or real(data, *a))
    path = dataset / "q.jsonl"
    path.write_bytes(b"\n".join(jline({"question": f"q{i}", "image": "img/red.png"}) for i in range(5)))
    assert len(seeds(build_source(cfg("jsonl", path), 0))) == 5
    assert len(calls) == 1


def test_image_cache_eviction_rereads_without_decoding(dataset: Path):
    loader = images_mod.ImageLoader(dataset, cache_bytes=1)  # nothing fits: always re-read
    red = (dataset / "img" / "red.png").read_bytes()
    assert loader.load_path("img/red.png") == red
    assert loader.load_path("./img/../img/red.png") == red
    assert loader.load_path("img/notimage.png").reason == "unreadable image"
    assert loader.load_path("img").reason == "unreadable image"  # a directory


# -- CSV (plain and as an image folder's questions file) --------------------------------


def write_csv(root: Path) -> Path:
    rows = [
        b"answer,image,split,question",  # 1
        b"red,img/red.png,,What colour is it?",  # 2
        b"red,img/red.png",  # 3 short row: too few cells
        b"x,img/notimage.png,,q",  # 4
        b"x,img/truncated.png,,q",  # 5
        b"x,img/nope.png,,q",  # 6
        b"x,../outside.png,,q",  # 7
        "x,img/red.png,,caf\xe9?".encode("latin-1"),  # 8
        b"x,img/red.png,,   ",  # 9
        b'4,,test,"What is 2+2,',  # 10: quoted question spanning two lines
        b'really?"',  # 11
        b"x,img/escape.png,,q",  # 12
        b'yes,"[""img/red.png"", ""img/blue.png""]",,Both?',  # 13
        b"x,img/red.png,,q,extra",  # 14: more cells than the header
        b"",  # 15: blank
        b'x,"[""img/red.png"",",,q',  # 16: broken JSON list of images
    ]
    path = root / "questions.csv"
    path.write_bytes(b"\r\n".join(rows) + b"\r\n")
    return path


CSV_EXPECTED = {
    2: "ok",
    3: ("bad CSV", None),
    4: ("unreadable image", "image"),
    5: ("truncated image", "image"),
    6: ("image not found", "image"),
    7: ("image path outside dataset root", "image"),
    8: ("non-UTF-8 text", None),
    9: ("empty question", "question"),
    10: "ok",
    12: ("image path outside dataset root", "image"),
    13: "ok",
    14: ("bad CSV", None),
    16: ("bad JSON", "image"),
}


@pytest.mark.parametrize("kind", ["csv", "images"])
def test_csv_rows(dataset: Path, kind: str):
    source = build_source(cfg(kind, write_csv(dataset)), seed=0)
    expected = dict(CSV_EXPECTED)
    if kind == "images":
        expected[10] = ("missing field", "image")
    assert outcomes(source) == expected
    got = seeds(source)
    assert got[2].images == [(dataset / "img" / "red.png").read_bytes()]
    assert got[2].answer == "red" and got[2].split == "train" and got[2].metadata == {}
    assert len(got[13].images) == 2
    if kind == "csv":
        assert got[10].question == "What is 2+2,\r\nreally?" and got[10].split == "test"
        assert got[10].images == []
    assert build_source(cfg(kind, write_csv(dataset)), 0).describe()["rows"] == 13  # records, not lines


def test_csv_without_question_column_is_unusable(dataset: Path):
    path = dataset / "q.csv"
    path.write_text("prompt,answer\nhi,there\n")
    with pytest.raises(SourceError, match=r"q\.csv: no column 'question' \(columns: prompt, answer\)"):
        list(build_source(cfg("csv", path), 0).read())
    path.write_text("")
    with pytest.raises(SourceError, match="empty CSV"):
        list(build_source(cfg("csv", path), 0).read())


def test_csv_non_utf8_inside_multiline_record_and_header(dataset: Path):
    path = dataset / "q.csv"
    path.write_bytes(b'question,answer\n"first line\nsecond \xff line",x\nok?,y\n')
    assert outcomes(build_source(cfg("csv", path), 0)) == {3: ("non-UTF-8 text", None), 4: "ok"}
    path.write_bytes(b"qu\xffestion,answer\nok?,y\n")
    with pytest.raises(SourceError, match="header is not UTF-8"):
        list(build_source(cfg("csv", path), 0).read())


# -- Parquet ----------------------------------------------------------------------------


def test_parquet_struct_image_column(dataset: Path):
    red = (dataset / "img" / "red.png").read_bytes()
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [
        {"bytes": red, "path": None},
        None,
        None,
        {"bytes": b"not a png", "path": None},
        {"bytes": truncated_png(), "path": "x.png"},
        {"bytes": None, "path": "img/blue.png"},
        {"bytes": None, "path": "img/nope.png"},
        {"bytes": None, "path": "../outside.png"},
        {"bytes": None, "path": "img/escape.png"},
        None,
    ]
    table = pa.table(
        {
            "question": ["What colour?", None, "  ", "q", "q", "Blue?", "q", "q", "q", "Text only?"],
            "answer": pa.array([7, None, None, None, None, None, None, None, None, 0], pa.int64()),
            "image": pa.array(images, struct),
            "when": [dt.datetime(2024, 1, 2, 3, 4, 5)] * 10,
        }
    )
    path = dataset / "seeds.parquet"
    pq.write_table(table, path, row_group_size=4)
    source = build_source(cfg("parquet", path), 0)
    assert outcomes(source) == {
        1: "ok",
        2: ("missing field", "question"),
        3: ("empty question", "question"),
        4: ("unreadable image", "image"),
        5: ("truncated image", "image"),
        6: "ok",
        7: ("image not found", "image"),
        8: ("image path outside dataset root", "image"),
        9: ("image path outside dataset root", "image"),
        10: "ok",
    }
    got = seeds(source)
    assert got[1].images == [red] and got[1].answer == "7" and got[1].origin == "seeds.parquet:1"
    assert got[1].metadata == {"when": "2024-01-02T03:04:05"}
    assert got[6].images == [(dataset / "img" / "blue.png").read_bytes()]
    assert got[10].images == [] and got[10].answer == "0"
    assert source.describe() == {
        "type": "parquet", "path": str(path), "size_bytes": path.stat().st_size, "rows": 10, "splits": ["train"],
    }


def test_parquet_bytes_and_list_columns(dataset: Path):
    red = make_png("red")
    path = dataset / "bytes.parquet"
    pq.write_table(
        pa.table(
            {
                "question": ["a?", "b?", "c?", "d?"],
                "image": pa.array([red, b"\x89PNG junk", truncated_png(), None], pa.binary()),
                "split": ["train", "test", "test", "val"],
                "blob": pa.array([b"xyz"] * 4, pa.binary()),
            }
        ),
        path,
    )
    source = build_source(cfg("parquet", path), 0)
    assert outcomes(source) == {
        1: "ok",
        2: ("unreadable image", "image"),
        3: ("truncated image", "image"),
        4: "ok",
    }
    got = seeds(source)
    assert got[1].images == [red] and got[1].metadata == {"blob": "<3 bytes>"}
    assert got[4].split == "val"
    assert source.describe()["splits"] == ["test", "train", "val"]
    assert build_source(cfg("parquet", path, splits=["test"]), 0).describe()["splits"] == ["test"]

    path = dataset / "lists.parquet"
    pq.write_table(
        pa.table(
            {
                "question": ["a?", "b?", "c?"],
                "image": [["img/red.png", "img/blue.png"], ["img/red.png", "img/nope.png"], []],
            }
        ),
        path,
    )
    assert outcomes(build_source(cfg("parquet", path), 0)) == {1: "ok", 2: ("image not found", "image"), 3: "ok"}


def test_parquet_wrong_types(dataset: Path):
    path = dataset / "ints.parquet"
    pq.write_table(pa.table({"question": [1, 2], "answer": [[1], [2]]}), path)
    assert outcomes(build_source(cfg("parquet", path), 0)) == {
        1: ("wrong type", "question"),
        2: ("wrong type", "question"),
    }
    pq.write_table(pa.table({"question": ["a?"], "answer": [[1]], "image": [3]}), path)
    assert outcomes(build_source(cfg("parquet", path), 0)) == {1: ("wrong type", "answer")}
    pq.write_table(pa.table({"question": ["a?"], "image": [3]}), path)
    assert outcomes(build_source(cfg("parquet", path), 0)) == {1: ("wrong type", "image")}


def test_parquet_unusable_files(dataset: Path):
    path = dataset / "fake.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    source = build_source(cfg("parquet", path), 0)
    for call in (source.describe, lambda: list(source.read())):
        with pytest.raises(SourceError, match=r"fake\.parquet: not a Parquet file"):
            call()
    pq.write_table(pa.table({"prompt": ["a"]}), path)
    with pytest.raises(SourceError, match="no column 'question'"):
        list(build_source(cfg("parquet", path), 0).read())


# -- Hugging Face save_to_disk ------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets


def test_hf_dataset_with_image_feature(hf, tmp_path: Path):
    red = make_png("red")
    features = hf.Features(
        {
            "question": hf.Value("string"),
            "answer": hf.Value("int64"),
            "image": hf.Image(),
            "split": hf.Value("string"),
            "source_id": hf.Value("int64"),
        }
    )
    ds = hf.Dataset.from_dict(
        {
            "question": ["Colour?", "q", "q", "Text?", None, " ", "Test?"],
            "answer": [1, 2, 3, 4, 5, 6, 7],
            "image": [
                {"bytes": red, "path": None},
                {"bytes": b"garbage", "path": "x.png"},
                {"bytes": truncated_png(), "path": None},
                None,
                None,
                None,
                {"bytes": red, "path": None},
            ],
            "split": ["train", "train", "train", None, "train", "train", "test"],
            "source_id": list(range(7)),
        },
        features=features,
    )
    folder = tmp_path / "mini"
    ds.save_to_disk(str(folder))
    source = build_source(cfg("hf_disk", folder), 0)
    assert outcomes(source) == {
        1: "ok",
        2: ("unreadable image", "image"),
        3: ("truncated image", "image"),
        4: "ok",
        5: ("missing field", "question"),
        6: ("empty question", "question"),
        7: "ok",
    }
    got = seeds(source)
    assert got[1].images == [red] and got[1].answer == "1" and got[1].metadata == {"source_id": 0}
    assert got[1].origin == "mini:1" and got[4].split == "train" and got[7].split == "test"
    desc = source.describe()
    assert desc["rows"] == 7 and desc["splits"] == ["test", "train"] and desc["type"] == "hf_disk"
    assert isinstance(desc["size_bytes"], int) and desc["size_bytes"] > 0


def test_hf_paths_and_wrong_types(hf, dataset: Path, tmp_path: Path):
    struct = {"bytes": hf.Value("binary"), "path": hf.Value("string")}
    ds = hf.Dataset.from_dict(
        {
            "question": ["a?", "b?", "c?", "d?", "e?"],
            "image": [
                {"bytes": None, "path": "img/red.png"},
                {"bytes": None, "path": "img/nope.png"},
                {"bytes": None, "path": "../outside.png"},
                {"bytes": None, "path": "img/escape.png"},
                {"bytes": None, "path": "img/notimage.png"},
            ],
        },
        features=hf.Features({"question": hf.Value("string"), "image": struct}),
    )
    folder = tmp_path / "paths"
    ds.save_to_disk(str(folder))
    source = build_source(cfg("hf_disk", folder, root=dataset), 0)
    assert outcomes(source) == {
        1: "ok",
        2: ("image not found", "image"),
        3: ("image path outside dataset root", "image"),
        4: ("image path outside dataset root", "image"),
        5: ("unreadable image", "image"),
    }
    # Without a root, paths are relative to the dataset folder itself.
    assert outcomes(build_source(cfg("hf_disk", folder), 0))[1] == ("image not found", "image")

    folder = tmp_path / "ints"
    hf.Dataset.from_dict({"question": [1], "answer": [[1, 2]]}).save_to_disk(str(folder))
    assert outcomes(build_source(cfg("hf_disk", folder), 0)) == {1: ("wrong type", "question")}


def test_hf_dataset_dict(hf, tmp_path: Path):
    features = hf.Features({"question": hf.Value("string"), "answer": hf.Value("string"), "image": hf.Image()})
    red = make_png("red")
    dd = hf.DatasetDict(
        {
            "train": hf.Dataset.from_dict(
                {"question": ["a?", "b?", ""], "answer": ["x", None, "z"], "image": [{"bytes": red, "path": None}, None, None]},
                features=features,
            ),
            "test": hf.Dataset.from_dict(
                {"question": ["t?"], "answer": ["y"], "image": [{"bytes": b"nope", "path": None}]}, features=features
            ),
        }
    )
    folder = tmp_path / "dd"
    dd.save_to_disk(str(folder))
    items = list(build_source(cfg("hf_disk", folder), 0).read())
    summary = [(i.origin if isinstance(i, RawSeed) else f"{i.file}:{i.line} {i.reason}") for i in items]
    assert summary == ["dd/train:1", "dd/train:2", "dd/train:3 empty question", "dd/test:1 unreadable image"]
    assert [i.split for i in items if isinstance(i, RawSeed)] == ["train", "train"]
    only_test = build_source(cfg("hf_disk", folder, splits=["test"]), 0)
    assert only_test.describe()["rows"] == 1 and only_test.describe()["splits"] == ["test"]
    assert [i.file for i in only_test.read()] == ["dd/test"]


def test_hf_unusable_folder(hf, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    source = build_source(cfg("hf_disk", tmp_path / "empty"), 0)
    with pytest.raises(SourceError, match="not a Hugging Face save_to_disk folder"):
        list(source.read())


# -- whole-source problems, describe, fingerprint ----------------------------------------


def test_build_source_errors(dataset: Path, tmp_path: Path):
    with pytest.raises(SourceError, match="unknown source type"):
        build_source(cfg("xml", dataset / "x.xml"), 0)
    with pytest.raises(SourceError, match="needs a path"):
        build_source(cfg("jsonl"), 0)
    with pytest.raises(SourceError, match=r"missing\.jsonl: source file not found"):
        build_source(cfg("jsonl", dataset / "missing.jsonl"), 0)
    with pytest.raises(SourceError, match="dataset folder not found"):
        build_source(cfg("hf_disk", tmp_path / "nope"), 0)
    with pytest.raises(SourceError, match="root folder not found"):
        build_source(cfg("jsonl", write_jsonl(dataset), root=tmp_path / "nope"), 0)
    (dataset / "q.txt").write_text("x")
    with pytest.raises(SourceError, match="must be .jsonl or .csv"):
        build_source(cfg("images", dataset / "q.txt"), 0)
    with pytest.raises(SourceError, match="operations"):
        build_source(cfg("digits", operations=["divide"]), 0)
    assert issubclass(SourceError, SiqkitError)


def test_source_vanishing_after_build(dataset: Path):
    path = write_jsonl(dataset)
    source = build_source(cfg("jsonl", path), 0)
    path.unlink()
    with pytest.raises(SourceError, match="questions.jsonl: cannot read"):
        list(source.read())


def test_describe_and_fingerprint(dataset: Path):
    path = write_jsonl(dataset)
    source = build_source(cfg("jsonl", path), 0)
    assert isinstance(source, Source)
    assert source.describe() == {
        "type": "jsonl", "path": str(path), "size_bytes": path.stat().st_size, "rows": 18, "splits": None,
    }
    first = source.fingerprint()
    assert first == build_source(cfg("jsonl", path), 0).fingerprint()  # stable
    assert first != build_source(cfg("jsonl", path, splits=["train"]), 0).fingerprint()  # config

    image = dataset / "img" / "red.png"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # image replaced in place
    second = source.fingerprint()
    assert second != first

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # questions edited
    assert source.fingerprint() not in (first, second)


# -- built-in: easy-VQA ------------------------------------------------------------------


@pytest.fixture(scope="module")
def easy_vqa_seeds() -> list:
    return list(build_source(cfg("easy_vqa", name="easy"), seed=0).read())


def test_easy_vqa_counts(easy_vqa_seeds):
    assert all(isinstance(s, RawSeed) for s in easy_vqa_seeds)
    train = [s for s in easy_vqa_seeds if s.split == "train"]
    test = [s for s in easy_vqa_seeds if s.split == "test"]
    assert (len(train), len(test)) == (38575, 9673)
    assert len({s.metadata["image_id"] for s in train}) == 4000
    assert len({s.metadata["image_id"] for s in test}) == 1000
    with_caption = sum("caption" in s.metadata for s in easy_vqa_seeds)
    assert with_caption > 0.95 * len(easy_vqa_seeds)


def test_easy_vqa_row(easy_vqa_seeds):
    import easy_vqa

    first = easy_vqa_seeds[0]
    assert first.question == "what is the blue shape?" and first.answer == "rectangle"
    assert first.origin == "easy_vqa/train:1"
    assert first.metadata == {"image_id": 0, "kind": "shape", "caption": "a blue rectangle"}
    assert first.images == [Path(easy_vqa.get_train_image_paths()[0]).read_bytes()]
    image = Image.open(io.BytesIO(first.images[0]))
    assert image.size == (64, 64)
    # The caption agrees with the pixels: the shape's colour is pure blue.
    assert (0, 0, 255) in {c for _, c in image.convert("RGB").getcolors(4096)}
    # Questions on the same image share one bytes object, read once.
    same = [s for s in easy_vqa_seeds[:20] if s.split == "train" and s.metadata["image_id"] == 0]
    assert len(same) > 1 and all(s.images[0] is first.images[0] for s in same)
    assert {s.metadata["kind"] for s in easy_vqa_seeds} == {"shape", "color", "yes_no"}


def test_easy_vqa_splits_and_describe():
    source = build_source(cfg("easy_vqa", splits=["test"]), 0)
    assert source.describe()["rows"] == 9673 and source.describe()["splits"] == ["test"]
    assert source.fingerprint() != build_source(cfg("easy_vqa"), 0).fingerprint()


# -- built-in: digits --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_seeds() -> list[RawSeed]:
    return list(build_source(cfg("digits", num_images={"train": 300, "test": 100}), seed=7).read())


def test_digits_determinism(digits_seeds):
    again = list(build_source(cfg("digits", num_images={"train": 300, "test": 100}), seed=7).read())
    assert [(s.question, s.answer, s.images, s.metadata) for s in again] == [
        (s.question, s.answer, s.images, s.metadata) for s in digits_seeds
    ]
    other = list(build_source(cfg("digits", num_images={"train": 300, "test": 100}), seed=8).read())
    assert [s.images for s in other] != [s.images for s in digits_seeds]
    # One split's size does not change the other split's images.
    smaller = list(build_source(cfg("digits", num_images={"train": 10, "test": 100}), seed=7).read())
    assert [s.images for s in smaller if s.split == "test"] == [s.images for s in digits_seeds if s.split == "test"]


def test_digits_counts_and_disjoint_glyphs(digits_seeds):
    assert [s.split for s in digits_seeds].count("train") == 300
    assert [s.split for s in digits_seeds].count("test") == 100

    def glyphs(split):
        return {g for s in digits_seeds if s.split == split for number in s.metadata["glyphs"] for g in number}

    assert glyphs("train") and glyphs("test") and not glyphs("train") & glyphs("test")
    assert {s.metadata["operation"] for s in digits_seeds} == {"add", "subtract", "multiply"}


def test_digits_gold_answers(digits_seeds):
    from sklearn.datasets import load_digits

    target = load_digits().target
    for s in digits_seeds[:60] + digits_seeds[-20:]:
        a, b = (int("".join(str(target[g]) for g in number)) for number in s.metadata["glyphs"])
        assert s.metadata["numbers"] == [a, b]
        assert s.metadata["caption"] == f"two handwritten numbers: {a} and {b}"
        expected = {"add": a + b, "subtract": abs(a - b), "multiply": a * b}[s.metadata["operation"]]
        assert s.answer == str(expected)
        assert all(1 <= len(n) <= 2 for n in s.metadata["glyphs"])
        image = Image.open(io.BytesIO(s.images[0]))
        assert image.mode == "RGB" and image.size == (2 * 4 + 5 * 24, 2 * 4 + 24)
    json.dumps([s.metadata for s in digits_seeds])  # metadata is JSON-safe


def test_digits_two_step_questions_show_three_numbers():
    from sklearn.datasets import load_digits

    target = load_digits().target
    mixed = list(build_source(cfg("digits", num_images={"train": 200}, max_digits=1,
                                  operations=["add", "add_add", "add_multiply", "multiply_add"]), seed=7).read())
    ops = {s.metadata["operation"] for s in mixed}
    assert ops == {"add", "add_add", "add_multiply", "multiply_add"}
    for s in mixed:
        values = [int("".join(str(target[g]) for g in number)) for number in s.metadata["glyphs"]]
        assert s.metadata["numbers"] == values
        steps = 1 if s.metadata["operation"] == "add" else 2
        assert len(values) == steps + 1
        assert (s.metadata["steps"], s.metadata["difficulty"], s.metadata["task"]) == (
            steps, 2 * steps, f"{steps}-step arithmetic")
        a, b, *c = values
        expected = {"add": a + b, "add_add": a + b + sum(c), "add_multiply": (a + b) * (c or [0])[0],
                    "multiply_add": a * b + (c or [0])[0]}[s.metadata["operation"]]
        assert s.answer == str(expected)
        image = Image.open(io.BytesIO(s.images[0]))
        assert image.size == (2 * 4 + (2 * len(values) - 1) * 24, 2 * 4 + 24)
    assert mixed[0].metadata["caption"].startswith(("two handwritten numbers: ", "three handwritten numbers: "))
    # One-step images come from the same stream as before two-step operations existed: the
    # two numbers and the operation are drawn first.
    only_add = list(build_source(cfg("digits", num_images={"train": 1}, max_digits=1, operations=["add"]),
                                 seed=7).read())
    assert only_add[0].metadata["numbers"] == mixed[0].metadata["numbers"][:2]


def test_digits_operations_and_describe():
    source = build_source(cfg("digits", num_images={"train": 20, "test": 5}, operations=["multiply"], max_digits=1), 3)
    items = list(source.read())
    assert {s.question for s in items} == {"What is the product of the two numbers in the image?"}
    assert source.describe() == {"type": "digits", "path": None, "size_bytes": None, "rows": 25, "splits": ["train", "test"]}
    only = build_source(cfg("digits", splits=["test"]), 3)
    assert only.describe()["rows"] == 600
