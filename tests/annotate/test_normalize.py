"""Answer normalisation: every kind of answer, and the edge cases that fool naive matching."""

from __future__ import annotations

import pytest

from siqkit.annotate.normalize import check_answer, infer_kind, read_choice, read_number, read_yesno


def ok(pred, gold, kind="auto", **kw):
    return check_answer(pred, gold, kind, **kw)[0]


# -- missing values ---------------------------------------------------------------------------

def test_no_gold_gives_none():
    assert check_answer("yes", None) == (None, "no gold answer")
    assert check_answer("yes", "   ")[0] is None


@pytest.mark.parametrize("pred", [None, "", "  \n"])
def test_no_prediction_is_wrong(pred):
    correct, detail = check_answer(pred, "7")
    assert correct is False and "no prediction" in detail


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown answer kind"):
        check_answer("a", "a", "fuzzy")


# -- kind inference ---------------------------------------------------------------------------

@pytest.mark.parametrize("gold,kind", [
    ("yes", "yesno"), ("No", "yesno"), ("True", "yesno"), ("false.", "yesno"),
    ("7", "number"), ("-3", "number"), ("1,234", "number"), ("3.5", "number"),
    ("12 cm", "number"), ("50%", "number"), ("$20", "number"), ("1/2", "number"),
    ("B", "choice"), ("(c)", "choice"), ("D.", "choice"), ("a", "choice"),
    ("circle", "text"), ("New York", "text"), ("3 apples and 2 pears", "text"),
])
def test_infer_kind(gold, kind):
    assert infer_kind(gold) == kind


# -- yes / no ---------------------------------------------------------------------------------

@pytest.mark.parametrize("pred,gold,expected", [
    ("yes", "yes", True), ("Yes.", "yes", True), ("YES!", "yes", True), ("y", "yes", True),
    ("true", "yes", True), ("Correct", "yes", True), ("yeah", "yes", True),
    ("no", "yes", False), ("No, there is none.", "no", True), ("false", "no", True),
    ("n", "no", True), ("incorrect", "no", True), ("nope", "no", True),
    ("Yes, there is a red circle.", "yes", True),
    ("The answer is no.", "no", True), ("The answer is no.", "yes", False),
    ("Answer: yes", "yes", True),
    ("There is no red shape in the image", "no", True),
    ("The shape is not blue, so yes", "yes", True),
    ("It could be yes or no", "yes", False),
    ("right triangle", "yes", False),  # "right" opens a phrase, not an answer
    ("right", "yes", True),
    ("maybe", "yes", False),
    ("yes", "True", True),
])
def test_yesno(pred, gold, expected):
    assert ok(pred, gold) is expected


def test_yesno_detail_explains():
    correct, detail = check_answer("perhaps", "yes")
    assert correct is False and "not a clear yes/no" in detail
    assert check_answer("yes", "circle", "yesno")[1].startswith("yesno: gold")


def test_read_yesno_returns_none_without_polarity():
    assert read_yesno("the shape is blue") is None
    assert read_yesno("") is None


# -- numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pred,gold,expected", [
    ("7", "7", True), ("7.0", "7", True), ("3", "3.0", True), ("007", "7", True),
    ("1,234", "1234", True), ("1234", "1,234", True), ("1,234,567.5", "1234567.5", True),
    ("12 cm", "12", True), ("$20", "20", True), ("20 dollars", "$20", True),
    ("50%", "50", True), ("-3", "-3", True), ("−3", "-3", True), ("3", "-3", False),
    ("minus three", "-3", True), ("seven", "7", True), ("Seventy-two", "72", True),
    ("twenty one", "21", True), ("two hundred and five", "205", True),
    ("one thousand two hundred", "1200", True),
    ("3 + 4 = 7", "7", True), ("5 - 8 = -3", "-3", True), ("5-8", "-3", False),
    ("The answer is 12.", "12", True), ("Answer: 41", "41", True),
    ("I counted 3 circles and 4 squares, 7 in all", "7", True),  # last number
    ("1/2", "0.5", True), ("0.5", "1/2", True), (".5", "0.5", True),
    ("1e3", "1000", True), ("8", "7", False), ("seven", "8", False),
    ("no number here", "7", False),
    ("3rd", "3", True),
])
def test_numbers(pred, gold, expected):
    assert ok(pred, gold) is expected


def test_number_tolerance_is_relative_and_absolute():
    assert ok("3.14159", "3.1416", tol=1e-4) is True
    assert ok("3.14159", "3.1416") is False  # default tol 1e-6
    assert ok("1000001", "1000000", tol=1e-5) is True  # relative
    assert ok("0.0000005", "0", tol=1e-6) is True  # absolute near zero
    assert ok("0.33", "1/3", tol=0.01) is True


def test_number_details():
    assert check_answer("7.0", "7")[1] == "number: pred 7 vs gold 7"
    assert "no number" in check_answer("none", "7")[1]
    assert "not a number" in check_answer("7", "circle", "number")[1]


def test_division_by_zero_fraction_is_skipped():
    assert read_number("1/0") is None
    assert read_number("3/0 or 4") == 4


def test_forced_kind_overrides_inference():
    # "1" as a text answer must match "1" exactly, not "1.0".
    assert ok("1.0", "1", "text") is False
    assert ok("1.0", "1", "number") is True


# -- multiple choice --------------------------------------------------------------------------

@pytest.mark.parametrize("pred,gold,expected", [
    ("B", "B", True), ("b", "B", True), ("(B)", "B", True), ("B.", "B", True), ("B)", "B", True),
    ("(b) Paris", "B", True), ("B. Paris", "B", True), ("B: Paris", "B", True),
    ("answer is b", "B", True), ("The answer is (C).", "C", True), ("The answer is D", "D", True),
    ("Option A", "A", True), ("The correct choice is B", "B", True), ("I pick (C) here", "C", True),
    ("C", "B", False), ("(A)", "(B)", False),
    ("The answer is a circle", "A", False),  # the article, not option A
    ("A circle", "A", False),
    ("a", "A", True),
    ("Paris", "B", False),
    ("(A) or (B)", "A", False),  # two bracketed letters: no single choice
])
def test_choice(pred, gold, expected):
    assert ok(pred, gold, "choice") is expected


def test_read_choice_none():
    assert read_choice("the blue one") is None


# -- short text -------------------------------------------------------------------------------

@pytest.mark.parametrize("pred,gold,expected", [
    ("circle", "circle", True), ("Circle", "circle", True), ("circle.", "circle", True),
    ("a circle", "circle", True), ("The circle", "circle", True), ("an apple", "Apple", True),
    ("  New   York ", "new york", True), ("new-york", "New York", True),
    ("The answer is: teal", "teal", True), ("Answer: the teal one", "teal one", True),
    ("not red", "red", False),  # containment is not accepted
    ("red circle", "red", False),
    ("blue", "teal", False),
    ("theatre", "atre", False),  # articles are removed as words only
])
def test_text(pred, gold, expected):
    assert ok(pred, gold) is expected


def test_text_detail_shows_normalised_forms():
    assert check_answer("The Circle!", "circle")[1] == "text: pred 'circle' vs gold 'circle'"


def test_long_prediction_is_shortened_in_detail():
    _, detail = check_answer("x " * 200, "yes")
    assert len(detail) < 120 and "…" in detail
