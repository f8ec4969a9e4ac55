"""Split a teacher's raw output into reasoning and answer, and build training targets.

:func:`parse_cot` recognises, in this order:

1. a ``</think>`` closing tag: the reasoning is what precedes the *last* ``</think>``
   (the opening ``<think>`` is optional, because thinking chat templates often put it in
   the prompt), the answer is what follows it, or the content of the last
   ``<answer>…</answer>`` in what follows it;
2. ``<answer>…</answer>`` without a think block: the last one is the answer, the text
   before it the reasoning. A trailing ``<answer>`` left open by a stop sequence counts;
3. an answer line at the end: ``Answer: X``, ``Final answer: X``, ``**Answer:** X``,
   ``**Final Answer:** X`` (the last such line, everything after it is the answer), or the
   last ``\\boxed{X}``; the text before it is the reasoning.

Statuses, each with a one-line ``reason`` unless ``ok``:

- ``ok``: reasoning and answer both found;
- ``no_reasoning``: an answer, but an empty think block or nothing before the answer;
- ``no_answer``: nothing after ``</think>``, or no recognisable form at all;
- ``truncated``: ``finish_reason == "length"`` or a ``<think>`` that is never closed
  (any partial reasoning is kept, the answer is not);
- ``empty``: blank output;
- ``error``: the teacher reported an error for this sample.

Stray ``<think>``/``</think>``/``<answer>``/``</answer>`` tags left inside the reasoning
are removed, so that a training target always has exactly one think block.
:func:`format_target` writes ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``, the
Qwen3 thinking layout that llama.cpp's reasoning parser understands; parsing its result
gives back the same reasoning and answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "no_reasoning", "no_answer", "truncated", "empty", "error"]

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_STRAY_TAGS = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
# An answer line: optional markdown (bullets, headings, bold), "Answer" or "Final answer",
# a colon inside or outside the bold, then the answer to the end of the text.
_ANSWER_LINE = re.compile(
    r"^[ \t>#*_-]*(?:\*\*|__)?\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*"
    r"(?::\s*(?:\*\*|__)|(?:\*\*|__)\s*:|:)[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(frozen=True)
class Parsed:
    """The result of :func:`parse_cot`; ``reason`` says why when ``status`` is not ok."""

    reasoning: str | None
    answer: str | None
    status: Status
    reason: str | None = None


def parse_cot(text: str | None, finish_reason: str = "stop", error: str | None = None) -> Parsed:
    """Parse a raw teacher output; never raises. See the module docstring for the forms."""
    if finish_reason == "error":
        return Parsed(None, None, "error", f"teacher error: {error}" if error else "teacher error")
    if text is None or not text.strip():
        return Parsed(None, None, "empty", "the teacher returned no text")

    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        last = closes[-1]
        reasoning = _clean(_THINK_OPEN.split(text[: last.start()], maxsplit=1)[-1])
        tail = text[last.end() :]
        if finish_reason == "length":
            return Parsed(reasoning, None, "truncated", "hit the token limit (finish_reason=length)")
        answer = _tagged_answer(tail)
        if answer is None:
            answer = _strip(tail)
        if answer is None:
            return Parsed(reasoning, None, "no_answer", "nothing after </think>")
        return _result(reasoning, answer, "empty <think> block")

    if _THINK_OPEN.search(text):
        partial = _clean(_THINK_OPEN.split(text, maxsplit=1)[1])
        why = "hit the token limit (finish_reason=length)" if finish_reason == "length" else "unclosed <think> block"
        return Parsed(partial, None, "truncated", why)

    if finish_reason == "length":
        return Parsed(_clean(text), None, "truncated", "hit the token limit (finish_reason=length)")

    opens = list(_ANSWER_OPEN.finditer(text))
    if opens:
        start = opens[-1]
        answer = _tagged_answer(text[start.start() :])
        reasoning = _clean(text[: start.start()])
        if answer is None:
            return Parsed(reasoning, None, "no_answer", "empty <answer> tag")
        return _result(reasoning, answer, "no text before <answer>")

    marked = _marked_answer(text)
    if marked is not None:
        reasoning, answer = marked
        return _result(reasoning, answer, "no text before the answer line")

    return Parsed(
        None,
        None,
        "no_answer",
        "no </think>, <answer>, 'Answer:' line or \\boxed{} found",
    )


def format_target(reasoning: str | None, answer: str) -> str:
    """The training target: ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``.

    An empty or missing reasoning gives an empty think block (Qwen3's non-thinking form).
    Raises ``ValueError`` for an empty answer, since such a target teaches nothing.
    """
    answer = (answer or "").strip()
    if not answer:
        raise ValueError("a training target needs a non-empty answer")
    body = _clean(reasoning or "") or ""
    return f"<think>\n{body}\n</think>\n\n{answer}"


def _result(reasoning: str | None, answer: str, no_reasoning_why: str) -> Parsed:
    if reasoning is None:
        return Parsed(None, answer, "no_reasoning", no_reasoning_why)
    return Parsed(reasoning, answer, "ok")


def _strip(text: str) -> str | None:
    text = text.strip()
    return text or None


def _clean(text: str) -> str | None:
    """Reasoning without stray tags and surrounding blank space; None when nothing is left."""
    return _strip(_STRAY_TAGS.sub("", text))


def _tagged_answer(text: str) -> str | None:
    """Content of the last ``<answer>`` in ``text`` (to ``</answer>`` or the end), or None."""
    opens = list(_ANSWER_OPEN.finditer(text))
    if not opens:
        return None
    rest = text[opens[-1].end() :]
    close = _ANSWER_CLOSE.search(rest)
    inner = rest[: close.start()] if close else rest
    return _strip(_STRAY_TAGS.sub("", inner))


def _marked_answer(text: str) -> tuple[str | None, str] | None:
    """(reasoning, answer) from a final answer line or the last ``\\boxed{}``, or None."""
    line = None
    for m in _ANSWER_LINE.finditer(text):
        line = m
    boxed = _last_boxed(text)
    if line is not None and (boxed is None or boxed[0] < line.end()):
        # The last \boxed{} lies before this line, so the line's text is the answer.
        answer = _strip(text[line.end() :].rstrip("*_ \t\n"))
        if answer is not None:
            return _clean(text[: line.start()]), answer
    if boxed is not None:
        start, _, inner = boxed
        if not inner:
            return None
        line_start = text.rfind("\n", 0, start) + 1
        reasoning = _clean(text[:line_start]) or _clean(text[:start])
        return reasoning, inner
    return None


def _last_boxed(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the last ``\\boxed{...}`` with balanced braces, or None."""
    found = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = (m.start(), i, text[m.end() : i - 1].strip())
    return found
