"""Reasoning statistics: how long a trace is and how many steps it takes.

:func:`reasoning_stats` measures one parsed trace (its reasoning and its answer). The
numbers feed the rule-based filters (too short, too long, no steps) and the report's
histograms, so the rules are fixed and written down here.

Token counts
    ``tokens`` is always the whitespace token count (``len(text.split())``): cheap,
    model-free, and the same number everywhere in siqkit. ``model_tokens`` is filled
    only when a tokenizer is given: any object with ``encode(text)`` (a Hugging Face
    tokenizer is called with ``add_special_tokens=False``) or a callable returning a
    sequence.

Steps (:func:`count_steps`), the first rule that applies wins:
    1. ``numbered``: at least two lines open with a step marker, ``1.``, ``2)``,
       ``(3)``, ``Step 4:`` or ``- `` / ``* `` bullets; steps = number of such lines.
    2. ``lines``: at least two non-empty lines; steps = number of non-empty lines.
    3. ``sentences``: one paragraph; steps = number of sentences, split after ``.``,
       ``!`` or ``?`` followed by whitespace and not inside a number ("3.5").
    Empty reasoning has 0 steps under rule ``empty``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

_STEP_MARKER = re.compile(
    r"^\s*(?:(?:step|stage)\s*\d+\s*[:.)-]?|\(?\d{1,3}[.)]\s|\(\d{1,3}\)|[-*•]\s)", re.IGNORECASE
)
# A sentence ends at . ! ? (optionally closing quotes/brackets) followed by whitespace;
# "3.5" never splits because the dot is followed by a digit, not whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


@dataclass(frozen=True)
class ReasoningStats:
    """Length and structure of one trace."""

    tokens: int  # whitespace tokens in the reasoning
    model_tokens: int | None  # tokenizer tokens in the reasoning, when a tokenizer was given
    chars: int
    lines: int  # non-empty lines
    steps: int
    step_rule: str  # "numbered" | "lines" | "sentences" | "empty"
    answer_tokens: int  # whitespace tokens in the answer (0 when there is none)
    answer_chars: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reasoning_stats(
    reasoning: str | None, answer: str | None = None, tokenizer: Any = None
) -> ReasoningStats:
    """Statistics of one trace; ``None`` reasoning or answer count as empty."""
    reasoning = reasoning or ""
    answer = answer or ""
    steps, rule = count_steps(reasoning)
    return ReasoningStats(
        tokens=whitespace_tokens(reasoning),
        model_tokens=None if tokenizer is None else model_token_count(reasoning, tokenizer),
        chars=len(reasoning.strip()),
        lines=sum(1 for line in reasoning.splitlines() if line.strip()),
        steps=steps,
        step_rule=rule,
        answer_tokens=whitespace_tokens(answer),
        answer_chars=len(answer.strip()),
    )


def whitespace_tokens(text: str | None) -> int:
    """Whitespace token count, the kit-wide cheap length measure."""
    return len(text.split()) if text else 0


def model_token_count(text: str, tokenizer: Any) -> int:
    """Tokens under ``tokenizer`` (an object with ``encode`` or a callable), no special tokens."""
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        if not callable(tokenizer):
            raise TypeError("tokenizer must have an encode() method or be callable")
        return len(tokenizer(text))
    try:
        ids = encode(text, add_special_tokens=False)
    except TypeError:
        # Plain tokenizers (tiktoken-like, sentencepiece wrappers) take only the text.
        ids = encode(text)
    if hasattr(ids, "ids"):  # a `tokenizers.Encoding`
        ids = ids.ids
    return len(ids)


def count_steps(reasoning: str) -> tuple[int, str]:
    """``(steps, rule)`` under the rules in the module docstring."""
    lines = [line for line in reasoning.splitlines() if line.strip()]
    if not lines:
        return 0, "empty"
    marked = sum(1 for line in lines if _STEP_MARKER.match(line))
    if marked >= 2:
        return marked, "numbered"
    if len(lines) >= 2:
        return len(lines), "lines"
    sentences = [s for s in _SENTENCE_END.split(lines[0].strip()) if s.strip()]
    return len(sentences), "sentences"
