"""Seed sources against hostile files: FIFOs, giant lines and images, broken CSV, NUL bytes."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from siqkit.errors import RecipeError
from siqkit.recipe import load_recipe
from siqkit.seeds.sources import SourceError, build_source
from tests.seeds.test_sources import cfg, jline, make_png, outcomes


def finishes(fn, timeout: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not finish."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still blocked after {timeout}s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    (r / "red.png").write_bytes(make_png("red"))
    return r


def test_a_fifo_in_the_dataset_root_is_quarantined_without_blocking(root):
    os.mkfifo(root / "pipe.png")  # opening it for reading would wait for a writer forever
    path = root / "q.jsonl"
    path.write_bytes(jline({"question": "a", "image": "pipe.png"}) + b"\n" + jline({"question": "b", "image": "red.png"}))
    source = build_source(cfg("jsonl", path), 0)
    finishes(source.fingerprint)
    got = finishes(lambda: outcomes(source))
    assert got == {1: ("not a regular file", "image"), 2: "ok"}
    reject = finishes(lambda: next(iter(source.read())))
    assert reject.detail == "pipe.png is a FIFO"


def test_a_fifo_as_the_questions_file_is_a_recipe_error(tmp_path):
    os.mkfifo(tmp_path / "q.jsonl")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seeds: {sources: [{name: s, type: jsonl, path: q.jsonl}]}\n")
    with pytest.raises(RecipeError, match=r"seeds.sources\[0\].path: expected a regular file, got a FIFO"):
        finishes(lambda: load_recipe(recipe))
    source = build_source(cfg("jsonl", tmp_path / "r.yaml"), 0)
    source.path = tmp_path / "q.jsonl"
    with pytest.raises(SourceError, match="not a regular file"):
        finishes(source.describe)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_line_over_the_cap_is_quarantined_and_the_next_row_survives(root, kind):
    big = "x" * (3 * 1024 * 1024)  # a valid row, 3 MiB long
    if kind == "jsonl":
        lines = [jline({"question": big}), jline({"question": "small"})]
    else:
        lines = [b"question,answer", f"{big},1".encode(), b"small,2"]
    path = root / f"q.{kind}"
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = build_source(cfg(kind, path, max_line_kb=1024), 0)
    first, second = (2, 3) if kind == "csv" else (1, 2)
    assert outcomes(source) == {first: ("line too long", None), second: "ok"}
    reject = next(iter(source.read()))
    assert reject.detail == "over max_line_kb=1024"


def png_of(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 0).save(buf, "PNG")  # a solid image compresses to a few KB
    return buf.getvalue()


def test_images_over_the_pixel_and_byte_caps_are_quarantined(root):
    (root / "huge.png").write_bytes(png_of((4000, 4000)))  # 16 MP in a few KB: a pixel bomb
    (root / "heavy.png").write_bytes(make_png("red") + b"\0" * 300_000)  # a small image in a big file
    path = root / "q.jsonl"
    path.write_bytes(b"\n".join(jline({"question": q, "image": i}) for q, i in
                                (("a", "huge.png"), ("b", "heavy.png"), ("c", "red.png"))))
    source = build_source(cfg("jsonl", path, max_image_pixels=4_000_000, max_image_mb=0.25), 0)
    assert outcomes(source) == {1: ("image too large", "image"), 2: ("image too large", "image"), 3: "ok"}
    details = [r.detail for r in source.read() if hasattr(r, "reason")]
    assert details == ["huge.png: 4000x4000 = 16,000,000 pixels, over max_image_pixels=4,000,000",
                       "heavy.png: 300,{:03d} bytes, over max_image_mb=0.25".format(len(make_png("red")))]


def test_an_image_beyond_pils_own_bomb_limit_is_too_large_too(root):
    (root / "bomb.png").write_bytes(png_of((15000, 15000)))  # 225 MP: PIL itself refuses to open it
    path = root / "q.jsonl"
    path.write_bytes(jline({"question": "a", "image": "bomb.png"}))
    source = build_source(cfg("jsonl", path, max_image_pixels=10**12), 0)
    (reject,) = list(source.read())
    assert reject.reason == "image too large" and "exceeds limit" in reject.detail


def test_unterminated_csv_quote_and_short_rows_are_quarantined(root):
    path = root / "q.csv"
    path.write_bytes(b'question,answer\n"what is 2+2,4\nwhat is 3+3,6\nok?,yes\nshort\n')
    source = build_source(cfg("csv", path), 0)
    got = list(source.read())
    # the open quote swallows every row after it: one reject, nothing half-parsed stored
    assert [(r.line, r.reason) for r in got] == [(2, "bad CSV")]
    assert got[0].detail == "1 cells, header has 2; the record spans lines 2-5: an unterminated quote?"
    path.write_bytes(b"question,answer\nshort\nfull,1\n")
    assert outcomes(build_source(cfg("csv", path), 0)) == {2: ("bad CSV", None), 3: "ok"}


def test_nul_inside_a_question_answer_or_caption_is_quarantined(root):
    path = root / "q.jsonl"
    path.write_bytes(b"\n".join([jline({"question": "what\u0000is this"}), jline({"question": "q", "answer": "a\u0000"}),
                                 jline({"question": "q2", "caption": "\u0000"}), jline({"question": "fine"})]))
    source = build_source(cfg("jsonl", path), 0)
    assert outcomes(source) == {1: ("NUL character", "question"), 2: ("NUL character", "answer"),
                                3: ("NUL character", "caption"), 4: "ok"}
    assert next(iter(source.read())).detail == "at character 5"
    csv_path = root / "q.csv"
    csv_path.write_bytes(b"question,answer\nwhat\0is,1\n")
    assert outcomes(build_source(cfg("csv", csv_path), 0)) == {2: ("NUL character", "question")}
