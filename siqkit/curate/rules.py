"""Rule-based filters: which traces cannot become training targets, and why.

The rules are one table, :data:`RULES`: each :class:`Rule` names its drop reason, the
``curate.rules`` recipe key that switches it (and any it reads), and its test, in SQL over
the sample view or in Python over the trace's text. A trace is dropped with the reason of
the first rule it fails, in this order (``detail`` says by how much). The rules up to
``charset`` are one SQL query over the sample view; ``loop`` and ``repetition`` read each
surviving trace's text in Python, in batches; ``refusal`` joins the SQL query unless DuckDB's
RE2 cannot compile its patterns (lookarounds, backreferences), and then runs in Python.

=======================  ===============================  =================================
reason                   rule                              recipe key (``curate.rules``)
=======================  ===============================  =================================
``not annotated``        the annotate stage has not seen   (always)
                         the trace
``teacher error``        the teacher reported an error     (always)
``empty output``         blank output                      (always)
``truncated``            hit the token limit               ``drop_truncated``
``no answer``            no answer could be parsed         (always: a target needs one)
``no reasoning``         an answer without reasoning       ``require_reasoning``
``wrong answer``         disagrees with the gold answer    ``drop_incorrect``
``no gold answer``       could not be checked              ``require_gold``
``reasoning too short``  fewer whitespace tokens           ``min_reasoning_tokens``
``reasoning too long``   more whitespace tokens            ``max_reasoning_tokens``
``answer too long``      more whitespace tokens            ``max_answer_tokens``
``charset``              too few letters in the allowed    ``scripts``, ``min_script_fraction``
                         Unicode scripts
``refusal``              a refusal phrase (ignoring case;  ``refusal_patterns``
                         in SQL unless RE2 cannot compile
                         the patterns)
``loop``                 one line repeated too often       ``max_line_repeats``
``repetition``           too many repeated word n-grams    ``max_repeated_ngram_fraction``,
                                                           ``repetition_ngram``
=======================  ===============================  =================================

A test holds this table and :data:`RULES` equal, reason by reason and key by key.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from siqkit.curate import reasons as R
from siqkit.curate.config import RulesConfig
from siqkit.errors import RecipeError

MIN_NGRAMS = 12  # the repetition rule needs this many n-grams to say anything
MIN_LINE_WORDS = 3  # shorter lines ("", "Step 2:") may repeat freely
TEXT_SQL = "coalesce(reasoning, '') || ' ' || coalesce(answer, '')"  # ``_text``, what charset and refusal read

TextCheck = Callable[[str | None, str | None], str | None]
"""(reasoning, answer) -> the detail of a failed rule, or None when the trace passes."""
SQL = str | Callable[[RulesConfig], str]
"""SQL text, or a function of the rules' settings that gives it."""


@dataclass(frozen=True)
class Rule:
    """One rule of the table.

    ``key`` is the ``curate.rules`` key that switches the rule on (a true flag, a non-empty
    list, or a limit that is not null; None: always on); ``params`` are the other keys it reads.
    In SQL, ``sql`` is the predicate a failing trace meets and ``detail_sql`` its detail, over
    the sample view's columns, ``_text`` (reasoning and answer) and the rule's own computed
    ``columns``. In Python, ``check(cfg)`` gives the :data:`TextCheck` that the Python pass
    calls on every trace the SQL pass kept. A rule with both forms runs in SQL unless
    ``sql_when(con, cfg)`` says DuckDB cannot run it.
    """

    name: str
    reason: str
    key: str | None
    params: tuple[str, ...] = ()
    sql: SQL | None = None
    detail_sql: SQL | None = None
    columns: Callable[[RulesConfig], tuple[str, ...]] | None = None
    check: Callable[[RulesConfig], TextCheck] | None = None
    sql_when: Callable[[duckdb.DuckDBPyConnection, RulesConfig], bool] | None = None

    def enabled(self, cfg: RulesConfig) -> bool:
        if self.key is None:
            return True
        value = getattr(cfg, self.key)
        return bool(value) if isinstance(value, (bool, list)) else value is not None

    def in_sql(self, con: duckdb.DuckDBPyConnection, cfg: RulesConfig) -> bool:
        """Whether the SQL pass runs this rule (else the Python pass does)."""
        if self.sql is None:
            return False
        return self.check is None or self.sql_when is None or self.sql_when(con, cfg)


def _sql(x: SQL, cfg: RulesConfig) -> str:
    return x(cfg) if callable(x) else x


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# --- the charset rule: share of letters in the allowed scripts ---------------------------------

def _charset_columns(cfg: RulesConfig) -> tuple[str, ...]:
    # Letters outside the allowed scripts need a non-ASCII character: pure ASCII text
    # (as many bytes as characters) skips the two regular expressions.
    allowed = "".join(f"\\p{{{s}}}" for s in cfg.scripts)
    wide = "strlen(_text) != length(_text)"
    return (f"CASE WHEN {wide} THEN length(regexp_replace(_text, '\\PL', '', 'g')) ELSE 0 END AS _letters",
            f"CASE WHEN {wide} THEN length(regexp_replace(_text, '[^{allowed}]', '', 'g')) ELSE 0 END AS _inside")


def _charset_detail(cfg: RulesConfig) -> str:
    limit = f"{float(cfg.min_script_fraction):.0%}".replace("%", "%%")
    return f"printf('%.0f%% of letters in {', '.join(cfg.scripts)} (< {limit})', 100.0 * _inside / _letters)"


# --- the refusal rule: in SQL when RE2 compiles the patterns, else in Python -------------------

def _refusal_pattern(cfg: RulesConfig) -> str:
    return "|".join(f"(?:{p})" for p in cfg.refusal_patterns)


def sql_refusal_pattern(con: duckdb.DuckDBPyConnection, cfg: RulesConfig) -> str | None:
    """The refusal patterns as one RE2 expression for DuckDB; None when there are none or RE2
    cannot compile them (lookarounds, backreferences), and then Python checks them."""
    if not cfg.refusal_patterns:
        return None
    pattern = _refusal_pattern(cfg)
    try:
        con.execute("SELECT regexp_matches('', ?, 'i')", [pattern]).fetchall()
    except duckdb.Error:
        return None
    return pattern


def _refusal_check(cfg: RulesConfig) -> TextCheck:
    pattern = re.compile(_refusal_pattern(cfg), re.IGNORECASE)

    def check(reasoning: str | None, answer: str | None) -> str | None:
        m = pattern.search(f"{reasoning or ''}\n{answer or ''}")
        return f"matched '{m.group(0)[:80]}'" if m else None

    return check


# --- the Python rules ---------------------------------------------------------------------------

def _loop_check(cfg: RulesConfig) -> TextCheck:
    limit = cfg.max_line_repeats

    def check(reasoning: str | None, answer: str | None) -> str | None:
        lines = Counter(" ".join(line.lower().split()) for line in (reasoning or "").splitlines())
        line, n = max(((ln, c) for ln, c in lines.items() if len(ln.split()) >= MIN_LINE_WORDS),
                      key=lambda x: x[1], default=("", 0))
        return f"a line repeated {n} times (> {limit}): '{line[:60]}'" if n > limit else None

    return check


def _repetition_check(cfg: RulesConfig) -> TextCheck:
    n, limit = cfg.repetition_ngram, cfg.max_repeated_ngram_fraction

    def check(reasoning: str | None, answer: str | None) -> str | None:
        frac = repeated_ngram_fraction(reasoning or "", n)
        if frac is not None and frac > limit:
            return f"{frac:.0%} of word {n}-grams repeat an earlier one (> {limit:.0%})"
        return None

    return check


def repeated_ngram_fraction(text: str, n: int) -> float | None:
    """Share of the word n-grams (lowercased) that repeat an earlier one; None if too few."""
    words = text.lower().split()
    total = len(words) - n + 1
    if total < MIN_NGRAMS:
        return None
    unique = len(set(zip(*(words[i:] for i in range(n)))))
    return 1.0 - unique / total


# --- the table ----------------------------------------------------------------------------------

RULES: tuple[Rule, ...] = (
    Rule("not_annotated", R.NOT_ANNOTATED, None,
         sql="annotated IS NULL", detail_sql="'run the annotate stage first'"),
    Rule("teacher_error", R.TEACHER_ERROR, None,
         sql="parse_status = 'error'", detail_sql="coalesce(parse_reason, 'the teacher reported an error')"),
    Rule("empty_output", R.EMPTY_OUTPUT, None,
         sql="parse_status = 'empty'", detail_sql="coalesce(parse_reason, 'the teacher returned no text')"),
    Rule("truncated", R.TRUNCATED, "drop_truncated",
         sql="parse_status = 'truncated' OR finish_reason = 'length'",
         detail_sql="coalesce(parse_reason, 'finish_reason=length')"),
    Rule("no_answer", R.NO_ANSWER, None,
         sql="answer IS NULL OR trim(answer) = ''", detail_sql="coalesce(parse_reason, 'empty answer')"),
    Rule("no_reasoning", R.NO_REASONING, "require_reasoning",
         sql="reasoning IS NULL OR trim(reasoning) = ''", detail_sql="coalesce(parse_reason, 'empty reasoning')"),
    Rule("wrong_answer", R.WRONG_ANSWER, "drop_incorrect",
         sql="correct = false", detail_sql="printf('answer %s, gold %s', left(answer, 60), left(gold, 60))"),
    Rule("no_gold", R.NO_GOLD, "require_gold",
         sql="correct IS NULL", detail_sql="'the seed has no gold answer'"),
    Rule("reasoning_too_short", R.REASONING_TOO_SHORT, "min_reasoning_tokens",
         sql=lambda c: f"reasoning_tokens < {int(c.min_reasoning_tokens)}",
         detail_sql=lambda c: f"printf('%d tokens < {int(c.min_reasoning_tokens)}', reasoning_tokens)"),
    Rule("reasoning_too_long", R.REASONING_TOO_LONG, "max_reasoning_tokens",
         sql=lambda c: f"reasoning_tokens > {int(c.max_reasoning_tokens)}",
         detail_sql=lambda c: f"printf('%d tokens > {int(c.max_reasoning_tokens)}', reasoning_tokens)"),
    Rule("answer_too_long", R.ANSWER_TOO_LONG, "max_answer_tokens",
         sql=lambda c: f"answer_tokens > {int(c.max_answer_tokens)}",
         detail_sql=lambda c: f"printf('%d tokens > {int(c.max_answer_tokens)}', answer_tokens)"),
    Rule("charset", R.CHARSET, "scripts", params=("min_script_fraction",), columns=_charset_columns,
         sql=lambda c: f"_letters > 0 AND _inside < {float(c.min_script_fraction)} * _letters",
         detail_sql=_charset_detail),
    Rule("refusal", R.REFUSAL, "refusal_patterns",
         columns=lambda c: (f"regexp_extract(_text, {_quote(_refusal_pattern(c))}, 0, 'i') AS _refusal",),
         sql="_refusal != ''", detail_sql="'matched ' || left(_refusal, 80)",
         check=_refusal_check, sql_when=lambda con, c: sql_refusal_pattern(con, c) is not None),
    Rule("loop", R.LOOP, "max_line_repeats", check=_loop_check),
    Rule("repetition", R.REPETITION, "max_repeated_ngram_fraction", params=("repetition_ngram",),
         check=_repetition_check),
)
"""Every rule, in the order they apply: a trace gets the reason of the first it fails."""


def plan(con: duckdb.DuckDBPyConnection, cfg: RulesConfig) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """The rules ``cfg`` enables, in table order: those of the SQL pass, then those of the
    Python pass. The SQL pass runs first, so none of its rules may follow a Python one."""
    sql: list[tuple[int, Rule]] = []
    python: list[tuple[int, Rule]] = []
    for i, rule in enumerate(RULES):
        if rule.enabled(cfg):
            (sql if rule.in_sql(con, cfg) else python).append((i, rule))
    if sql and python and sql[-1][0] > python[0][0]:
        raise AssertionError(f"rule {sql[-1][1].name!r} runs in SQL after {python[0][1].name!r} in Python")
    return tuple(r for _, r in sql), tuple(r for _, r in python)


def rules_sql(view: str, cfg: RulesConfig, rules: Sequence[Rule]) -> str:
    """One query: (key, reason, detail) for every trace of ``view`` that fails one of ``rules``."""
    columns = [c for r in rules if r.columns is not None for c in r.columns(cfg)]
    cases = [(_sql(r.sql, cfg), _quote(r.reason), _sql(r.detail_sql, cfg)) for r in rules]
    reason = "CASE " + " ".join(f"WHEN {w} THEN {r}" for w, r, _ in cases) + " END"
    detail = "CASE " + " ".join(f"WHEN {w} THEN {d}" for w, _, d in cases) + " END"
    return (f"WITH t AS (SELECT *, {TEXT_SQL} AS _text FROM {view}), "
            f"u AS (SELECT *, {', '.join(columns) or 'NULL AS _none'} FROM t) "
            f"SELECT key, reason, detail FROM (SELECT key, {reason} AS reason, {detail} AS detail FROM u) "
            "WHERE reason IS NOT NULL")


def sql_rule_reasons(con: duckdb.DuckDBPyConnection, view: str, cfg: RulesConfig,
                     rules: Sequence[Rule] | None = None) -> list[tuple]:
    """(key, reason, detail) for every trace of ``view`` that fails a rule of the SQL pass
    (``rules``; by default those :func:`plan` gives it)."""
    if rules is None:
        rules = plan(con, cfg)[0]
    if not rules:
        return []
    try:
        return con.execute(rules_sql(view, cfg, rules)).fetchall()
    except duckdb.Error as e:
        if cfg.scripts and "character class" in str(e).lower():
            raise RecipeError(f"curate.rules.scripts: {cfg.scripts} is not a list of Unicode script names "
                              f"known to DuckDB's regular expressions ({str(e).splitlines()[0]})") from None
        raise


class TextRules:
    """The Python pass: the checks of ``rules`` (those :func:`plan` leaves to Python), bound
    to ``cfg``, run in table order."""

    def __init__(self, cfg: RulesConfig, rules: Sequence[Rule]):
        self.checks = [(r.reason, r.check(cfg)) for r in rules]

    def check(self, reasoning: str | None, answer: str | None) -> tuple[str, str] | None:
        """(reason, detail) for the first rule the trace fails, or None."""
        for reason, check in self.checks:
            detail = check(reasoning, answer)
            if detail is not None:
                return reason, detail
        return None
