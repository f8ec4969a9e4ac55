"""Reasoning statistics: token counts, the step-counting rules, answer length."""

from __future__ import annotations

import pytest

from siqkit.annotate.stats import count_steps, model_token_count, reasoning_stats, whitespace_tokens


@pytest.mark.parametrize("text,steps,rule", [
    ("1. Read the image.\n2. Add the numbers.\n3. Report.", 3, "numbered"),
    ("Step 1: look\nStep 2: think\nThen answer.", 2, "numbered"),
    ("step 1 - look\nSTEP 2) think", 2, "numbered"),
    ("(1) look\n(2) think\n(3) answer", 3, "numbered"),
    ("1) look\n2) think", 2, "numbered"),
    ("- look\n- think\n* answer", 3, "numbered"),
    ("Intro line.\n1. first\n\n2. second\nConclusion.", 2, "numbered"),
    ("The background is white.\nThe shape is red.\n\nSo yes.", 3, "lines"),
    ("1. only one numbered line\nand another line", 2, "lines"),
    ("The shape is red. It is a circle! Is it? Yes.", 4, "sentences"),
    ("The mean is 3.5 and 2.25 is less. So yes.", 2, "sentences"),
    ('He said "stop." Then we stopped.', 2, "sentences"),
    ("one clause without a full stop", 1, "sentences"),
    ("", 0, "empty"),
    ("  \n \n", 0, "empty"),
])
def test_count_steps(text, steps, rule):
    assert count_steps(text) == (steps, rule)


def test_stats_of_a_perception_style_trace():
    reasoning = "The background is light.\n82 pixels differ from it.\nThe shape is red."
    s = reasoning_stats(reasoning, "yes")
    assert (s.tokens, s.lines, s.steps, s.step_rule) == (13, 3, 3, "lines")
    assert (s.answer_tokens, s.answer_chars, s.model_tokens) == (1, 3, None)
    assert s.chars == len(reasoning)
    assert s.as_dict()["step_rule"] == "lines"


def test_stats_of_missing_parts():
    s = reasoning_stats(None, None)
    assert (s.tokens, s.steps, s.step_rule, s.answer_tokens, s.answer_chars) == (0, 0, "empty", 0, 0)


def test_whitespace_tokens():
    assert whitespace_tokens("a  b\tc\nd") == 4
    assert whitespace_tokens("") == whitespace_tokens(None) == 0


class HFStyle:
    def encode(self, text, add_special_tokens=True):
        ids = list(text.replace(" ", ""))
        return ids + ([0] if add_special_tokens else [])


class PlainStyle:
    def encode(self, text):
        return text.split("a")


def test_model_tokens_with_various_tokenizers():
    assert reasoning_stats("ab cd", tokenizer=HFStyle()).model_tokens == 4  # no special tokens
    assert model_token_count("banana", PlainStyle()) == 4
    assert model_token_count("a b c", lambda t: t.split()) == 3
    with pytest.raises(TypeError):
        model_token_count("x", object())


def test_real_tokenizer_from_transformers(tmp_path):
    # A word-level tokenizer built on the spot: no download.
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "the": 1, "shape": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    assert model_token_count("the shape is red.", fast) == 5
    assert model_token_count("the shape", tok) == 2  # a bare `tokenizers.Tokenizer`
