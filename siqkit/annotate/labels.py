"""Semantic task labels: rule-based tags for every sample, and a judge's JSON verdict.

:func:`task_labels` gives every sample 3–6 lowercase tags without any model, so that
label-diverse sampling works on a run with no judge at all. The tags come from three
places, in this order (the order is also the priority when there are too many):

1. task tags from keyword rules on the question and the source name (:data:`RULES`,
   first match first), then from substrings of the source name (:data:`SOURCE_HINTS`,
   for names like "chartqa"); at most four are kept, e.g. ``addition``,
   ``arithmetic``, ``color``, ``chart``, ``ocr``;
2. one answer-format tag from the gold answer's kind (``yes-no``, ``numeric``,
   ``multiple-choice``, ``short-answer``), or from the question's form when there is
   no gold answer;
3. one modality tag: ``visual-perception`` for questions on images, else ``text-only``.

Fewer than three tags are padded with ``general-qa``. The same inputs always give the
same tags in the same order.

:func:`parse_judge_json` validates what a judge model returned for the joint
annotation: ``{"difficulty": 1-5, "quality": 1-5, "tags": [3-6 lowercase strings]}``.
"""

from __future__ import annotations

import json
import re

from siqkit.annotate.normalize import infer_kind

MIN_TAGS, MAX_TAGS = 3, 6
MAX_TASK_TAGS = 4
PAD_TAG = "general-qa"

_COLORS = (r"colou?rs?|red|green|blue|yellow|teal|brown|gr[ae]y|black|white|orange|purple|"
           r"pink|violet|cyan|magenta")

# (tags, pattern): when the pattern matches the question or the source name, the tags
# are added in this order. Specific operations come before "arithmetic" so that they
# survive the cut to MAX_TASK_TAGS.
RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("addition", "arithmetic", "math"), r"\b(sum|add|added|adding|plus|total of)\b|\+"),
    (("subtraction", "arithmetic", "math"), r"\b(difference|subtract\w*|minus|take away)\b"),
    (("multiplication", "arithmetic", "math"), r"\b(product|multipl\w*|times)\b|[×*]"),
    (("division", "arithmetic", "math"), r"\b(divide\w*|quotient|ratio)\b|÷"),
    (("counting",), r"\b(how many|count|number of)\b"),
    (("chart",), r"\b(chart|graph|plot|bar|axis|axes|legend|pie|histogram)\b"),
    (("table",), r"\btables?\b"),
    (("ocr",), r"\b(read|text|written|writing|says|handwritten|digits?|numbers? in the image|"
               r"ocr|letters?|words?)\b"),
    (("geometry", "math"), r"\b(angle|area|perimeter|radius|diameter|degrees?|parallel|"
                           r"perpendicular|polygon|hypotenuse)\b"),
    (("math",), r"\b(equation|solve|calculate|compute|algebra|function|math\w*|"
                r"arithmetic)\b|\bx\s*="),
    (("color",), rf"\b({_COLORS})\b"),
    # Not the bare word "shape": "what is the color of the shape?" asks for a colour.
    (("shape",), r"\b(circles?|rectangles?|triangles?|squares?|ovals?)\b|"
                 r"\b(what|which) shapes?\b|\bwhat is the \w+ shape\b"),
    (("spatial",), r"\b(left|right|above|below|top|bottom|next to|behind|in front of|"
                   r"between)\b"),
    # "is no X present" negates; a bare "no" mostly comes from "answer yes or no".
    (("negation",), r"\bnot\b|n't\b|\b(is|are) no\b"),
    (("existence",), r"\b(is there|are there|contain|contains|present)\b"),
)
_COMPILED = tuple((tags, re.compile(pattern, re.IGNORECASE)) for tags, pattern in RULES)

# Dataset names glue words together ("chartqa", "textvqa", "mathvista", "geoqa"), so
# the source name is also searched for these substrings; their tags come after the
# question's.
SOURCE_HINTS: tuple[tuple[str, str], ...] = (
    ("chart", "chart"), ("plot", "chart"), ("table", "table"),
    ("ocr", "ocr"), ("text", "ocr"), ("doc", "ocr"), ("digit", "ocr"),
    ("geo", "geometry"), ("math", "math"), ("count", "counting"),
)

_KIND_TAG = {"yesno": "yes-no", "number": "numeric", "choice": "multiple-choice",
             "text": "short-answer"}
_YESNO_OPENERS = re.compile(
    r"^(is|are|was|were|does|do|did|can|could|will|would|should|has|have|had)\b", re.IGNORECASE
)
_OPTIONS = re.compile(r"(^|\s)\(?[A-D][).:]\s", re.MULTILINE)


def task_labels(
    question: str, source: str = "", answer: str | None = None, *, has_image: bool = True
) -> list[str]:
    """3–6 lowercase tags for one sample (see the module docstring for the rules)."""
    text = f"{question}\n{source.replace('_', ' ')}"
    task: list[str] = []
    for tags, pattern in _COMPILED:
        if pattern.search(text):
            task.extend(t for t in tags if t not in task)
    lowered = source.lower()
    for hint, tag in SOURCE_HINTS:
        if hint in lowered and tag not in task:
            task.append(tag)
    tags = task[:MAX_TASK_TAGS]
    tags.append(_answer_tag(question, answer))
    tags.append("visual-perception" if has_image else "text-only")
    if len(tags) < MIN_TAGS:
        tags.append(PAD_TAG)
    return tags[:MAX_TAGS]


def _answer_tag(question: str, answer: str | None) -> str:
    if answer is not None and answer.strip():
        return _KIND_TAG[infer_kind(answer)]
    # No gold answer: judge the format from the question itself.
    if _OPTIONS.search(question):
        return "multiple-choice"
    if _YESNO_OPENERS.match(question.strip()):
        return "yes-no"
    if re.search(r"\b(how many|how much|what is the (sum|difference|product))\b", question, re.I):
        return "numeric"
    return "short-answer"


def parse_judge_json(text: str) -> dict | str:
    """A judge's verdict as ``{"difficulty", "quality", "tags"}``, or an error string.

    Accepts the JSON object bare, inside a ```` ```json ```` fence, or with prose around
    it (the outermost ``{...}`` is taken). Types are strict: ``difficulty`` and
    ``quality`` are integers 1–5 (not floats, not strings, not booleans); ``tags`` is a
    list of 3–6 distinct, non-empty, lowercase strings of at most 40 characters. Other
    keys are ignored. On success the tags come back stripped, in the judge's order.
    """
    if not isinstance(text, str) or not text.strip():
        return "empty judge output"
    body = text.strip()
    fence = re.search(r"```(?:json|JSON)?\s*(.*?)```", body, re.DOTALL)
    if fence:
        body = fence.group(1).strip()
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return "no JSON object in judge output"
    try:
        data = json.loads(body[start : end + 1])
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} at char {exc.pos}"
    if not isinstance(data, dict):
        return "judge output is not a JSON object"

    out: dict = {}
    for key in ("difficulty", "quality"):
        if key not in data:
            return f"missing key '{key}'"
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            return f"'{key}' must be an integer 1-5, got {type(value).__name__} {value!r}"
        if not 1 <= value <= 5:
            return f"'{key}' must be between 1 and 5, got {value}"
        out[key] = value

    if "tags" not in data:
        return "missing key 'tags'"
    tags = data["tags"]
    if not isinstance(tags, list):
        return f"'tags' must be a list, got {type(tags).__name__}"
    if not MIN_TAGS <= len(tags) <= MAX_TAGS:
        return f"'tags' must have {MIN_TAGS}-{MAX_TAGS} entries, got {len(tags)}"
    clean: list[str] = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            return f"tags[{i}] must be a string, got {type(tag).__name__}"
        tag = tag.strip()
        if not tag:
            return f"tags[{i}] is empty"
        if tag != tag.lower():
            return f"tags[{i}] must be lowercase, got {tag!r}"
        if len(tag) > 40:
            return f"tags[{i}] is longer than 40 characters"
        if tag in clean:
            return f"tags[{i}] repeats {tag!r}"
        clean.append(tag)
    out["tags"] = clean
    return out
