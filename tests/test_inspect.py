"""``siqkit inspect`` as a person reads it: at 80 columns nothing is cut and each model is one line."""

from __future__ import annotations

import pytest

from tests.report.conftest import evaluated_run  # noqa: F401 -- the fixture


@pytest.mark.parametrize("columns", [80, 200])
def test_inspect_fits_the_terminal_and_cuts_no_name(cli, evaluated_run, columns):  # noqa: F811
    run_dir, _ = evaluated_run
    res = cli("inspect", str(run_dir), env={"COLUMNS": str(columns)})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(x) for x in lines) <= columns
    assert "…" not in res.stdout
    for teacher in ("digit_reader", "perception"):
        assert any(x.split()[:1] in ([teacher], ["│", teacher]) or f"│ {teacher} " in x for x in lines), teacher
    models = ["student before", "student after-instruct", "student after-reason-answer-only", "student after-reason",
              "teacher digit_reader", "exported q4_k_m GGUF"]
    first = next(i for i, x in enumerate(lines) if "held-out accuracy" in x)
    for m in models:  # each model's numbers on its own line, beside its whole name
        assert any(m in x and "%" in x and "/ " in x for x in lines[first:]), m
    rows = [x for x in lines[first:] if "%" in x and "/ " in x]
    assert len(rows) == 8
    end = next(i for i, x in enumerate(lines) if "a missing answer counts as" in x)
    assert end - first <= 13, "\n".join(lines[first:end + 1])
    described = "after instruct (answer); before CoT"
    row = next(x for x in rows if "student after-instruct " in x)
    assert (described in row) == (columns == 200)  # narrow: the description moves under the table
    assert described in res.stdout


def test_inspect_trace_shows_every_record_of_one_trace(cli, evaluated_run):  # noqa: F811
    import json

    import duckdb

    from siqkit.records import Generation

    run_dir, _ = evaluated_run
    con = duckdb.connect(str(run_dir / "store.duckdb"), read_only=True)
    key, seed_id = con.execute("SELECT key, seed_id FROM generations ORDER BY key LIMIT 1").fetchone()
    con.close()
    res = cli("inspect", str(run_dir), "--trace", key[:12], "--json")
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)
    assert records["seed"]["id"] == seed_id and records["generation"]["key"] == key
    assert list(records["generation"]) == Generation.columns()  # every field, from the record
    assert records["annotation"]["key"] == key
    res = cli("inspect", str(run_dir), "--trace", key[:12], env={"COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    for name in ("seed", "generation", "annotation", "finish_reason", "difficulty_bucket"):
        assert name in res.stdout
    res = cli("inspect", str(run_dir), "--trace", "not-a-key")
    assert res.returncode == 1 and "no trace with a key starting 'not-a-key'" in res.stdout + res.stderr
