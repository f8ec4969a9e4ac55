"""The ``easy_vqa`` built-in source: the easy-VQA dataset shipped inside its pip package.

easy-VQA is 64x64 images of one coloured shape (circle, rectangle or triangle in one
of eight colours) with simple questions: 38,575 train and 9,673 test questions over
4,000 train and 1,000 test images. Train and test stay apart as splits "train" and
"test" (image ids restart at 0 in each split, so they are distinct images).

Each seed's metadata holds ``image_id``, ``kind`` ("color", "shape" or "yes_no", from
the answer) and, when known, ``caption`` such as "a blue rectangle". The dataset
has no captions: we derive one per image from the answers of that image's own
questions ("what color is the shape?" -> blue; "is there not a circle?" -> no ->
circle), and leave the caption out when they do not tell (about 1% of images).

Every PNG is read and decoded once; all ~48k seeds come out in about a second.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from siqkit.records import RawSeed, Reject

from .base import SourceError, base_fingerprint, digest, splits_filter, tree_size
from .images import NOT_FOUND, ImageLoader, Problem

SPLITS = ("train", "test")
COLORS = frozenset({"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"})
SHAPES = frozenset({"circle", "rectangle", "triangle"})
_CAPTION_RULES = 1  # bump when caption/kind derivation changes, so reruns re-read
_WORD = re.compile(r"[a-z]+")


def _package():
    try:
        import easy_vqa
    except ImportError:
        raise SourceError("easy_vqa: the 'easy-vqa' package is not installed") from None
    return easy_vqa


def _kind(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes_no"
    return "color" if answer in COLORS else "shape" if answer in SHAPES else "other"


def derive_captions(texts: list[str], answers: list[str], image_ids: list[int]) -> dict[int, str]:
    """Caption per image id from what its questions' answers reveal.

    An open question names the colour/shape in its answer or its wording ("what is
    the blue shape?" -> rectangle). A yes/no question asserts the colour or shape it
    mentions when it is positive and answered "yes", or negated ("not", "no") and
    answered "no". Two different colours (or shapes) for one image would mean our
    reading is wrong, so that attribute is then left out.
    """
    colors: dict[int, set[str]] = defaultdict(set)
    shapes: dict[int, set[str]] = defaultdict(set)
    for text, answer, image_id in zip(texts, answers, image_ids):
        words = set(_WORD.findall(text.lower()))
        if answer in ("yes", "no"):
            negated = bool(words & {"not", "no"})
            if (answer == "yes") == negated:
                continue  # the mentioned attribute is absent: tells us nothing for sure
        else:
            words.add(answer)
        colors[image_id] |= words & COLORS
        shapes[image_id] |= words & SHAPES
    captions = {}
    for image_id in set(image_ids):
        color = next(iter(colors[image_id])) if len(colors[image_id]) == 1 else None
        shape = next(iter(shapes[image_id])) if len(shapes[image_id]) == 1 else None
        if color and shape:
            captions[image_id] = f"a {color} {shape}"
        elif color:
            captions[image_id] = f"a {color} shape"
        elif shape:
            captions[image_id] = f"a {shape}"
    return captions


class EasyVqaSource:
    """Reads easy-VQA from the installed package; no download, ever."""

    def __init__(self, cfg: Any):
        self.name: str = cfg.name
        wanted = splits_filter(cfg)
        self.splits = [s for s in SPLITS if wanted is None or s in wanted]
        self._cfg = cfg

    def _data_dir(self) -> Path:
        return Path(_package().__file__).parent / "data"

    def _questions(self, split: str):
        pkg = _package()
        getter = pkg.get_train_questions if split == "train" else pkg.get_test_questions
        return getter()

    def _image_paths(self, split: str) -> dict[int, str]:
        pkg = _package()
        getter = pkg.get_train_image_paths if split == "train" else pkg.get_test_image_paths
        return getter()

    def describe(self) -> dict:
        data = self._data_dir()
        return {
            "type": "easy_vqa",
            "path": str(data),
            "size_bytes": sum(tree_size(data / s) for s in self.splits),
            "rows": sum(len(self._questions(s)[0]) for s in self.splits),
            "splits": list(self.splits),
        }

    def fingerprint(self) -> str:
        _package()
        try:
            version = importlib_metadata.version("easy-vqa")
        except importlib_metadata.PackageNotFoundError:
            version = "unknown"
        return digest([base_fingerprint(self._cfg, "easy_vqa"), version, _CAPTION_RULES])

    def read(self) -> Iterator[RawSeed | Reject]:
        loader = ImageLoader(self._data_dir())
        for split in self.splits:
            texts, answers, image_ids = self._questions(split)
            paths = self._image_paths(split)
            captions = derive_captions(texts, answers, image_ids)
            images: dict[int, bytes | Problem] = {}  # by id: skips path resolution per question
            label = f"easy_vqa/{split}"
            for i, (text, answer, image_id) in enumerate(zip(texts, answers, image_ids), 1):
                got = images.get(image_id)
                if got is None:
                    path = paths.get(image_id)
                    got = loader.load_path(path) if path else Problem(NOT_FOUND, f"image id {image_id}")
                    images[image_id] = got
                if isinstance(got, Problem):
                    yield Reject(label, i, "image", got.reason, got.detail)
                    continue
                meta: dict = {"image_id": image_id, "kind": _kind(answer)}
                if image_id in captions:
                    meta["caption"] = captions[image_id]
                yield RawSeed(
                    question=text,
                    split=split,
                    answer=answer,
                    images=[got],
                    metadata=meta,
                    origin=f"{label}:{i}",
                )
