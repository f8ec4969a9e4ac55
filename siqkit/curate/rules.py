"""Rule-based filters: which traces cannot become training targets, and why.

Rules run in this order, and a trace is dropped with the reason of the first rule it fails
(``detail`` says by how much). The first group is one SQL query over the sample view; the
last group reads each surviving trace's text in Python, in batches.

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
``repetition``           too many repeated word n-grams    ``max_repeated_ngram_fraction``
=======================  ===============================  =================================
"""

from __future__ import annotations

import re
from collections import Counter

import duckdb

from siqkit.curate.config import RulesConfig
from siqkit.errors import RecipeError

MIN_NGRAMS = 12  # the repetition rule needs this many n-grams to say anything
MIN_LINE_WORDS = 3  # shorter lines ("", "Step 2:") may repeat freely


def sql_rule_reasons(con: duckdb.DuckDBPyConnection, view: str, cfg: RulesConfig) -> list[tuple]:
    """(key, reason, detail) for every trace of ``view`` that fails a SQL rule."""
    cases = [
        ("annotated IS NULL", "'not annotated'", "'run the annotate stage first'"),
        ("parse_status = 'error'", "'teacher error'", "coalesce(parse_reason, 'the teacher reported an error')"),
        ("parse_status = 'empty'", "'empty output'", "coalesce(parse_reason, 'the teacher returned no text')"),
    ]
    if cfg.drop_truncated:
        cases.append(("parse_status = 'truncated' OR finish_reason = 'length'", "'truncated'",
                      "coalesce(parse_reason, 'finish_reason=length')"))
    cases.append(("answer IS NULL OR trim(answer) = ''", "'no answer'", "coalesce(parse_reason, 'empty answer')"))
    if cfg.require_reasoning:
        cases.append(("reasoning IS NULL OR trim(reasoning) = ''", "'no reasoning'",
                      "coalesce(parse_reason, 'empty reasoning')"))
    if cfg.drop_incorrect:
        cases.append(("correct = false", "'wrong answer'",
                      "printf('answer %s, gold %s', left(answer, 60), left(gold, 60))"))
    if cfg.require_gold:
        cases.append(("correct IS NULL", "'no gold answer'", "'the seed has no gold answer'"))
    if cfg.min_reasoning_tokens is not None:
        n = int(cfg.min_reasoning_tokens)
        cases.append((f"reasoning_tokens < {n}", "'reasoning too short'", f"printf('%d tokens < {n}', reasoning_tokens)"))
    if cfg.max_reasoning_tokens is not None:
        n = int(cfg.max_reasoning_tokens)
        cases.append((f"reasoning_tokens > {n}", "'reasoning too long'", f"printf('%d tokens > {n}', reasoning_tokens)"))
    if cfg.max_answer_tokens is not None:
        n = int(cfg.max_answer_tokens)
        cases.append((f"answer_tokens > {n}", "'answer too long'", f"printf('%d tokens > {n}', answer_tokens)"))
    text = "coalesce(reasoning, '') || ' ' || coalesce(answer, '')"
    extra = []
    if cfg.scripts:
        # Letters outside the allowed scripts need a non-ASCII character: pure ASCII text
        # (as many bytes as characters) skips the two regular expressions.
        allowed = "".join(f"\\p{{{s}}}" for s in cfg.scripts)
        wide = "strlen(_text) != length(_text)"
        extra.append(f"CASE WHEN {wide} THEN length(regexp_replace(_text, '\\PL', '', 'g')) ELSE 0 END AS _letters")
        extra.append(f"CASE WHEN {wide} THEN length(regexp_replace(_text, '[^{allowed}]', '', 'g')) ELSE 0 END "
                     "AS _inside")
        frac = float(cfg.min_script_fraction)
        limit = f"{frac:.0%}".replace("%", "%%")
        cases.append((f"_letters > 0 AND _inside < {frac} * _letters", "'charset'",
                      f"printf('%.0f%% of letters in {', '.join(cfg.scripts)} (< {limit})', "
                      "100.0 * _inside / _letters)"))
    refusal = sql_refusal_pattern(con, cfg)
    if refusal is not None:
        extra.append(f"regexp_extract(_text, {_quote(refusal)}, 0, 'i') AS _refusal")
        cases.append(("_refusal != ''", "'refusal'", "'matched ' || left(_refusal, 80)"))
    reason = "CASE " + " ".join(f"WHEN {w} THEN {r}" for w, r, _ in cases) + " END"
    detail = "CASE " + " ".join(f"WHEN {w} THEN {d}" for w, _, d in cases) + " END"
    sql = (f"WITH t AS (SELECT *, {text} AS _text FROM {view}), "
           f"u AS (SELECT *, {', '.join(extra) or 'NULL AS _none'} FROM t) "
           f"SELECT key, reason, detail FROM (SELECT key, {reason} AS reason, {detail} AS detail FROM u) "
           "WHERE reason IS NOT NULL")
    try:
        return con.execute(sql).fetchall()
    except duckdb.Error as e:
        if cfg.scripts and "character class" in str(e).lower():
            raise RecipeError(f"curate.rules.scripts: {cfg.scripts} is not a list of Unicode script names "
                              f"known to DuckDB's regular expressions ({str(e).splitlines()[0]})") from None
        raise


def sql_refusal_pattern(con: duckdb.DuckDBPyConnection, cfg: RulesConfig) -> str | None:
    """The refusal patterns as one RE2 expression for DuckDB; None when there are none or RE2
    cannot compile them (lookarounds, backreferences), and then Python checks them."""
    if not cfg.refusal_patterns:
        return None
    pattern = "|".join(f"(?:{p})" for p in cfg.refusal_patterns)
    try:
        con.execute("SELECT regexp_matches('', ?, 'i')", [pattern]).fetchall()
    except duckdb.Error:
        return None
    return pattern


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class TextRules:
    """The rules that read the text in Python: loops and n-gram repetition, and refusal
    phrases when DuckDB's RE2 cannot run them (``in_sql`` False)."""

    def __init__(self, cfg: RulesConfig, in_sql: bool = True):
        self.cfg = cfg
        self.refusal = re.compile("|".join(f"(?:{p})" for p in cfg.refusal_patterns), re.IGNORECASE) \
            if cfg.refusal_patterns and not in_sql else None

    def check(self, reasoning: str | None, answer: str | None) -> tuple[str, str] | None:
        """(reason, detail) for the first text rule the trace fails, or None."""
        cfg = self.cfg
        text = f"{reasoning or ''}\n{answer or ''}"
        if self.refusal is not None:
            m = self.refusal.search(text)
            if m:
                return "refusal", f"matched '{m.group(0)[:80]}'"
        if cfg.max_line_repeats is not None:
            lines = Counter(" ".join(line.lower().split()) for line in (reasoning or "").splitlines())
            line, n = max(((ln, c) for ln, c in lines.items() if len(ln.split()) >= MIN_LINE_WORDS),
                          key=lambda x: x[1], default=("", 0))
            if n > cfg.max_line_repeats:
                return "loop", f"a line repeated {n} times (> {cfg.max_line_repeats}): '{line[:60]}'"
        if cfg.max_repeated_ngram_fraction is not None:
            frac = repeated_ngram_fraction(reasoning or "", cfg.repetition_ngram)
            if frac is not None and frac > cfg.max_repeated_ngram_fraction:
                return "repetition", (f"{frac:.0%} of word {cfg.repetition_ngram}-grams repeat an earlier one "
                                      f"(> {cfg.max_repeated_ngram_fraction:.0%})")
        return None


def repeated_ngram_fraction(text: str, n: int) -> float | None:
    """Share of the word n-grams (lowercased) that repeat an earlier one; None if too few."""
    words = text.lower().split()
    total = len(words) - n + 1
    if total < MIN_NGRAMS:
        return None
    unique = len(set(zip(*(words[i:] for i in range(n)))))
    return 1.0 - unique / total
