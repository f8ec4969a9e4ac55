"""A perception teacher for easy-VQA-style images: one coloured shape on a light background.

It answers from the pixels and the question text alone; it never reads the gold
answer or the seed's metadata (which holds a caption). It is a small, honest
computer-vision program, so its mistakes are real ones:

* **Segmentation.** The background is the median colour of the image border; a pixel
  is part of the shape when its RGB distance from the background exceeds
  :data:`FG_THRESHOLD`. The threshold is low on purpose, to catch the whole shape, so
  the anti-aliased rim is included too.
* **Colour** is the mean RGB of the shape's pixels, named by the nearest entry of
  :data:`PALETTE` (Euclidean RGB distance). The palette was set once by looking at a
  few images; it is a constant, not fitted to labels. Rim pixels are blends of the
  shape and the background, so on small shapes the mean drifts towards the
  background: black and brown can read as gray, red as brown, teal as gray.
* **Shape** is the fill ratio of the bounding box: an ideal rectangle fills 1, a
  circle pi/4 (about 0.785), an upright triangle 0.5; the cut-offs are the midpoints
  (:data:`TRIANGLE_MAX_FILL`, :data:`CIRCLE_MAX_FILL`). Small triangles gain relative
  area from their rim and can read as circles; shapes cut by the image edge change
  their ratio.

Questions understood: "what colour is / what is the colour of ...", "what shape ... /
what is the <colour> shape", and yes/no questions naming a colour and/or a shape
("is there a red shape?", "does the image contain a circle?"), with negations ("is
there not ...", "is no ... present", "does the image not contain ..."). Anything else
gets a description of the shape as its answer.

Output: ``<think>`` with one observation per line, then the bare answer after
``</think>``. ``detail: brief`` keeps the conclusions and drops the measurements
("The question asks about a red shape." / "I see a teal circle." / "Its colour is teal,
not red, so there is no red shape."). With ``temperature > 0`` or ``sample_index > 0``
the wording varies, seeded by the input key; the measurements and the answer never do.
"""

from __future__ import annotations

import re

import numpy as np

from siqkit.teachers.base import TeacherInput, TeacherOutput
from siqkit.teachers.builtin import Phrasing, check_detail, detail_for, failure_output

# Named colours of easy-VQA shapes, as they appear in the images (checked by eye).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
    "gray": (128, 128, 128),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "rectangle", "triangle")
FG_THRESHOLD = 24.0  # RGB distance from the background that counts as "part of the shape"
TRIANGLE_MAX_FILL = 0.64  # midpoint of 0.5 (triangle) and 0.785 (circle)
CIRCLE_MAX_FILL = 0.89  # midpoint of 0.785 (circle) and 1.0 (rectangle)

_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=float)
_COLOR_WORDS = {**{n: n for n in PALETTE}, "grey": "gray"}
_SHAPE_WORDS = {"circle": "circle", "circles": "circle", "rectangle": "rectangle",
                "rectangles": "rectangle", "square": "rectangle", "triangle": "triangle",
                "triangles": "triangle"}
_NEGATION = re.compile(r"\bnot\b|n't\b|\bis no\b|\bare no\b")


class Observation:
    """What the teacher measured in one image."""

    def __init__(self, image) -> None:
        x = np.asarray(image.convert("RGB"), dtype=float)
        border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
        self.background = np.median(border, axis=0)
        dist = np.sqrt(((x - self.background) ** 2).sum(axis=2))
        mask = dist > FG_THRESHOLD
        self.pixels = int(mask.sum())
        self.total = mask.size
        if not self.pixels:
            raise ValueError("no pixel differs from the background: no shape found")
        ys, xs = np.nonzero(mask)
        self.box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        self.width = self.box[2] - self.box[0] + 1
        self.height = self.box[3] - self.box[1] + 1
        self.fill = self.pixels / (self.width * self.height)
        self.mean_rgb = x[mask].mean(axis=0)
        d = np.sqrt(((_RGB - self.mean_rgb) ** 2).sum(axis=1))
        order = np.argsort(d)
        self.color, self.runner_up = _NAMES[order[0]], _NAMES[order[1]]
        self.color_dist, self.runner_up_dist = float(d[order[0]]), float(d[order[1]])
        if self.fill < TRIANGLE_MAX_FILL:
            self.shape = "triangle"
        elif self.fill < CIRCLE_MAX_FILL:
            self.shape = "circle"
        else:
            self.shape = "rectangle"
        h, w = mask.shape
        x0, y0, x1, y1 = self.box
        self.touches_edge = x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1


def _rgb(v) -> str:
    return "RGB(" + ", ".join(str(int(round(c))) for c in v) + ")"


def _find(words: list[str], table: dict[str, str]) -> str | None:
    for w in words:
        if w in table:
            return table[w]
    return None


def answer_question(question: str, obs: Observation, say: Phrasing,
                    detail: str = "full") -> tuple[list[str], str]:
    """Reasoning lines and the answer for ``question`` given the measurements.

    ``detail="full"`` shows the measurements (background, pixel counts, mean RGB, fill
    ratio) behind each conclusion; ``detail="brief"`` states the conclusions only, in a
    few short sentences: what the question asks, what the image shows, and why the
    answer follows; ``detail="short"`` says what the image shows and, for a yes/no
    question, what follows, in one sentence. The answer is the same at every detail.
    """
    check_detail(detail)
    if detail == "short":
        return _short(question, obs)
    brief = detail == "brief"
    q = question.lower().strip()
    words = re.findall(r"[a-z]+", q)
    color_word, shape_word = _find(words, _COLOR_WORDS), _find(words, _SHAPE_WORDS)
    asks_color = bool(re.search(r"\bwhat colou?r\b|\bcolou?r of\b|\bwhich colou?r\b", q))
    asks_shape = bool(re.search(r"\b(what|which) shape\b", q)) or bool(
        re.match(r"what is the \w+ shape\b", q) and color_word
    )
    yes_no = bool(re.match(r"(is|are|does|do|can)\b", q))
    thing = " ".join(w for w in (color_word, shape_word or "shape") if w)  # what a yes/no question checks

    if brief:
        # The question first, then the look, then the check: each line copies from the one
        # source it needs (the question, the image, the two lines above).
        seen = say.pick(f"I see a {obs.color} {obs.shape}.", f"The image shows a {obs.color} {obs.shape}.")
        if yes_no and (color_word or shape_word):
            lines = [f"The question asks about a {thing}.", seen]
        elif asks_color or asks_shape:
            lines = [f"The question asks for its {'colour' if asks_color else 'shape'}.", seen]
        else:
            lines = ["The question does not ask for a colour, a shape or a yes/no check.", seen]
        color_line = f"So its colour is {obs.color}."
        shape_line = f"So it is a {obs.shape}."
    else:
        lines = [say.pick(
            f"The background is a nearly uniform light colour, about {_rgb(obs.background)}, "
            "taken from the image border.",
            f"Judging from the border, the background colour is about {_rgb(obs.background)}.",
        ), say.pick(
            f"{obs.pixels} pixels ({100 * obs.pixels / obs.total:.1f}% of the image) differ clearly from it; "
            f"they form one shape spanning {obs.width}x{obs.height} px.",
            f"One region of {obs.pixels} pixels stands out from the background; its bounding box is "
            f"{obs.width} px wide and {obs.height} px tall.",
        )]
        color_line = say.pick(
            f"The mean colour of the shape's pixels is {_rgb(obs.mean_rgb)}. The closest named colour is "
            f"{obs.color} (distance {obs.color_dist:.0f}); the next closest is {obs.runner_up} "
            f"(distance {obs.runner_up_dist:.0f}). So the shape is {obs.color}.",
            f"Averaging the shape's pixels gives {_rgb(obs.mean_rgb)}, which is nearest to {obs.color} "
            f"(distance {obs.color_dist:.0f}, against {obs.runner_up_dist:.0f} for {obs.runner_up}). "
            f"The shape is {obs.color}.",
        )
        edge = " It touches the image edge, so part of it may be cut off." if obs.touches_edge else ""
        shape_line = say.pick(
            f"The shape fills {100 * obs.fill:.0f}% of its bounding box. A rectangle would fill about 100%, "
            f"a circle about 79% and a triangle about 50%, so it is a {obs.shape}.{edge}",
            f"Fill ratio: {obs.pixels} of {obs.width * obs.height} bounding-box pixels ({100 * obs.fill:.0f}%). "
            f"That is closest to a {obs.shape} (rectangle ~100%, circle ~79%, triangle ~50%).{edge}",
        )

    if asks_color and not yes_no:
        lines.append(color_line)
        return lines, obs.color
    if asks_shape and not yes_no:
        lines.append(shape_line)
        return lines, obs.shape
    if yes_no and (color_word or shape_word):
        present = True
        checks = []
        if color_word:
            if not brief:
                lines.append(color_line)
            present &= obs.color == color_word
            differs = "" if obs.color == color_word else f", not {color_word}"
            checks.append(f"its colour is {obs.color}{differs}")
        if shape_word:
            if not brief:
                lines.append(shape_line)
            present &= obs.shape == shape_word
            differs = "" if obs.shape == shape_word else f", not a {shape_word}"
            checks.append(f"it is a {obs.shape}{differs}")
        found = "there is a" if present else "there is no"
        check = " and ".join(checks)
        if brief:
            lines.append(f"{check[0].upper()}{check[1:]}, so {found} {thing}.")
        else:
            lines.append(f"Checking for a {thing}: {check}, so {found} {thing}.")
        answer = "yes" if present else "no"
        if _NEGATION.search(q):
            answer = "no" if present else "yes"
            lines.append(say.pick(
                f"The question is negated (it asks whether there is no {thing}), "
                f"so the answer flips to {answer}.",
                f"Because the question asks about the absence of a {thing}, the answer is {answer}.",
            ))
        return lines, answer
    if brief:
        lines.append("So I describe the shape.")
    else:
        lines += [color_line, shape_line,
                  "The question does not ask for a colour, a shape or a yes/no check, so I describe the shape."]
    return lines, f"a {obs.color} {obs.shape}"


def _short(question: str, obs: Observation) -> tuple[list[str], str]:
    """``detail="short"``: one sentence, from the same reading of the question as the others."""
    lines, answer = answer_question(question, obs, Phrasing(), "brief")
    seen = f"I see a {obs.color} {obs.shape}"
    if answer in ("yes", "no"):
        # The brief check line, with the sight in front: "I see a teal circle, so there is no red shape."
        found = lines[2].split(", so ", 1)[-1] if len(lines) > 2 else ""
        flipped = "; the question is negated" if len(lines) > 3 else ""
        return [f"{seen}, so {found.rstrip('.')}{flipped}."], answer
    return [f"{seen}."], answer


class EasyVQATeacher:
    """Answers easy-VQA questions from pixels (see the module docstring).

    ``detail`` (``full``, ``brief``, ``short`` or a list of them cycled over samples) sets how
    much of the measuring its reasoning shows: see :func:`answer_question`. ``brief`` suits a small student, which cannot learn to
    reproduce pixel statistics but can learn to state what it sees and check it against
    the question; ``backend: python`` passes it as ``options: {detail: brief}``.
    """

    name = "easyvqa-perception"

    def __init__(self, detail: str = "full") -> None:
        self.detail = check_detail(detail)

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        return [self._one(inp) for inp in batch]

    def __call__(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        return self.generate(batch)

    def close(self) -> None:
        pass

    def _one(self, inp: TeacherInput) -> TeacherOutput:
        if len(inp.images) != 1:
            return failure_output(inp, f"expected one image, got {len(inp.images)}")
        try:
            obs = Observation(inp.images[0])
        except ValueError as exc:
            return failure_output(inp, str(exc))
        lines, answer = answer_question(inp.question, obs, Phrasing.for_input(inp), detail_for(self.detail, inp))
        text = "<think>\n" + "\n".join(lines) + "\n</think>\n\n" + answer
        return TeacherOutput(key=inp.key, text=text, finish_reason="stop",
                             completion_tokens=len(text.split()))


_TEACHER = EasyVQATeacher()


def generate(batch: list[TeacherInput]) -> list[TeacherOutput]:
    """Module-level entry point for ``backend: python`` (``callable: ...perception:generate``)."""
    return _TEACHER.generate(batch)


__all__ = ["EasyVQATeacher", "Observation", "PALETTE", "answer_question", "generate"]
