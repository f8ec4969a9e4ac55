"""The ``digits`` built-in source: arithmetic questions on images of handwritten numbers.

Glyphs come from scikit-learn's ``load_digits()`` (1,797 scans of 8x8 handwritten
digits, ink 0-16, bundled with the package). Generation, all deterministic in ``seed``:

1. The 1,797 glyphs are split once by a seeded permutation: ``test_fraction`` of
   them form the test pool, the rest the train pool, so a test image never reuses a
   training glyph.
2. The question comes from an operation picked uniformly from ``operations``. One-step
   operations on two numbers: "add" (sum), "multiply" (product) and "subtract", phrased
   as "the larger number minus the smaller number" so the gold answer is never negative
   and never depends on reading order. Two-step operations on three numbers, read left
   to right, which cannot be answered at a glance: "add_add" (the sum of the three, one
   addition after the other), "add_multiply" (add the first two, then multiply by the
   third) and "multiply_add" (multiply the first two, then add the third).
3. Each image shows as many numbers as its operation takes, each of 1..``max_digits``
   digits (no leading zeros), every digit drawn as a random glyph of that digit from the
   split's pool.
4. Layout, in one row: ``[pad][first number, right-aligned][one empty cell][second
   number, left-aligned]([one empty cell][third number, left-aligned])[pad]``, every
   number in a slot of ``max_digits`` cells. A cell is a glyph upscaled 3x (nearest) to
   24x24 px, so the numbers are always at least one empty cell apart. Dark ink on a
   white background, RGB, PNG. The canvas size depends only on ``max_digits`` and the
   count of numbers.

Each split has its own random stream, so changing the size of one split leaves the
other's images unchanged. Metadata: ``operation``, ``steps`` (arithmetic operations the
answer takes: 1 or 2), ``difficulty`` (the generator's rating on the annotate stage's 1–5
scale: 2 for one step, 4 for two), ``task`` ("1-step arithmetic" or "2-step arithmetic", what
``eval.task_by: metadata.task`` groups scores by), ``numbers``, ``glyphs`` (per number, the ``load_digits`` indices of
its digits, left to right) and ``caption`` ("two handwritten numbers: 47 and 5").
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
from PIL import Image

from siqkit.records import RawSeed

from .base import SourceError, base_fingerprint, digest, setting, splits_filter

SPLITS = ("train", "test")
QUESTIONS = {
    "add": "What is the sum of the two numbers in the image?",
    "subtract": "What is the larger number minus the smaller number in the image?",
    "multiply": "What is the product of the two numbers in the image?",
    "add_add": "What is the sum of the three numbers in the image?",
    "add_multiply": "Add the first two numbers in the image, then multiply the sum by the third. What is the result?",
    "multiply_add": "Multiply the first two numbers in the image, then add the third. What is the result?",
}
ARITY = {"add": 2, "subtract": 2, "multiply": 2, "add_add": 3, "add_multiply": 3, "multiply_add": 3}
STEPS = {"add": 1, "subtract": 1, "multiply": 1, "add_add": 2, "add_multiply": 2, "multiply_add": 2}
_COUNT_WORDS = {2: "two", 3: "three"}
DEFAULT_NUM_IMAGES = {"train": 3000, "test": 600}
SCALE = 3  # 8 px glyph -> 24 px cell
CELL = 8 * SCALE
PAD = 4
_GENERATOR_VERSION = 2  # bump when the images or questions produced here change


def gold_answer(operation: str, a: int, b: int, c: int | None = None) -> int:
    """The exact answer to ``operation`` on the numbers shown (``c``: the third, for two-step ones)."""
    if operation == "add_add":
        return a + b + c
    if operation == "add_multiply":
        return (a + b) * c
    if operation == "multiply_add":
        return a * b + c
    if operation == "add":
        return a + b
    if operation == "subtract":
        return max(a, b) - min(a, b)
    if operation == "multiply":
        return a * b
    raise ValueError(f"unknown operation {operation!r}")


def _load_digits():
    from sklearn.datasets import load_digits  # bundled data: no download

    d = load_digits()
    return d.images, d.target


def split_glyphs(n: int, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Disjoint, sorted glyph indices per split from one seeded permutation."""
    perm = np.random.default_rng([seed, 0]).permutation(n)
    n_test = int(round(n * test_fraction))
    return {"test": np.sort(perm[:n_test]), "train": np.sort(perm[n_test:])}


class DigitsSource:
    """Generates ``num_images`` arithmetic seeds per split from handwritten digits."""

    def __init__(self, cfg: Any, seed: int):
        self.name: str = cfg.name
        self.seed = int(seed)
        self.num_images: dict[str, int] = dict(setting(cfg, "num_images", DEFAULT_NUM_IMAGES))
        self.max_digits = int(setting(cfg, "max_digits", 2))
        self.operations: list[str] = list(setting(cfg, "operations", ["add", "subtract", "multiply"]))
        self.test_fraction = float(setting(cfg, "test_fraction", 0.25))
        wanted = splits_filter(cfg)
        self.splits = [s for s in SPLITS if s in self.num_images and (wanted is None or s in wanted)]
        self._cfg = cfg
        self._check()

    def _check(self) -> None:
        bad = sorted(set(self.num_images) - set(SPLITS))
        if bad:
            raise SourceError(f"digits: num_images has unknown split(s) {bad}; use 'train' and 'test'")
        if any(int(v) < 0 for v in self.num_images.values()):
            raise SourceError("digits: num_images must not be negative")
        if not 1 <= self.max_digits <= 4:
            raise SourceError(f"digits: max_digits must be 1..4, got {self.max_digits}")
        unknown = sorted(set(self.operations) - set(QUESTIONS))
        if unknown or not self.operations:
            raise SourceError(f"digits: operations must be a non-empty subset of {sorted(QUESTIONS)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise SourceError(f"digits: test_fraction must be between 0 and 1, got {self.test_fraction}")

    def describe(self) -> dict:
        return {
            "type": "digits",
            "path": None,
            "size_bytes": None,
            "rows": sum(int(self.num_images[s]) for s in self.splits),
            "splits": list(self.splits),
        }

    def fingerprint(self) -> str:
        versions = {p: importlib_metadata.version(p) for p in ("scikit-learn", "numpy", "pillow")}
        return digest(
            [
                base_fingerprint(self._cfg, "digits"),
                self.seed,
                self.num_images,
                self.max_digits,
                self.operations,
                self.test_fraction,
                versions,  # numpy streams and PNG encoding may change between versions
                _GENERATOR_VERSION,
            ]
        )

    def read(self) -> Iterator[RawSeed]:
        glyph_images, targets = _load_digits()
        # Ink 0..16 -> grey level 255..0, upscaled once for all glyphs.
        ink = (255 - np.rint(glyph_images * (255 / 16))).astype(np.uint8)
        cells = ink.repeat(SCALE, axis=1).repeat(SCALE, axis=2)
        pools = split_glyphs(len(targets), self.test_fraction, self.seed)
        for code, split in enumerate(SPLITS):
            if split not in self.splits:
                continue
            by_digit = [pools[split][targets[pools[split]] == d] for d in range(10)]
            if any(len(p) == 0 for p in by_digit):
                raise SourceError(
                    f"digits: test_fraction {self.test_fraction} leaves a digit with no glyph in '{split}'"
                )
            rng = np.random.default_rng([self.seed, 1, code])
            for i in range(1, int(self.num_images[split]) + 1):
                yield self._one(rng, by_digit, cells, split, i)

    def _number(self, rng: np.random.Generator, by_digit) -> tuple[int, list[int]]:
        n_digits = int(rng.integers(1, self.max_digits + 1))
        digits = [int(rng.integers(1 if n_digits > 1 else 0, 10))]
        digits += [int(d) for d in rng.integers(0, 10, size=n_digits - 1)]
        glyphs = [int(rng.choice(by_digit[d])) for d in digits]
        return int("".join(map(str, digits))), glyphs

    def _one(self, rng, by_digit, cells, split: str, i: int) -> RawSeed:
        # Draw order (two numbers, the operation, then any third number) keeps the streams
        # of one-step operations what they were before two-step ones existed.
        numbers = [self._number(rng, by_digit), self._number(rng, by_digit)]
        operation = self.operations[int(rng.integers(len(self.operations)))]
        numbers += [self._number(rng, by_digit) for _ in range(ARITY[operation] - 2)]
        values, glyphs = [n for n, _ in numbers], [g for _, g in numbers]
        slots = len(numbers) * self.max_digits + len(numbers) - 1
        canvas = np.full((2 * PAD + CELL, 2 * PAD + slots * CELL), 255, dtype=np.uint8)
        for k, number in enumerate(glyphs):
            x = PAD + k * (self.max_digits + 1) * CELL
            if k == 0:
                x += (self.max_digits - len(number)) * CELL  # first number right-aligned
            for g in number:
                canvas[PAD : PAD + CELL, x : x + CELL] = cells[g]
                x += CELL
        buf = io.BytesIO()
        Image.fromarray(np.stack([canvas] * 3, axis=-1), "RGB").save(buf, "PNG")
        return RawSeed(
            question=QUESTIONS[operation],
            split=split,
            answer=str(gold_answer(operation, *values)),
            images=[buf.getvalue()],
            metadata={
                "operation": operation,
                "steps": STEPS[operation],
                "difficulty": 2 * STEPS[operation],
                "task": f"{STEPS[operation]}-step arithmetic",
                "numbers": values,
                "glyphs": glyphs,
                "caption": f"{_COUNT_WORDS[len(values)]} handwritten numbers: "
                           f"{', '.join(map(str, values[:-1]))} and {values[-1]}",
            },
            origin=f"digits/{split}:{i}",
        )
