"""A digit-reading teacher for the ``digits`` source: read two handwritten numbers, do the sum.

It answers from the image and the question alone (never the gold answer, never the
seed's metadata, which lists the numbers). Steps:

1. **Segment.** The image follows the ``digits`` source's layout
   (:mod:`siqkit.seeds.sources.digits`): one row of ``CELL``-pixel cells after a
   ``PAD``-pixel margin, numbers separated by at least one empty cell. The cell count
   comes from the image width; an image of any other size is answered with an error
   output. Each run of inked cells is one number.
2. **Read.** Each cell is averaged back to 8x8 and rescaled to scikit-learn's 0–16 ink
   range; cells without ink are skipped. An RBF support-vector classifier, sigmoid-
   calibrated so that each reading has a confidence, reads each glyph. It is trained
   on the **train glyph pool only**, the same seeded split
   (:func:`~siqkit.seeds.sources.digits.split_glyphs`) that the source uses, so test
   images show glyphs the classifier has never seen, and it misreads some of them
   (about 1–2% of test glyphs, so a few percent of questions). Training takes under a
   second and happens once per process per (seed, test_fraction).
3. **Compute.** The operation comes from the question's words (sum/add/plus,
   product/multiply/times, minus/difference/subtract); "the larger number minus the
   smaller number" and "difference" give a non-negative result. A question on three
   numbers ("the sum of the three numbers"; "add the first two numbers …, then multiply
   the sum by the third"; "multiply the first two …, then add the third") is worked in two
   steps, each written out.

Output: numbered steps, then a final ``Answer: N`` line (no think tags, unlike the
perception teacher), which :func:`siqkit.teachers.parse.parse_cot` reads as reasoning
and answer. ``detail: brief`` gives the numbers, then one line per arithmetic step;
``detail: short`` one line with the arithmetic alone. With
``temperature > 0`` or ``sample_index > 0`` the wording varies, seeded by the input
key; the reading and the answer never do.

The module-level :func:`generate` assumes the recipe defaults (``seed: 0``,
``test_fraction: 0.25``). For a run with other values, use
``DigitTeacher(seed=..., test_fraction=...)``, which is itself a batch function: a
mismatched split would let the classifier train on glyphs shown in test images.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from siqkit.seeds.sources.digits import CELL, PAD, SCALE, split_glyphs
from siqkit.teachers.base import TeacherInput, TeacherOutput
from siqkit.teachers.builtin import Phrasing, check_detail, detail_for, failure_output

INK_MIN = 1.0  # a cell whose brightest 8x8 ink value is below this (of 16) is empty

_TWO_STEP = (
    ("add_add", re.compile(r"\bsum of the three\b")),
    ("add_multiply", re.compile(r"\badd\b.*\bthen multiply")),
    ("multiply_add", re.compile(r"\bmultiply\b.*\bthen add")),
)
_OPERATIONS = (
    ("subtract", re.compile(r"\b(minus|difference|subtract\w*|take away)\b")),
    ("multiply", re.compile(r"\b(product|multipl\w*|times)\b")),
    ("add", re.compile(r"\b(sum|add|added|plus|total)\b")),
)


@lru_cache(maxsize=4)
def train_classifier(seed: int = 0, test_fraction: float = 0.25):
    """An SVC fitted on the train glyph pool of the source's split; cached per process."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits  # bundled data: no download
    from sklearn.svm import SVC

    digits = load_digits()
    train = split_glyphs(len(digits.target), test_fraction, seed)["train"]
    # Sigmoid calibration turns SVC margins into the confidences quoted in the reasoning;
    # its folds are unshuffled, so every process fits the same model. ensemble=False
    # keeps one SVC fitted on all train glyphs, so readings are the SVC's own.
    model = CalibratedClassifierCV(SVC(), ensemble=False)
    model.fit(digits.data[train], digits.target[train])
    return model


def cells_of(image) -> list[np.ndarray]:
    """The image's cells as 8x8 ink arrays (0–16), left to right; ValueError off-layout."""
    gray = np.asarray(image.convert("L"), dtype=float)
    h, w = gray.shape
    n_cells, rest = divmod(w - 2 * PAD, CELL)
    if h != 2 * PAD + CELL or rest or n_cells < 3 or n_cells % 2 == 0:
        raise ValueError(
            f"image is {w}x{h} px, which is not the digits layout "
            f"(height {2 * PAD + CELL}, an odd number of {CELL}-px cells plus {PAD}-px margins)"
        )
    if np.median(gray) < 128:  # light ink on dark: flip so that ink is dark
        gray = 255 - gray
    ink = (255 - gray) * (16 / 255)
    row = ink[PAD : PAD + CELL, PAD : PAD + n_cells * CELL]
    # (CELL, n*CELL) -> (n, 8, 8): average each SCALE x SCALE block of each cell.
    blocks = row.reshape(8, SCALE, n_cells, 8, SCALE).mean(axis=(1, 4))
    return [blocks[:, c, :] for c in range(n_cells)]


class Reading:
    """The glyphs found in one image, read later in a batch by :meth:`read`."""

    def __init__(self, image) -> None:
        cells = cells_of(image)
        self.n_cells = len(cells)
        inked = [c for c in range(self.n_cells) if cells[c].max() >= INK_MIN]
        # Runs of adjacent inked cells: one per number.
        self.sides: list[list[int]] = []
        for c in inked:
            if self.sides and self.sides[-1][-1] == c - 1:
                self.sides[-1].append(c)
            else:
                self.sides.append([c])
        if len(self.sides) < 2:
            raise ValueError("found fewer than two numbers (runs of inked cells)")
        self.features = np.stack([cells[c].reshape(-1) for side in self.sides for c in side])
        # Per number: (cell number from 1, digit, confidence, runner-up digit).
        self.numbers: list[list[tuple[int, int, float, int]]] = []
        self.values: list[int] = []

    def read(self, proba: np.ndarray, classes: np.ndarray) -> None:
        """Fill ``numbers`` and ``values`` from class probabilities of ``features``."""
        order = np.argsort(-proba, axis=1)
        glyphs = [
            (c + 1, int(classes[o[0]]), float(p[o[0]]), int(classes[o[1]]))
            for c, p, o in zip([c for side in self.sides for c in side], proba, order)
        ]
        self.numbers, start = [], 0
        for side in self.sides:
            self.numbers.append(glyphs[start : start + len(side)])
            start += len(side)
        self.values = [int("".join(str(g[1]) for g in number)) for number in self.numbers]


def operation_of(question: str) -> str | None:
    """add, subtract, multiply, add_add, add_multiply or multiply_add, from the question's
    words; None when none is named."""
    q = question.lower()
    for name, pattern in _TWO_STEP + _OPERATIONS:
        if pattern.search(q):
            return name
    return None


def _glyphs(number, say: Phrasing) -> str:
    parts = []
    for cell, digit, conf, second in number:
        doubt = f", maybe {'an' if second == 8 else 'a'} {second}" if conf < 0.8 else ""
        parts.append(say.pick(f"cell {cell} reads {digit} ({conf:.2f}{doubt})",
                              f"cell {cell} looks like a {digit} (confidence {conf:.2f}{doubt})"))
    return "; ".join(parts)


_SYMBOL = {"add": "+", "multiply": "×"}


def _listed(values: list[int]) -> str:
    return ", ".join(map(str, values[:-1])) + f" and {values[-1]}"


def solve(question: str, reading: Reading, say: Phrasing, detail: str = "full") -> tuple[list[str], int]:
    """Numbered reasoning steps and the result; ValueError when the operation is unknown
    or does not fit the count of numbers read.

    ``detail="full"`` shows the layout and every glyph with its confidence, then each
    arithmetic step; ``detail="brief"`` states the numbers, then each arithmetic step;
    ``detail="short"`` writes the arithmetic alone, on one line.
    """
    check_detail(detail)
    op = operation_of(question)
    if op is None:
        raise ValueError("the question names no sum, difference or product")
    values = reading.values
    wanted = 3 if op in ("add_add", "add_multiply", "multiply_add") else 2
    if len(values) != wanted:
        raise ValueError(f"read {len(values)} numbers, but the question is about {wanted}")
    if wanted == 3:
        first, then = op.split("_")
        a, b, c = values
        mid = a + b if first == "add" else a * b
        result = mid * c if then == "multiply" else mid + c
        works = [f"{a} {_SYMBOL[first]} {b} = {mid}", f"{mid} {_SYMBOL[then]} {c} = {result}"]
        named = [f"First, {'the sum' if first == 'add' else 'the product'} of the first two: {works[0]}.",
                 f"Then {'times' if then == 'multiply' else 'plus'} the third: {works[1]}."]
    elif op == "add":
        a, b = values
        result, works = a + b, [f"{a} + {b} = {a + b}"]
        named = [say.pick(f"The question asks for the sum: {works[0]}.", f"Adding them: {works[0]}.")]
    elif op == "multiply":
        a, b = values
        result, works = a * b, [f"{a} × {b} = {a * b}"]
        named = [say.pick(f"The question asks for the product: {works[0]}.", f"Multiplying them: {works[0]}.")]
    else:
        hi, lo = max(values), min(values)
        result, works = hi - lo, [f"{hi} - {lo} = {hi - lo}"]
        named = [say.pick(f"The larger number minus the smaller one: {works[0]}.",
                          f"Subtracting the smaller number from the larger: {works[0]}.")]
    if detail == "short":
        return ["; ".join(works) + "."], result
    if detail == "brief":
        return [f"The numbers are {_listed(values)}.", *(f"{w}." for w in works)], result
    steps = [say.pick(
        f"The image is one row of {reading.n_cells} glyph cells; empty cells separate "
        f"{len(values)} numbers.",
        f"I split the row into {reading.n_cells} cells of {CELL}x{CELL} px and find {len(values)} "
        f"numbers between empty cells.",
    )]
    for k, (number, value) in enumerate(zip(reading.numbers, values)):
        nth = ("First", "Second", "Third", "Fourth")[min(k, 3)]
        steps.append(f"{nth} number: {_glyphs(number, say)}. So the {nth.lower()} number is {value}.")
    return steps + named, result


class DigitTeacher:
    """Reads the two numbers in a ``digits`` image and answers its arithmetic question."""

    name = "digit-reader"

    def __init__(self, seed: int = 0, test_fraction: float = 0.25, detail: str = "full") -> None:
        self.seed, self.test_fraction = int(seed), float(test_fraction)
        self.detail = check_detail(detail)

    @property
    def model(self):
        return train_classifier(self.seed, self.test_fraction)

    def __call__(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        return self.generate(batch)

    def close(self) -> None:
        pass

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        prepared = [self._one(inp) for inp in batch]
        readings = [r for r in prepared if isinstance(r, Reading)]
        if readings:
            # One classifier call for the whole batch: per-call overhead dominates otherwise.
            model = self.model
            proba = model.predict_proba(np.concatenate([r.features for r in readings]))
            start = 0
            for r in readings:
                r.read(proba[start : start + len(r.features)], model.classes_)
                start += len(r.features)
        return [r if isinstance(r, TeacherOutput) else self._answer(inp, r)
                for inp, r in zip(batch, prepared)]

    def _one(self, inp: TeacherInput) -> TeacherOutput | Reading:
        """A Reading ready to classify, or the error output for this input."""
        if len(inp.images) != 1:
            return failure_output(inp, f"expected one image, got {len(inp.images)}")
        try:
            return Reading(inp.images[0])
        except ValueError as exc:
            return failure_output(inp, str(exc))

    def _answer(self, inp: TeacherInput, reading: Reading) -> TeacherOutput:
        try:
            steps, result = solve(inp.question, reading, Phrasing.for_input(inp), detail_for(self.detail, inp))
        except ValueError as exc:
            return failure_output(inp, str(exc))
        text = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1)) + f"\n\nAnswer: {result}"
        return TeacherOutput(key=inp.key, text=text, finish_reason="stop",
                             completion_tokens=len(text.split()))


_TEACHER = DigitTeacher()


def generate(batch: list[TeacherInput]) -> list[TeacherOutput]:
    """Module-level entry point for ``backend: python`` (recipe defaults: seed 0, test_fraction 0.25)."""
    return _TEACHER.generate(batch)
