"""Answer normalisation: is a predicted answer the same as the gold answer?

:func:`check_answer` compares one prediction with one gold answer under one of five
kinds of answer:

``yesno``
    Both sides reduce to yes or no. Synonyms: yes/y/yeah/yep/true/correct/right/
    affirmative and no/n/nope/false/incorrect/wrong/negative. The prediction's
    polarity is its first word if that word is a synonym, else the word after
    "answer is"/"answer:", else the only polarity that occurs in it; a prediction
    that opens with neither and contains both (``"it could be yes or no"``) is
    ambiguous and counted wrong.
``number``
    Thousands commas, currency signs, percent signs and trailing units are ignored,
    ``"3.0" == "3"``, simple fractions ``"1/2"`` and number words up to the
    thousands (``"seven"``, ``"twenty-one"``, ``"minus three"``) are read. A
    prediction holding several numbers is read at "answer is"/"=" if present, else
    its last number (worked answers end with the result). Equal means
    ``math.isclose(pred, gold, rel_tol=tol, abs_tol=tol)``.
``choice``
    A single option letter A–J: ``"B"``, ``"(B)"``, ``"B."``, ``"B) Paris"``,
    ``"Option B"``, ``"the answer is b"``. A bare ``"a"`` followed by more words is
    the article, not option A; two different bracketed letters (``"(A) or (B)"``)
    without an "answer is" are a hedge and name no option.
``text``
    Lower-cased, punctuation and the articles a/an/the removed, whitespace collapsed,
    then compared exactly (after taking the part after "answer is" if the prediction
    has one). Containment is deliberately not accepted: "not red" contains "red".
``auto``
    The kind is inferred from the gold answer (:func:`infer_kind`), in the order
    yes/no, number, choice, text.

A missing gold answer gives ``(None, ...)``: there is nothing to check against. A
missing or empty prediction is wrong. The second element of the result is always a
short human-readable explanation, stored next to the verdict.
"""

from __future__ import annotations

import math
import re
import string
from typing import Literal

AnswerKind = Literal["auto", "yesno", "number", "choice", "text"]
KINDS = ("auto", "yesno", "number", "choice", "text")

YES = frozenset({"yes", "y", "yeah", "yep", "true", "correct", "right", "affirmative"})
NO = frozenset({"no", "n", "nope", "false", "incorrect", "wrong", "negative"})
CHOICE_LETTERS = "ABCDEFGHIJ"

_ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORDS = set(_ONES) | set(_TENS) | set(_SCALES) | {"minus", "negative", "and"}

# "answer is X", "answer: X", "final answer = X": the part a model means as its answer.
_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*(?P<rest>.+)$", re.IGNORECASE | re.DOTALL)
# A digit run with optional thousands commas, decimals and exponent; a sign only when it
# is not glued to a preceding word character, so "3-4" reads as 3 and 4, not 3 and -4.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+−])?\$?(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
    r"|\.\d+)(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?"
)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def check_answer(
    pred: str | None, gold: str | None, kind: AnswerKind = "auto", tol: float = 1e-6
) -> tuple[bool | None, str]:
    """Check ``pred`` against ``gold``; returns ``(correct, detail)``.

    ``correct`` is None only when there is no gold answer. See the module docstring
    for the rules of each kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {', '.join(KINDS)}")
    if gold is None or not str(gold).strip():
        return None, "no gold answer"
    gold = str(gold)
    if kind == "auto":
        kind = infer_kind(gold)
    if pred is None or not str(pred).strip():
        return False, f"{kind}: no prediction"
    pred = str(pred)

    if kind == "yesno":
        g, p = read_yesno(gold), read_yesno(pred)
        if g is None:
            return False, f"yesno: gold {gold!r} is not yes/no"
        if p is None:
            return False, f"yesno: prediction {_short(pred)!r} is not a clear yes/no"
        return p == g, f"yesno: pred {p} vs gold {g}"
    if kind == "number":
        g, p = read_number(gold), read_number(pred)
        if g is None:
            return False, f"number: gold {gold!r} is not a number"
        if p is None:
            return False, f"number: no number in prediction {_short(pred)!r}"
        ok = math.isclose(p, g, rel_tol=tol, abs_tol=tol)
        return ok, f"number: pred {_fmt(p)} vs gold {_fmt(g)}"
    if kind == "choice":
        g, p = read_choice(gold), read_choice(pred)
        if g is None:
            return False, f"choice: gold {gold!r} is not an option letter"
        if p is None:
            return False, f"choice: no option letter in prediction {_short(pred)!r}"
        return p == g, f"choice: pred {p} vs gold {g}"
    g, p = normalize_text(gold), normalize_text(_after_answer_is(pred))
    return p == g, f"text: pred {_short(p)!r} vs gold {_short(g)!r}"


def infer_kind(gold: str) -> Literal["yesno", "number", "choice", "text"]:
    """The kind of a gold answer: yes/no, then a lone number, then an option letter, else text."""
    text = gold.strip()
    if normalize_text(text) in YES | NO:
        return "yesno"
    if _is_lone_number(text):
        return "number"
    if re.fullmatch(r"\(?[A-Ja-j]\)?[.):]?", text):
        return "choice"
    return "text"


def read_yesno(text: str) -> Literal["yes", "no"] | None:
    """yes, no, or None when the text has no clear polarity."""
    words = normalize_text(text).split()
    if not words:
        return None
    # "right" opens "right triangle" as often as it means yes: only alone does it count.
    if words[0] in YES and (words[0] != "right" or len(words) == 1):
        return "yes"
    if words[0] in NO:
        return "no"
    tail = _ANSWER_IS.search(text)
    if tail:
        found = read_yesno(tail.group("rest"))
        if found:
            return found
    has_yes = any(w in YES - {"y", "n", "right"} for w in words)
    has_no = any(w in NO - {"y", "n"} for w in words)
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    return None


def read_number(text: str) -> float | None:
    """The number a text means (see the module docstring), or None."""
    tail = _ANSWER_IS.search(text)
    if tail:
        found = read_number(tail.group("rest"))
        if found is not None:
            return found
    if "=" in text:
        # "3 + 4 = 7": the result is what follows the last equals sign.
        found = _numbers_in(text.rsplit("=", 1)[1])
        if found:
            return found[0]
    found = _numbers_in(text)
    if found:
        return found[-1]
    return _words_to_number(text)


def read_choice(text: str) -> str | None:
    """The option letter (upper case) a text names, or None."""
    stripped = text.strip()
    m = re.fullmatch(r"\(?([A-Ja-j])\)?[.):]?", stripped)
    if m:
        return m.group(1).upper()
    # After "answer is" a lower-case letter must stand alone ("answer is b."), because
    # "answer is a circle" names no option; a capital, or a bracketed letter, may not.
    m = re.search(
        r"\b(?i:answer)\s*(?:(?i:is)|:)?\s*"
        r"(?:\(([A-Ja-j])\)|([A-J])\b|([a-j])(?=\s*(?:$|[.,;:)!])))",
        stripped,
    )
    if m:
        return next(g for g in m.groups() if g).upper()
    bracketed = {x.upper() for x in re.findall(r"\(([A-Ja-j])\)", stripped)}
    if len(bracketed) > 1:
        return None  # "(A) or (B)" hedges between options: no single choice
    # "(B) Paris", "B. Paris", "B) Paris", "B: Paris"; a capital "A Paris" is not option A.
    m = re.match(r"\(([A-Ja-j])\)|([A-Ja-j])[.):](?:\s|$)", stripped)
    if m:
        return (m.group(1) or m.group(2)).upper()
    # After "option"/"choice" a letter is always a letter.
    m = re.search(
        r"\b(?:option|choice)\s*(?:is\s+)?\(?([A-Ja-j])\b", stripped, re.IGNORECASE
    )
    if m:
        return m.group(1).upper()
    # Last resort: the one bracketed letter anywhere ("I pick (C) here").
    if bracketed:
        return bracketed.pop()
    return None


def normalize_text(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _after_answer_is(text: str) -> str:
    m = _ANSWER_IS.search(text)
    return m.group("rest") if m else text


def _is_lone_number(text: str) -> bool:
    # One number, optionally with a sign, currency, percent or a unit word after it.
    return bool(re.fullmatch(
        r"[-+−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?\s*%?"
        r"(?:\s*[a-zA-Z°]{1,12}\.?)?|[-+]?\.\d+",
        text,
    ))


def _numbers_in(text: str) -> list[float]:
    out = []
    for m in _NUMBER.finditer(text):
        value = float(m.group("num").replace(",", ""))
        if m.group("den"):
            den = float(m.group("den"))
            if den == 0:
                continue
            value /= den
        if m.group("sign") in ("-", "−"):
            value = -value
        out.append(value)
    return out


def _words_to_number(text: str) -> float | None:
    """Read the last run of number words ("twenty-one", "minus three", "two hundred")."""
    words = normalize_text(text.replace("-", " ")).split()
    runs: list[list[str]] = []
    current: list[str] = []
    for word in words:
        if word in _NUMBER_WORDS:
            current.append(word)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    for run in reversed(runs):
        value = _run_value(run)
        if value is not None:
            return value
    return None


def _run_value(run: list[str]) -> float | None:
    sign, total, group, seen = 1, 0, 0, False
    for i, word in enumerate(run):
        if word in ("minus", "negative") and not seen:
            sign = -1
        elif word in _ONES:
            group += _ONES[word]
            seen = True
        elif word in _TENS:
            group += _TENS[word]
            seen = True
        elif word == "hundred":
            group = max(group, 1) * 100
            seen = True
        elif word in ("thousand", "million"):
            total += max(group, 1) * _SCALES[word]
            group = 0
            seen = True
        elif word == "and" and seen and i + 1 < len(run):
            continue
    return float(sign * (total + group)) if seen else None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
