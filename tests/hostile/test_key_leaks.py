"""A server that echoes the API key back, everywhere it can: no 8-character piece of the key
may reach the run folder (store, log, media, anything) or the command's output."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import duckdb

from tests.conftest import run_cli
from tests.teachers.conftest import FakeOpenAI


def fragments(key: str, n: int = 8) -> set[str]:
    return {key[i:i + n] for i in range(len(key) - n + 1)}


def test_no_fragment_of_the_key_anywhere_in_the_run_folder_or_output(tmp_path: Path):
    key = "sk-" + secrets.token_hex(16)
    srv = FakeOpenAI()
    try:
        questions = ["what [echokey]", "why [echoauthcut]", "how [echoauth]", "plain question"]
        (tmp_path / "q.jsonl").write_text("\n".join(json.dumps({"question": q, "answer": "x"}) for q in questions))
        (tmp_path / "r.yaml").write_text(
            "run: {dir: run}\nseeds: {sources: [{name: s, type: jsonl, path: q.jsonl}]}\n"
            "teachers: [{name: remote, backend: openai, model: m, api_key_env: SIQ_HOSTILE_KEY, max_retries: 1,\n"
            f"            backoff_s: 0.01, endpoints: [{{url: '{srv.url}', concurrency: 2}}]}}]\n")
        env = {"SIQ_HOSTILE_KEY": key}
        outputs = []
        for stage in ("seeds", "generate"):
            res = run_cli("run", "r.yaml", "--only", stage, cwd=tmp_path, env=env)
            assert res.returncode == 0, res.stderr
            outputs.append(res.stdout + res.stderr)
        assert all(r["headers"]["Authorization"] == f"Bearer {key}" for r in srv.requests)  # it was sent
    finally:
        srv.close()

    db = tmp_path / "run" / "store.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT s.question, g.raw, g.error FROM generations g JOIN seeds s ON s.id = g.seed_id").fetchall()}
    dump = []
    for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
        dump.append(str(con.execute(f'SELECT * FROM "{table}"').fetchall()))
    con.close()
    # the echoes happened and were masked, not avoided
    assert "Bearer ***" in rows["what [echokey]"][0]
    assert "HTTP 500" in rows["why [echoauthcut]"][1] and "HTTP 500" in rows["how [echoauth]"][1]
    assert "***" in rows["how [echoauth]"][1]

    pieces = fragments(key)
    texts = {"command output": "\n".join(outputs), "store tables": "\n".join(dump)}
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():  # binary files too (the store's pages, media): as bytes, decoded leniently
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert len(texts) > 3
    for where, text in texts.items():
        leaked = sorted(p for p in pieces if p in text)
        assert not leaked, f"{where} holds {leaked[:3]}"
