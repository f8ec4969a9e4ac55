"""The rule table: each rule alone with its reason and detail, switched off by its key, the
order between rules (across the SQL and Python passes), and the docstring table kept equal."""

from __future__ import annotations

import re

import duckdb
import pytest

from siqkit.curate import reasons, rules
from siqkit.curate.config import RulesConfig
from siqkit.curate.rules import RULES, TextRules, plan, sql_rule_reasons

COLUMNS = {"key": "VARCHAR", "annotated": "VARCHAR", "parse_status": "VARCHAR", "parse_reason": "VARCHAR",
           "finish_reason": "VARCHAR", "reasoning": "VARCHAR", "answer": "VARCHAR", "gold": "VARCHAR",
           "correct": "BOOLEAN", "reasoning_tokens": "INTEGER", "answer_tokens": "INTEGER"}
# every rule on, with limits the traces below cross by a little
ALL_ON = {"drop_truncated": True, "require_reasoning": True, "drop_incorrect": True, "require_gold": True,
          "min_reasoning_tokens": 3, "max_reasoning_tokens": 100, "max_answer_tokens": 10,
          "max_line_repeats": 4, "max_repeated_ngram_fraction": 0.5}
LOOKBEHIND = [r"(?<=I )can't tell"]  # RE2 cannot compile it: the refusal rule runs in Python
GOOD = "First find the circle in the middle, then read its colour against the pale background."
LOOP = "\n".join(f"Let me look.\n{' '.join(f'w{i}x{k}' for k in range(8))}" for i in range(5))


def trace(key: str = "t", **kw) -> dict:
    """A trace every rule keeps; keyword arguments change it (token counts follow the text
    unless given)."""
    t = {"key": key, "annotated": key, "parse_status": "ok", "parse_reason": None, "finish_reason": "stop",
         "reasoning": GOOD, "answer": "red", "gold": "red", "correct": True}
    t.update(kw)
    t.setdefault("reasoning_tokens", len((t["reasoning"] or "").split()))
    t.setdefault("answer_tokens", len((t["answer"] or "").split()))
    return t


def apply(traces: list[dict], **settings) -> dict[str, tuple[str, str] | None]:
    """(reason, detail) per trace, or None when kept: the SQL pass, then the Python pass on
    the traces it kept, as the stage runs them."""
    cfg = RulesConfig.model_validate({**ALL_ON, **settings})
    con = duckdb.connect()
    con.execute(f"CREATE TABLE v ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())})")
    con.executemany(f"INSERT INTO v VALUES ({', '.join('?' * len(COLUMNS))})",
                    [[t[c] for c in COLUMNS] for t in traces])
    in_sql, in_python = plan(con, cfg)
    out: dict = {t["key"]: None for t in traces}
    for key, reason, detail in sql_rule_reasons(con, "v", cfg, in_sql):
        out[key] = (reason, detail)
    text = TextRules(cfg, in_python)
    for t in traces:
        if out[t["key"]] is None:
            out[t["key"]] = text.check(t["reasoning"], t["answer"])
    return out


# (rule name, the trace that fails it and no other rule, its detail, settings)
ALONE = [
    ("not_annotated", trace(annotated=None), "run the annotate stage first", {}),
    ("teacher_error", trace(parse_status="error", parse_reason="teacher error: boom"), "teacher error: boom", {}),
    ("empty_output", trace(parse_status="empty"), "the teacher returned no text", {}),
    ("truncated", trace(parse_status="truncated"), "finish_reason=length", {}),
    ("truncated", trace(finish_reason="length", parse_reason="cut at 512 tokens"), "cut at 512 tokens", {}),
    ("no_answer", trace(answer="  ", answer_tokens=1), "empty answer", {}),
    ("no_reasoning", trace(reasoning=" ", reasoning_tokens=5), "empty reasoning", {}),
    ("wrong_answer", trace(correct=False, answer="blue"), "answer blue, gold red", {}),
    ("no_gold", trace(correct=None, gold=None), "the seed has no gold answer", {}),
    ("reasoning_too_short", trace(reasoning="Red circle."), "2 tokens < 3", {}),
    ("reasoning_too_long", trace(reasoning=" ".join(f"w{i}" for i in range(120))), "120 tokens > 100", {}),
    ("answer_too_long", trace(answer=" ".join(f"a{i}" for i in range(11))), "11 tokens > 10", {}),
    ("charset", trace(reasoning="这是 一个 测试 abc"), "50% of letters in Latin, Greek (< 90%)", {}),
    ("charset", trace(reasoning="Это тест abc"), "46% of letters in Latin (< 50%)",
     {"scripts": ["Latin"], "min_script_fraction": 0.5}),
    ("refusal", trace(reasoning="I'm sorry, but I can't help with this picture today."),
     "matched I'm sorry, but I can't", {}),
    ("refusal", trace(reasoning="Honestly I can't tell what colour this circle has."), "matched 'can't tell'",
     {"refusal_patterns": LOOKBEHIND}),
    ("loop", trace(reasoning=LOOP), "a line repeated 5 times (> 4): 'let me look.'", {}),
    ("repetition", trace(reasoning=" ".join(["the shape is red and round"] * 12)),
     "91% of word 4-grams repeat an earlier one (> 50%)", {}),
]
RULE = {r.name: r for r in RULES}


@pytest.mark.parametrize("name,t,detail,settings", ALONE, ids=[f"{a[0]}-{i}" for i, a in enumerate(ALONE)])
def test_each_rule_alone_with_its_reason_and_detail(name, t, detail, settings):
    assert apply([t, trace("kept")], **settings) == {"t": (RULE[name].reason, detail), "kept": None}


@pytest.mark.parametrize("name,t,detail,settings", [a for a in ALONE if RULE[a[0]].key is not None],
                         ids=[f"{a[0]}-{i}" for i, a in enumerate(ALONE) if RULE[a[0]].key is not None])
def test_each_rule_is_switched_off_by_its_key(name, t, detail, settings):
    key = RULE[name].key
    default = getattr(RulesConfig(), key)
    off = False if isinstance(default, bool) else [] if isinstance(default, list) else None
    assert apply([t], **{**settings, key: off}) == {"t": None}


def test_every_rule_is_tested_alone():
    assert {a[0] for a in ALONE} == set(RULE)
    assert {r.name for r in RULES if r.key is None} == {"not_annotated", "teacher_error", "empty_output",
                                                        "no_answer"}


@pytest.mark.parametrize("refusal", [None, LOOKBEHIND], ids=["refusal-in-sql", "refusal-in-python"])
def test_the_first_failing_rule_in_table_order_wins(refusal):
    """One trace fails many rules; switching them off one by one, in table order, shows each
    next reason in turn, across the SQL and the Python pass."""
    reasoning = ("I'm sorry, but I can't tell.\n" + "这是一个测试" * 20 + "\n" + "\n".join(["Let me look again."] * 6))
    t = trace(parse_status="truncated", correct=False, answer=" ".join(["blue"] * 11), reasoning=reasoning,
              reasoning_tokens=120)
    settings: dict = {} if refusal is None else {"refusal_patterns": refusal}
    order = [("truncated", "drop_truncated", False), ("wrong answer", "drop_incorrect", False),
             ("reasoning too long", "max_reasoning_tokens", None), ("answer too long", "max_answer_tokens", None),
             ("charset", "scripts", None), ("refusal", "refusal_patterns", []), ("loop", "max_line_repeats", None),
             ("repetition", "max_repeated_ngram_fraction", None)]
    for reason, key, off in order:
        got = apply([t], **settings)["t"]
        assert got is not None and got[0] == reason, (settings, got)
        settings[key] = off
    assert apply([t], **settings) == {"t": None}


def names(rules_: tuple) -> list[str]:
    return [r.name for r in rules_]


def test_plan_puts_refusal_in_sql_unless_re2_cannot_compile_it():
    con = duckdb.connect()
    in_sql, in_python = plan(con, RulesConfig())
    assert "refusal" in names(in_sql) and names(in_python) == ["loop", "repetition"]
    in_sql, in_python = plan(con, RulesConfig(refusal_patterns=LOOKBEHIND))
    assert "refusal" not in names(in_sql) and names(in_python) == ["refusal", "loop", "repetition"]
    in_sql, in_python = plan(con, RulesConfig(refusal_patterns=[], scripts=None, max_line_repeats=None))
    assert names(in_sql)[-1] == "answer_too_long" and names(in_python) == ["repetition"]
    # the defaults: every rule but require_gold's, in table order
    in_sql, in_python = plan(con, RulesConfig())
    assert names(in_sql + in_python) == [r.name for r in RULES if r.name != "no_gold"]


def test_sql_rules_come_before_python_rules():
    """The SQL pass runs first, so the table order holds only if no SQL-only rule follows a
    rule that can run in Python."""
    first_python = next(i for i, r in enumerate(RULES) if r.check is not None)
    assert all(r.check is not None for r in RULES[first_python:])
    assert all(r.sql is not None and r.detail_sql is not None for r in RULES[:first_python])
    assert all((r.sql is None) == (r.detail_sql is None) for r in RULES)


def test_every_rule_key_is_a_recipe_key():
    fields = set(RulesConfig.model_fields)
    for r in RULES:
        assert {k for k in (r.key, *r.params) if k} <= fields, r.name
    assert len({r.name for r in RULES}) == len(RULES)


def test_reasons_are_listed_once():
    assert tuple(r.reason for r in RULES) == reasons.REASONS["rules"]
    every = [x for layer in reasons.REASONS.values() for x in layer]
    assert len(every) == len(set(every))
    constants = {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
    assert constants == set(every)


def docstring_table() -> list[tuple[str, tuple[str, ...]]]:
    """(reason, recipe keys) per row of the table in the rules module's docstring."""
    lines = rules.__doc__.splitlines()
    bars = [i for i, line in enumerate(lines) if line.startswith("===")]
    assert len(bars) == 3, "the docstring table: a header between two rules, the rows, a closing rule"
    key_col = [m.start() for m in re.finditer("=+", lines[bars[0]])][2]
    rows: list[list] = []
    for line in lines[bars[1] + 1: bars[2]]:
        reason, keys = line[:key_col].split("  ")[0].strip(), line[key_col:]
        if reason:
            assert re.fullmatch("``[^`]+``", reason), line
            rows.append([reason.strip("`"), keys])
        else:
            rows[-1][1] += " " + keys
    return [(reason, tuple(re.findall(r"``(\w+)``", keys)) if "(always" not in keys else ())
            for reason, keys in rows]


def test_docstring_table_is_the_rule_table():
    assert docstring_table() == [(r.reason, (r.key, *r.params) if r.key else ()) for r in RULES]
