"""The OpenAI-compatible backend against servers that trickle, flood or lie about sizes."""

from __future__ import annotations

import json
import time

from siqkit.teachers.registry import load_teacher
from tests.hostile.conftest import trickle
from tests.teachers.conftest import make_input, openai_cfg

REPLY = json.dumps({"choices": [{"message": {"content": "Answer: 4"}, "finish_reason": "stop"}]}).encode()
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def test_a_body_that_trickles_hits_the_whole_request_deadline(raw_server):
    # Every byte comes well within any per-read timeout; the reply as a whole never would.
    srv = raw_server(trickle(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(REPLY) + REPLY, 0.1))
    t = load_teacher(openai_cfg((srv.url, 1), timeout_s=1.0, max_retries=1, backoff_s=0.01))
    start = time.monotonic()
    (o,) = t.generate([make_input("k", "q")])
    elapsed = time.monotonic() - start
    t.close()
    assert o.finish_reason == "error" and "no complete reply within 1s" in o.error
    assert "gave up after 2 attempts" in o.error
    assert elapsed < 2 * 1.0 + 1.0  # two attempts of 1 s each, plus slack


def test_headers_that_trickle_hit_the_deadline_too(raw_server):
    srv = raw_server(trickle(OK_HEAD + b"X-Slow: " + b"a" * 100 + b"\r\n\r\n", 0.05))
    t = load_teacher(openai_cfg((srv.url, 1), timeout_s=0.5, max_retries=0))
    start = time.monotonic()
    (o,) = t.generate([make_input("k", "q")])
    t.close()
    assert o.finish_reason == "error" and "timeout" in o.error
    assert time.monotonic() - start < 1.5


def _flood(total: int, declare: bool):
    def behave(send) -> None:
        if declare:
            send(OK_HEAD + b"Content-Length: %d\r\n\r\n" % total)
            for _ in range(total // 65536):
                send(b"x" * 65536)
        else:
            send(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(total // 65536):
                send(b"10000\r\n" + b"x" * 65536 + b"\r\n")
            send(b"0\r\n\r\n")

    return behave


def test_a_reply_declared_too_large_is_refused_before_its_body_is_read(raw_server):
    srv = raw_server(_flood(50 * 2**20, declare=True))
    t = load_teacher(openai_cfg((srv.url, 1), max_reply_mb=1, max_retries=3))
    (o,) = t.generate([make_input("k", "q")])
    t.close()
    assert o.finish_reason == "error" and o.text == ""
    assert o.error.startswith("reply too large") and "declares 52,428,800 bytes" in o.error
    assert len(srv.sent) == 1  # a failed sample at once, not retried


def test_streamed_floods_are_cut_at_the_cap_whatever_their_number(raw_server):
    # Eight concurrent 50 MB replies without a length: each is abandoned past 1 MiB, so the
    # client never holds more than concurrency x max_reply_mb, whatever the server sends.
    srv = raw_server(_flood(50 * 2**20, declare=False))
    t = load_teacher(openai_cfg((srv.url, 8), max_reply_mb=1))
    out = t.generate([make_input(str(i), f"q{i}") for i in range(8)])
    t.close()
    assert all(o.finish_reason == "error" and "passed 1,048,576 bytes" in o.error for o in out)
    time.sleep(0.3)  # let the server threads notice the closed connections
    assert len(srv.sent) == 8
    # what the server got out before the client hung up: the cap plus socket buffers, not 50 MB
    assert max(srv.sent) < 16 * 2**20, srv.sent


def test_an_error_body_is_read_only_for_its_snippet(raw_server):
    def behave(send) -> None:
        send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % (40 * 2**20))
        for _ in range(40 * 16):
            send(b"e" * 65536)

    srv = raw_server(behave)
    t = load_teacher(openai_cfg((srv.url, 1), max_retries=0))
    (o,) = t.generate([make_input("k", "q")])
    t.close()
    assert o.finish_reason == "error" and "HTTP 400" in o.error and len(o.error) < 400
    time.sleep(0.3)
    assert srv.sent[0] < 16 * 2**20


def test_the_generate_stage_records_a_flood_as_failed_samples_with_the_reason(raw_server, tmp_path):
    import duckdb

    from tests.conftest import run_cli

    srv = raw_server(_flood(50 * 2**20, declare=False))
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps({"question": f"q{i}"}) for i in range(8)))
    (tmp_path / "r.yaml").write_text(
        "run: {dir: run}\nseeds: {sources: [{name: s, type: jsonl, path: q.jsonl}]}\n"
        f"teachers: [{{name: remote, backend: openai, max_reply_mb: 2, endpoints: [{{url: '{srv.url}', concurrency: 8}}]}}]\n")
    for stage in ("seeds", "generate"):
        res = run_cli("run", "r.yaml", "--only", stage, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(tmp_path / "run" / "store.duckdb"), read_only=True)
    rows = con.execute("SELECT finish_reason, error FROM generations").fetchall()
    con.close()
    assert len(rows) == 8
    assert all(f == "error" and e.startswith("reply too large") and "max_reply_mb=2" in e for f, e in rows), rows
    time.sleep(0.3)
    assert len(srv.sent) == 8 and max(srv.sent) < 20 * 2**20, srv.sent  # never 50 MB each
