"""Rule-based task labels and the judge's JSON verdict."""

from __future__ import annotations

import json

import pytest

from siqkit.annotate.labels import parse_judge_json, task_labels

easy_vqa = pytest.importorskip("easy_vqa")


# -- task_labels ------------------------------------------------------------------------------

def test_every_easy_vqa_question_gets_3_to_6_lowercase_tags():
    texts, answers, _ = easy_vqa.get_test_questions()
    for q, a in zip(texts, answers):
        tags = task_labels(q, "easy_vqa", a)
        assert 3 <= len(tags) <= 6 and len(set(tags)) == len(tags), (q, tags)
        assert all(t == t.lower() and t.strip() == t and t for t in tags)


@pytest.mark.parametrize("question,answer,expected", [
    ("what color is the shape?", "blue", ["color", "short-answer", "visual-perception"]),
    ("what shape is in the image?", "circle", ["shape", "short-answer", "visual-perception"]),
    ("what is the red shape?", "triangle", ["color", "shape", "short-answer", "visual-perception"]),
    ("is no blue shape present?", "yes",
     ["color", "negation", "existence", "yes-no", "visual-perception"]),
    ("does the image contain a circle?", "no", ["shape", "existence", "yes-no", "visual-perception"]),
])
def test_easy_vqa_tags(question, answer, expected):
    assert task_labels(question, "easy_vqa", answer) == expected


@pytest.mark.parametrize("op,tag", [("sum", "addition"), ("product", "multiplication")])
def test_digit_arithmetic_tags(op, tag):
    tags = task_labels(f"What is the {op} of the two numbers in the image?", "digits", "12")
    assert tags == [tag, "arithmetic", "math", "ocr", "numeric", "visual-perception"]


def test_subtraction_phrase_of_the_digits_source():
    tags = task_labels("What is the larger number minus the smaller number in the image?", "digits", "3")
    assert tags[:3] == ["subtraction", "arithmetic", "math"] and "numeric" in tags


def test_source_name_contributes():
    assert "chart" in task_labels("What is the highest value?", "chartqa_subset", "42")
    assert "ocr" in task_labels("What is written here?", "scans", "hello")


def test_task_tags_are_capped_and_answer_and_modality_tags_survive():
    q = "Read the chart: how many red bars are left of the table, and what is their sum times 2?"
    tags = task_labels(q, "", "14")
    assert len(tags) == 6 and tags[-2:] == ["numeric", "visual-perception"]


def test_padding_when_no_rule_matches():
    assert task_labels("Hello?", has_image=False) == ["short-answer", "text-only", "general-qa"]


@pytest.mark.parametrize("question,tag", [
    ("Is the sky blue?", "yes-no"),
    ("Which is larger? (A) 3 (B) 5", "multiple-choice"),
    ("How many apples are there?", "numeric"),
    ("Who wrote this?", "short-answer"),
])
def test_answer_tag_from_question_when_no_gold(question, tag):
    assert tag in task_labels(question)


@pytest.mark.parametrize("answer,tag", [
    ("yes", "yes-no"), ("B", "multiple-choice"), ("3.5", "numeric"), ("Paris", "short-answer"),
])
def test_answer_tag_from_gold(answer, tag):
    assert task_labels("Question?", "", answer)[0] == tag


def test_deterministic():
    q = "What is the sum of the two numbers in the image?"
    assert task_labels(q, "digits", "9") == task_labels(q, "digits", "9")


def test_answer_yes_or_no_is_not_negation():
    assert "negation" not in task_labels("Is the shape red? Answer yes or no.")


# -- parse_judge_json -------------------------------------------------------------------------

GOOD = {"difficulty": 3, "quality": 4, "tags": ["color", "shape", "yes-no"]}


@pytest.mark.parametrize("text", [
    json.dumps(GOOD),
    "```json\n" + json.dumps(GOOD) + "\n```",
    "```\n" + json.dumps(GOOD, indent=2) + "\n```",
    "Here is my verdict:\n" + json.dumps(GOOD) + "\nThanks.",
    json.dumps({**GOOD, "rationale": "extra keys are ignored"}),
    json.dumps({**GOOD, "tags": [" color", "shape ", "yes-no"]}),
])
def test_judge_json_accepted(text):
    assert parse_judge_json(text) == GOOD


@pytest.mark.parametrize("data,error", [
    ({"quality": 4, "tags": ["a", "b", "c"]}, "missing key 'difficulty'"),
    ({"difficulty": 3, "tags": ["a", "b", "c"]}, "missing key 'quality'"),
    ({"difficulty": 3, "quality": 4}, "missing key 'tags'"),
    ({**GOOD, "difficulty": 0}, "'difficulty' must be between 1 and 5, got 0"),
    ({**GOOD, "quality": 6}, "'quality' must be between 1 and 5, got 6"),
    ({**GOOD, "difficulty": 3.0}, "'difficulty' must be an integer 1-5, got float 3.0"),
    ({**GOOD, "difficulty": "3"}, "'difficulty' must be an integer 1-5, got str '3'"),
    ({**GOOD, "quality": True}, "'quality' must be an integer 1-5, got bool True"),
    ({**GOOD, "tags": "a,b,c"}, "'tags' must be a list, got str"),
    ({**GOOD, "tags": ["a", "b"]}, "'tags' must have 3-6 entries, got 2"),
    ({**GOOD, "tags": list("abcdefg")}, "'tags' must have 3-6 entries, got 7"),
    ({**GOOD, "tags": ["a", "b", 3]}, "tags[2] must be a string, got int"),
    ({**GOOD, "tags": ["a", "B", "c"]}, "tags[1] must be lowercase, got 'B'"),
    ({**GOOD, "tags": ["a", " ", "c"]}, "tags[1] is empty"),
    ({**GOOD, "tags": ["a", "b", "a"]}, "tags[2] repeats 'a'"),
    ({**GOOD, "tags": ["a", "b", "x" * 41]}, "tags[2] is longer than 40 characters"),
])
def test_judge_json_rejected_with_clear_error(data, error):
    assert parse_judge_json(json.dumps(data)) == error


@pytest.mark.parametrize("text,start", [
    ("", "empty judge output"),
    ("   ", "empty judge output"),
    ("difficulty 3, quality 4", "no JSON object"),
    ("{difficulty: 3}", "invalid JSON"),
    ('{"difficulty": 3,}', "invalid JSON"),
    ("[1, 2, 3]", "no JSON object"),
])
def test_judge_json_malformed(text, start):
    result = parse_judge_json(text)
    assert isinstance(result, str) and result.startswith(start), result


def test_judge_json_non_string_input():
    assert parse_judge_json(None) == "empty judge output"  # type: ignore[arg-type]
