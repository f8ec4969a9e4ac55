"""Curation fixtures: small run stores built by hand, and one real quickstart store per session."""

from __future__ import annotations

import io
import shutil
from types import SimpleNamespace

import pytest
from PIL import Image, ImageDraw

from siqkit.curate.config import CurateConfig
from siqkit.records import Annotation, Generation, Media, Seed
from siqkit.store import Store

from tests.conftest import REPO, run_cli

LEVEL = {"easy": 1, "medium": 3, "hard": 5}


def png(shape: str = "circle", color: str = "red", size: int = 64, fmt: str = "PNG", quality: int = 90) -> bytes:
    im = Image.new("RGB", (size, size), (245, 245, 250))
    d = ImageDraw.Draw(im)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=color)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def reasoning_text(i: int, words: int = 30) -> str:
    """Distinct reasoning: numbered steps with words that depend on i."""
    vocab = ["shape", "colour", "pixel", "border", "edge", "count", "left", "right", "circle", "square",
             "bright", "dark", "centre", "corner", "width", "height", "object", "scene", "line", "mark"]
    steps = []
    for s in range(3):
        body = " ".join(vocab[(i * 7 + s * 3 + k * k) % len(vocab)] + str((i + k) % 13) for k in range(words // 3))
        steps.append(f"{s + 1}. {body}.")
    return "\n".join(steps)


def sample(i: int, **kw) -> dict:
    """One trace with its seed and annotation; keyword arguments override the defaults."""
    s = {"key": f"k{i:04d}", "seed_id": f"s{i:04d}", "teacher": "t1", "split": "train", "source": "src",
         "question": f"Question number {i}: what is shown in picture {i} of the set?", "gold": "red",
         "images": [], "reasoning": reasoning_text(i), "answer": "red", "parse_status": "ok",
         "parse_reason": None, "finish_reason": "stop", "correct": True, "labels": ["color", "visual-perception"],
         "judge_quality": None, "bucket": "easy", "annotated": True}
    s.update(kw)
    return s


def build_store(path, samples: list[dict]) -> Store:
    """A run store holding exactly these samples (images given as bytes are stored)."""
    store = Store.open(path, create=True)
    seeds, gens, anns, media = {}, [], [], {}
    for s in samples:
        hashes = []
        for img in s["images"]:
            digest, fmt, w, h = store.media.put(img)
            media[digest] = Media(digest, fmt, w, h, len(img))
            hashes.append(digest)
        seeds.setdefault(s["seed_id"], Seed(s["seed_id"], s["source"], s["split"], s["question"], s["gold"], hashes,
                                            {}, "test"))
        raw = f"<think>\n{s['reasoning']}\n</think>\n\n{s['answer']}"
        gens.append(Generation(key=s["key"], seed_id=s["seed_id"], teacher=s["teacher"], raw=raw,
                               reasoning=s["reasoning"], answer=s["answer"], parse_status=s["parse_status"],
                               parse_reason=s["parse_reason"], finish_reason=s["finish_reason"],
                               completion_tokens=50, sample_index=0))
        if s["annotated"]:
            anns.append(Annotation(key=s["key"], seed_id=s["seed_id"], teacher=s["teacher"], correct=s["correct"],
                                   labels=s["labels"], judge_quality=s["judge_quality"],
                                   reasoning_tokens=len((s["reasoning"] or "").split()),
                                   answer_tokens=len((s["answer"] or "").split()), difficulty=LEVEL.get(s["bucket"]),
                                   difficulty_bucket=s["bucket"]))
    with store.transaction():
        for records in (list(media.values()), list(seeds.values()), gens, anns):
            store.write(records)
    return store


def recipe(seed: int = 0, **curate) -> SimpleNamespace:
    """What the stage reads of a recipe: its seed and its curate section."""
    return SimpleNamespace(seed=seed, curate=CurateConfig.model_validate(curate))


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """The quickstart recipe's seeds, generate and annotate stages on capped real data (~15 s)."""
    root = tmp_path_factory.mktemp("quickstart")
    run_dir = root / "run"
    caps = ["--set", f"run.dir={run_dir}", "--set", "seeds.sources[0].max=800",
            "--set", "seeds.sources[1].num_images={train: 500, test: 100}"]
    for stage in ("seeds", "generate", "annotate"):
        res = run_cli("run", str(REPO / "recipes" / "quickstart.yaml"), "--only", stage, *caps, cwd=root)
        assert res.returncode == 0, res.stderr[-2000:]
    return run_dir


@pytest.fixture
def quickstart_copy(quickstart_run, tmp_path):
    """A private copy of the quickstart run folder, to curate and change."""
    dst = tmp_path / "run"
    shutil.copytree(quickstart_run, dst)
    return dst
