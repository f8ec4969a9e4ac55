"""The one interface every teacher backend implements.

A teacher receives a batch of :class:`TeacherInput` and returns one
:class:`TeacherOutput` per input, in the same order. Backends never raise for a
single bad sample: they return an output with ``finish_reason="error"`` and the
error text, so the generate stage can store it with its reason and go on.

An engine that batches continuously (vLLM, transformers' paged engine) also offers
``stream``: it pulls inputs lazily, keeps up to its window of requests in flight, and
yields each output as soon as it finishes, in completion order. :func:`iter_outputs`
gives the generate stage one loop for both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Literal, Protocol

from PIL import Image


DEFAULT_BATCH = 8
"""Requests per ``generate`` call when a recipe gives no ``batch_size`` (and the backend no window)."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; part of every work key, so changing them means new work."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    min_new_tokens: int = 0  # forced-length outputs for benchmarks (transformers, vllm); recipes leave it 0


@dataclass
class TeacherInput:
    """One request: a seed's question and images, the rendered prompt, the sampling."""

    key: str  # work key: hash of (seed, teacher, prompt, sampling, sample index)
    seed_id: str
    question: str
    images: list[Image.Image]
    # OpenAI-style chat messages. A user message's content is a list of parts:
    # {"type": "image"} (the next image of ``images``, in order) or {"type": "text", "text": ...}.
    messages: list[dict]
    sampling: Sampling = field(default_factory=Sampling)
    sample_index: int = 0
    metadata: dict = field(default_factory=dict)  # the seed's metadata (never its gold answer)


FinishReason = Literal["stop", "length", "error"]


@dataclass
class TeacherOutput:
    """The raw result of one request."""

    key: str
    text: str
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None


class Teacher(Protocol):
    """A loaded teacher. ``generate`` keeps input order; ``close`` frees its resources."""

    name: str

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]: ...

    def close(self) -> None: ...


class StreamingTeacher(Teacher, Protocol):
    """A teacher whose engine takes many requests at once and finishes them one by one.

    ``stream`` consumes ``inputs`` lazily (at most ``window`` ahead of what has finished)
    and yields one output per input, as each finishes; ``window`` is how many requests it
    holds at once.
    """

    window: int

    def stream(self, inputs: Iterable[TeacherInput]) -> Iterator[TeacherOutput]: ...


def iter_outputs(teacher: Teacher, inputs: Iterable[TeacherInput], chunk: int) -> Iterator[TeacherOutput]:
    """Every input's output, as soon as the teacher has it.

    A streaming teacher gets the whole (lazy) input stream; any other gets ``generate``
    calls of ``chunk`` inputs, and its outputs come back one call at a time.
    """
    stream = getattr(teacher, "stream", None)
    if stream is not None:
        yield from stream(inputs)
        return
    it = iter(inputs)
    while batch := list(islice(it, chunk)):
        yield from teacher.generate(batch)
