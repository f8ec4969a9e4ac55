"""Built-in teachers that need no model checkpoint: small programs that look at pixels.

- :mod:`~siqkit.teachers.builtin.perception`: colour and shape questions on easy-VQA
  images, answered from pixel statistics and geometry;
- :mod:`~siqkit.teachers.builtin.digit_reader`: arithmetic on images of handwritten
  numbers, read with a scikit-learn classifier trained on the source's train glyphs.

Both work with ``backend: python`` through their module-level ``generate(batch)``, and
as objects with the :class:`~siqkit.teachers.base.Teacher` interface. They read only
the image and the question, never the gold answer or the seed's metadata, and they make
real mistakes, which is what lets a CPU-only run exercise difficulty estimation and
answer filtering. Both take ``detail``: ``full`` reasoning shows the measurements behind
each conclusion, ``brief`` only the conclusions, for students too small to reproduce
pixel statistics, and ``short`` one line, the least a conclusion needs. A list of them
(``[short, brief]``) is cycled over a seed's samples: sample ``i`` is written at
``detail[i % len(detail)]``, so k samples give the curate stage traces of several lengths
to match to each question's difficulty (``curate.selection.reasoning_length``). This module
holds what they share.
"""

from __future__ import annotations

import hashlib
import random

from siqkit.teachers.base import TeacherInput, TeacherOutput


DETAILS = ("full", "brief", "short")


def check_detail(detail: str | list[str] | tuple[str, ...]) -> str | tuple[str, ...]:
    """``detail`` itself (a list as a tuple), or ValueError when it is not one of
    :data:`DETAILS` or a non-empty list of them."""
    several = isinstance(detail, (list, tuple))
    for d in (detail if several else [detail]):
        if d not in DETAILS:
            raise ValueError(f"detail must be one of {', '.join(DETAILS)} or a list of them, not {d!r}")
    if several and not detail:
        raise ValueError("detail: an empty list")
    return tuple(detail) if several else detail


def detail_for(detail: str | tuple[str, ...], inp: TeacherInput) -> str:
    """The detail of ``inp``'s sample: ``detail`` itself, or a list's entry for its sample index."""
    return detail[inp.sample_index % len(detail)] if isinstance(detail, tuple) else detail


class Phrasing:
    """Chooses among equivalent wordings.

    Greedy requests (``temperature == 0`` and ``sample_index == 0``) always get the
    first wording, so a rerun gives the same text. Sampled requests get a wording drawn
    from a generator seeded by the input's work key: varied across samples, repeatable
    for the same key. Only wording is chosen here, never a measurement or an answer.
    """

    def __init__(self, key: str | None = None) -> None:
        self._rng = None
        if key is not None:
            digest = hashlib.sha256(key.encode("utf-8")).digest()
            self._rng = random.Random(int.from_bytes(digest[:8], "big"))

    @classmethod
    def for_input(cls, inp: TeacherInput) -> "Phrasing":
        sampled = inp.sampling.temperature > 0 or inp.sample_index > 0
        return cls(inp.key if sampled else None)

    def pick(self, *options: str) -> str:
        return options[0] if self._rng is None else self._rng.choice(options)


def failure_output(inp: TeacherInput, message: str) -> TeacherOutput:
    """An error output for one input; the generate stage stores it with its reason."""
    return TeacherOutput(key=inp.key, text="", finish_reason="error", error=message)
