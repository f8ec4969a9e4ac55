"""The generate and annotate stages through the real CLI, with Python teachers written by the test.

The teachers live in a module in the test's folder (``python -m siqkit`` puts the working
directory on ``sys.path``), so they run in the real ``siqkit run`` process.
"""

from __future__ import annotations

import importlib.util
import json

import duckdb
import pytest
import yaml

from tests.conftest import kill_9_once_committed

TEACHERS = '''
import json, os, re, time
from siqkit.teachers.base import TeacherOutput

def _sum(q):
    a, b = map(int, re.findall(r"-?\\d+", q)[:2])
    return a + b

def adder(batch, wrong_on_odd=False, log=None):
    """Adds the two numbers of the question; with wrong_on_odd, odd samples are off by one."""
    out = []
    for inp in batch:
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"question": inp.question, "metadata": inp.metadata,
                                    "messages": inp.messages, "n_images": len(inp.images)}) + "\\n")
        n = _sum(inp.question) + (1 if wrong_on_odd and inp.sample_index % 2 else 0)
        out.append(f"<think>\\nI add the two numbers and get {n}.\\n</think>\\n\\n<answer>{n}</answer>")
    return out

def flaky(batch, state):
    """Fails with an exception on questions containing 'boom' until the state file exists;
    returns unparseable or truncated text for 'garbage' and 'long' questions."""
    out = []
    for inp in batch:
        if "boom" in inp.question and not os.path.exists(state):
            raise RuntimeError("teacher crashed on purpose")
        if "garbage" in inp.question:
            out.append("I refuse to follow the format")
        elif "long" in inp.question:
            out.append(TeacherOutput(inp.key, "<think>\\nstep one, step two, and", "length", completion_tokens=7))
        else:
            out.append(f"Step 1. Add.\\nAnswer: {_sum(inp.question)}")
    return out

def slow(batch, delay=0.2):
    time.sleep(delay)
    return [f"<think>\\nslowly\\n</think>\\n\\n{_sum(i.question)}" for i in batch]

class Judge:
    """Answers malformed JSON first (prose), then valid JSON when asked again."""
    def __init__(self, always_bad=False):
        self.always_bad = always_bad
    def generate(self, batch):
        out = []
        for inp in batch:
            retried = any(m["role"] == "assistant" for m in inp.messages)
            if self.always_bad or not retried:
                out.append("This trace looks fine to me, difficulty two.")
            else:
                out.append('```json\\n{"difficulty": 4, "quality": 3, "tags": ["math", "addition", "text"]}\\n```')
        return out
'''


def questions(n, extra=()):
    rows = [{"question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(n)]
    rows += [{"question": q} for q in extra]  # no gold answer
    return rows


def setup(tmp_path, teachers, rows, **sections) -> str:
    (tmp_path / "teach.py").write_text(TEACHERS)
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"run": {"name": "t", "dir": "run"},
              "seeds": {"sources": [{"name": "q", "type": "jsonl", "path": "q.jsonl"}]},
              "teachers": teachers, **sections}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return "recipe.yaml"


def query(tmp_path, sql, *params):
    con = duckdb.connect(str(tmp_path / "run" / "store.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def ok(res):
    assert res.returncode == 0, res.stderr
    return res


def test_samples_lineage_and_rerun_skips_done_work(cli, tmp_path):
    rec = setup(tmp_path, [{"name": "add", "backend": "python", "callable": "teach:adder",
                            "options": {"wrong_on_odd": True}, "samples": 4, "batch_size": 3,
                            "sampling": {"temperature": 0.7}}], questions(5))
    ok(cli("run", rec))
    rows = query(tmp_path, "SELECT seed_id, sample_index, parse_status, sampling, teacher_identity, prompt "
                           "FROM generations ORDER BY seed_id, sample_index")
    assert len(rows) == 20 and {r[1] for r in rows} == {0, 1, 2, 3}
    assert all(r[2] == "ok" for r in rows)
    assert json.loads(rows[0][3])["temperature"] == 0.7
    assert json.loads(rows[0][4])["model"] == "teach:adder"
    assert json.loads(rows[0][5])[-1]["content"][-1]["text"].startswith("What is")
    # pass rate 2/4 per seed -> level 3 -> medium; correctness checked against gold
    ann = query(tmp_path, "SELECT correct, pass_rate, difficulty, difficulty_bucket, difficulty_source, labels "
                          "FROM annotations")
    assert sum(a[0] for a in ann) == 10
    assert {a[1:5] for a in ann} == {(0.5, 3, "medium", "pass_rate")}
    assert all(3 <= len(a[5]) <= 6 for a in ann)
    res = ok(cli("run", rec, "--only", "generate"))
    assert "all 20 samples already done" in res.stderr
    assert query(tmp_path, "SELECT count(*) FROM generations")[0][0] == 20
    s = json.loads(ok(cli("inspect", "run", "--json")).stdout)
    t = s["teachers"]["add"]
    assert t["traces"] == 20 and t["parse_failures"] == 0
    assert t["accuracy"]["train"] == {"graded": 20, "correct": 10, "accuracy": 0.5}


def test_routing_first_and_all(cli, tmp_path):
    teachers = [
        {"name": "small", "backend": "python", "callable": "teach:adder",
         "route": {"question_regex": r"What is [0-4] \+"}},
        {"name": "rest", "backend": "python", "callable": "teach:adder"},
    ]
    rec = setup(tmp_path, teachers, questions(10))
    ok(cli("run", rec, "--only", "seeds"))
    ok(cli("run", rec, "--only", "generate"))
    counts = dict(query(tmp_path, "SELECT teacher, count(*) FROM generations GROUP BY ALL"))
    assert counts == {"small": 5, "rest": 5}
    ok(cli("run", rec, "--only", "generate", "--set", "generate.routing=all"))
    counts = dict(query(tmp_path, "SELECT teacher, count(*) FROM generations GROUP BY ALL"))
    assert counts == {"small": 5, "rest": 10}


def test_failures_are_stored_with_reasons_and_only_errors_are_retried(cli, tmp_path):
    state = tmp_path / "fixed"
    rec = setup(tmp_path, [{"name": "flaky", "backend": "python", "callable": "teach:flaky",
                            "options": {"state": str(state)}, "batch_size": 4}],
                questions(3, extra=["What is 1 + 9 boom?", "garbage 1 + 1", "long 2 + 2"]))
    ok(cli("run", rec, "--from", "seeds"))
    rows = {r[0]: r[1:] for r in query(
        tmp_path, "SELECT s.question, g.parse_status, g.parse_reason, g.finish_reason, g.error, g.raw "
                  "FROM generations g JOIN seeds s ON s.id = g.seed_id")}
    assert rows["What is 1 + 9 boom?"][0] == "error" and "crashed on purpose" in rows["What is 1 + 9 boom?"][3]
    assert rows["garbage 1 + 1"][0] == "no_answer" and rows["garbage 1 + 1"][1]
    assert rows["garbage 1 + 1"][4] == "I refuse to follow the format"  # raw text kept
    assert rows["long 2 + 2"][0] == "truncated" and rows["long 2 + 2"][2] == "length"
    assert rows["What is 0 + 1?"][0] == "ok"
    before = dict(query(tmp_path, "SELECT key, created_at FROM generations WHERE finish_reason != 'error'"))
    state.write_text("ok")
    res = ok(cli("run", rec, "--only", "generate"))
    assert "1 samples to do, 5 already done" in res.stderr
    after = dict(query(tmp_path, "SELECT key, created_at FROM generations WHERE finish_reason != 'error'"))
    assert len(after) == 6 and all(after[k] == v for k, v in before.items())


def test_teachers_never_see_gold_answers(cli, tmp_path):
    log = tmp_path / "seen.jsonl"
    rec = setup(tmp_path, [{"name": "add", "backend": "python", "callable": "teach:adder",
                            "options": {"log": str(log)}}],
                [{"question": "What is 20 + 22?", "answer": "forty-two", "caption": "secret caption"}])
    ok(cli("run", rec, "--only", "seeds"))
    ok(cli("run", rec, "--only", "generate"))
    seen = log.read_text()
    assert "forty-two" not in seen and "secret caption" not in seen
    assert json.loads(seen)["metadata"] == {"source": "q", "split": "train"}


def test_kill_9_mid_generation_loses_at_most_the_batch_in_flight(cli, tmp_path):
    # A commit every 5 finished samples, never by time: each batch of 5 is one commit.
    rec = setup(tmp_path, [{"name": "slow", "backend": "python", "callable": "teach:slow",
                            "options": {"delay": 0.25}, "batch_size": 5}], questions(60),
                generate={"commit_rows": 5, "commit_seconds": 600})
    ok(cli("run", rec, "--only", "seeds"))
    kill_9_once_committed("run", rec, "--only", "generate", cwd=tmp_path, store=tmp_path / "run" / "store.duckdb",
                          wal_bytes=20_000, timeout=60)
    done = query(tmp_path, "SELECT count(*) FROM generations")[0][0]
    assert 0 < done < 60 and done % 5 == 0  # whole batches only
    res = ok(cli("run", rec, "--only", "generate"))
    assert f"{60 - done} samples to do, {done} already done" in res.stderr
    assert query(tmp_path, "SELECT count(*), count(DISTINCT key), count(DISTINCT seed_id) FROM generations")[0] \
        == (60, 60, 60)


def test_judge_retries_malformed_json_then_records_errors(cli, tmp_path):
    teachers = [{"name": "add", "backend": "python", "callable": "teach:adder"},
                {"name": "judge", "backend": "python", "callable": "teach:Judge", "route": {"splits": ["none"]}}]
    rec = setup(tmp_path, teachers, questions(2, extra=["What is 3 + 4?"]),
                annotate={"judge": "judge", "judge_retries": 1})
    ok(cli("run", rec))
    rows = {r[0]: r[1:] for r in query(
        tmp_path, "SELECT s.question, a.correct, a.judge_difficulty, a.judge_quality, a.judge_tags, a.judge_error, "
                  "a.difficulty, a.difficulty_source FROM annotations a JOIN seeds s ON s.id = a.seed_id")}
    assert rows["What is 3 + 4?"][:5] == (None, 4, 3, ["math", "addition", "text"], None)
    assert rows["What is 3 + 4?"][5:] == (4, "judge")
    assert rows["What is 0 + 1?"][:2] == (True, None)  # gold answers are not sent to the judge
    ok(cli("run", rec, "--only", "annotate", "--set", "teachers[1].options={always_bad: true}"))
    err = query(tmp_path, "SELECT a.judge_error FROM annotations a JOIN seeds s ON s.id = a.seed_id "
                          "WHERE s.answer IS NULL")[0][0]
    assert err == "no JSON object in judge output"
    s = json.loads(ok(cli("inspect", "run", "--json")).stdout)
    assert s["stages"]["annotate"]["counts"]["judge_errors"] == 1


@pytest.mark.parametrize("backend_error", ["teach:nope", "nomodule:fn"])
def test_a_teacher_that_cannot_load_is_one_clear_line(cli, tmp_path, backend_error):
    rec = setup(tmp_path, [{"name": "x", "backend": "python", "callable": backend_error}], questions(1))
    res = cli("run", rec)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in res.stderr


def test_a_missing_engine_package_stops_the_run_before_any_stage(cli, tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    rec = setup(tmp_path, [{"name": "thinker", "backend": "vllm", "path": str(tmp_path)}], questions(2))
    res = cli("check", rec)
    assert res.returncode == 0
    assert "warning: teachers[0] 'thinker': the vllm backend needs vllm, which is not installed" in res.stdout
    res = cli("run", rec)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(
        "error: teachers[0] 'thinker': the vllm backend needs vllm, which is not installed: pip install 'siqkit[vllm]'")
    assert not (tmp_path / "run" / "store.duckdb").exists()  # not even the seeds stage ran
