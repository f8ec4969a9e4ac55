"""Chain-of-thought parsing and training-target formatting."""

import pytest

from siqkit.teachers.parse import Parsed, format_target, parse_cot


def test_think_then_answer():
    p = parse_cot("<think>\n2+2 is 4.\n</think>\n\nThe answer is 4.", "stop")
    assert p == Parsed("2+2 is 4.", "The answer is 4.", "ok", None)


def test_think_then_answer_tag():
    p = parse_cot("<think>add them</think>\nSo: <answer> 4 </answer> done", "stop")
    assert (p.reasoning, p.answer, p.status) == ("add them", "4", "ok")


def test_missing_open_think_tag_from_template_prompt():
    # Thinking templates put "<think>\n" in the prompt; the output starts inside the block.
    p = parse_cot("count the dots: 3\n</think>\n\n3", "stop")
    assert (p.reasoning, p.answer, p.status) == ("count the dots: 3", "3", "ok")


def test_answer_tag_alone():
    p = parse_cot("I see a red square.\n<answer>red</answer>", "stop")
    assert (p.reasoning, p.answer, p.status) == ("I see a red square.", "red", "ok")


def test_answer_tag_without_reasoning():
    p = parse_cot("<answer>red</answer>", "stop")
    assert (p.reasoning, p.answer, p.status) == (None, "red", "no_reasoning")
    assert p.reason


def test_answer_tag_left_open_by_stop_sequence():
    p = parse_cot("It is blue.\n<answer>blue", "stop")
    assert (p.reasoning, p.answer, p.status) == ("It is blue.", "blue", "ok")


def test_multiple_answer_tags_take_last():
    p = parse_cot("first <answer>3</answer> wait, recount <answer>4</answer>", "stop")
    assert p.answer == "4"
    assert p.reasoning == "first 3 wait, recount"
    assert p.status == "ok"


def test_multiple_answer_tags_after_think_take_last():
    p = parse_cot("<think>r</think><answer>1</answer><answer>2</answer>", "stop")
    assert (p.reasoning, p.answer) == ("r", "2")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("Answer: 42", "42"),
        ("answer:42", "42"),
        ("Final answer: 42", "42"),
        ("Final Answer: 42", "42"),
        ("**Answer:** 42", "42"),
        ("**Final Answer:** 42", "42"),
        ("**Final Answer**: 42", "42"),
        ("**Answer: 42**", "42"),
        ("The final answer is: 42", "42"),
        ("### Answer: 42", "42"),
        ("- Answer: 42", "42"),
        ("Answer: \\boxed{42}", "42"),
        ("Final answer: $\\boxed{42}$", "42"),
    ],
)
def test_answer_line_forms(line, expected):
    p = parse_cot(f"Six times seven.\nThat makes 42.\n{line}\n", "stop")
    assert p.answer == expected
    assert p.reasoning == "Six times seven.\nThat makes 42."
    assert p.status == "ok"


def test_multiple_answer_lines_take_last():
    p = parse_cot("Try 1.\nAnswer: 1\nNo, recheck.\nAnswer: 2", "stop")
    assert p.answer == "2"
    assert p.reasoning == "Try 1.\nAnswer: 1\nNo, recheck."


def test_answer_word_mid_sentence_is_not_a_marker():
    p = parse_cot("Hard to say; my answer: it depends on the light.", "stop")
    assert p.status == "no_answer"


def test_boxed_at_end():
    p = parse_cot("We add.\nSo the result is $\\boxed{\\frac{1}{2}}$.", "stop")
    assert (p.reasoning, p.answer, p.status) == ("We add.", "\\frac{1}{2}", "ok")


def test_boxed_one_line_keeps_text_before_as_reasoning():
    p = parse_cot("1 plus 1 gives \\boxed{2}", "stop")
    assert (p.reasoning, p.answer) == ("1 plus 1 gives", "2")


def test_last_boxed_wins_over_earlier_answer_line():
    p = parse_cot("Answer: 3\nActually recount.\n\\boxed{4}", "stop")
    assert p.answer == "4"


def test_unbalanced_boxed_is_ignored():
    p = parse_cot("So \\boxed{4", "stop")
    assert p.status == "no_answer"


def test_empty_boxed_is_no_answer():
    assert parse_cot("Hmm \\boxed{}", "stop").status == "no_answer"


def test_unclosed_think_is_truncated():
    p = parse_cot("<think>Let me count. One, two", "stop")
    assert (p.reasoning, p.answer, p.status) == ("Let me count. One, two", None, "truncated")
    assert "unclosed" in p.reason


@pytest.mark.parametrize(
    "text",
    ["<think>a</think> partial answ", "plain text cut", "Answer: 4", "<think>never closed"],
)
def test_length_is_truncated_even_if_something_parses(text):
    p = parse_cot(text, "length")
    assert p.status == "truncated"
    assert p.answer is None
    assert "length" in p.reason


def test_empty_think_block_is_no_reasoning():
    p = parse_cot("<think>\n\n</think>\n\nBlue.", "stop")
    assert (p.reasoning, p.answer, p.status) == (None, "Blue.", "no_reasoning")


def test_nothing_after_think_is_no_answer():
    p = parse_cot("<think>lots of thought</think>\n \n", "stop")
    assert (p.reasoning, p.answer, p.status) == ("lots of thought", None, "no_answer")


def test_nested_think_tags_split_at_last_close_and_drop_stray_tags():
    p = parse_cot("<think>outer <think>inner</think> more</think>\nfinal", "stop")
    assert p.answer == "final"
    assert p.reasoning == "outer inner more"
    assert "<think>" not in p.reasoning and "</think>" not in p.reasoning


def test_repeated_think_blocks():
    p = parse_cot("<think>a</think>draft<think>b</think>\n\nfinal", "stop")
    assert p.answer == "final"
    assert p.reasoning == "a</think>draft<think>b".replace("</think>", "").replace("<think>", "")


def test_tags_are_case_insensitive():
    p = parse_cot("<THINK>r</Think><ANSWER>x</ANSWER>", "stop")
    assert (p.reasoning, p.answer) == ("r", "x")


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n", None])
def test_empty(text):
    p = parse_cot(text, "stop")
    assert (p.reasoning, p.answer, p.status) == (None, None, "empty")


def test_unparseable_has_reason():
    p = parse_cot("The sky is blue because of scattering.", "stop")
    assert p.status == "no_answer" and p.answer is None and p.reasoning is None
    assert "Answer:" in p.reason


def test_error_output():
    p = parse_cot("", "error", error="HTTP 500")
    assert p.status == "error" and "HTTP 500" in p.reason


def test_whitespace_is_stripped():
    p = parse_cot("  \n<think>  \n r \n </think>  \n\n  a \n ", "stop")
    assert (p.reasoning, p.answer) == ("r", "a")


def test_answer_keeps_inner_newlines():
    p = parse_cot("<think>r</think>\nline one\nline two", "stop")
    assert p.answer == "line one\nline two"


def test_format_target_layout():
    assert format_target("step 1\nstep 2", "4") == "<think>\nstep 1\nstep 2\n</think>\n\n4"


def test_format_target_without_reasoning_is_qwen3_empty_block():
    assert format_target(None, "4") == "<think>\n\n</think>\n\n4"
    assert format_target("  ", "4") == "<think>\n\n</think>\n\n4"


def test_format_target_rejects_empty_answer():
    with pytest.raises(ValueError):
        format_target("r", "  ")


def test_format_target_removes_stray_tags():
    assert format_target("a <think>b</think>", "x") == "<think>\na b\n</think>\n\nx"


@pytest.mark.parametrize(
    "reasoning, answer",
    [("r", "a"), ("multi\nline\n\nreasoning", "Answer: 5"), ("uses <b>html</b>", "\\boxed{2}")],
)
def test_round_trip(reasoning, answer):
    p = parse_cot(format_target(reasoning, answer), "stop")
    assert (p.reasoning, p.answer, p.status) == (reasoning, answer, "ok")
