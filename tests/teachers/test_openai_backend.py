"""The OpenAI-compatible HTTP teacher against a real, fault-injecting local server."""

import base64
import io
import logging
import socket
import time
from types import SimpleNamespace

import pytest
from PIL import Image

from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.backends.openai_http import chat_url, retry_after_seconds
from siqkit.teachers.registry import load_teacher

KEY = "sk-test-5ecret-value"


def test_normal_answer_and_request_shape(fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 2)))
    (o,) = t.generate([mk("k1", "what is 2+2", max_new_tokens=64, temperature=0.7, top_p=0.9, seed=5)])
    t.close()
    assert o.key == "k1" and o.finish_reason == "stop" and o.error is None
    assert o.text == "<think>\nthinking about what is 2+2\n</think>\n\nanswer: what is 2+2"
    assert (o.prompt_tokens, o.completion_tokens) == (11, 7)
    (req,) = srv.requests
    assert req["path"] == "/v1/chat/completions"
    body = req["body"]
    assert body["model"] == "teacher-model"
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (64, 0.7, 0.9, 5)
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "what is 2+2"}]}]
    assert "Authorization" not in req["headers"]


def test_images_arrive_as_png_data_urls_in_order(fake_openai, ocfg, mk, img):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 1)))
    images = [img("red"), img("blue", 32)]
    (o,) = t.generate([mk("k", "compare", images=images)])
    assert o.finish_reason == "stop"
    parts = srv.requests[0]["body"]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    for part, original in zip(parts, images):
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        got = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert got.format == "PNG" and got.size == original.size
        assert got.convert("RGB").getpixel((0, 0)) == original.getpixel((0, 0))


def test_image_count_mismatch_is_an_error_output(fake_openai, ocfg, mk, img):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 1)))
    bad = mk("k", "q")
    bad.images = [img("red")]
    (o,) = t.generate([bad])
    assert o.finish_reason == "error" and "image" in o.error
    assert srv.requests == []


def keyed_teacher(fake_openai, ocfg, monkeypatch, max_retries: int):
    """A fake server and a teacher on it whose API key (KEY) comes from the environment."""
    monkeypatch.setenv("SIQ_TEST_KEY", KEY)
    srv = fake_openai()
    return srv, load_teacher(ocfg((srv.url, 2), api_key_env="SIQ_TEST_KEY", max_retries=max_retries))


def test_api_key_sent_as_bearer_and_never_in_errors(fake_openai, ocfg, mk, monkeypatch, caplog):
    srv, t = keyed_teacher(fake_openai, ocfg, monkeypatch, max_retries=1)
    with caplog.at_level(logging.DEBUG):
        ok, echoed = t.generate([mk("a", "hello"), mk("b", "[echoauth]")])
    assert ok.finish_reason == "stop"
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in srv.requests)
    assert echoed.finish_reason == "error" and "HTTP 500" in echoed.error
    assert KEY not in echoed.error and "***" in echoed.error
    assert KEY not in caplog.text
    assert KEY not in repr(t.__dict__.get("endpoints"))


def test_no_part_of_the_key_survives_a_cut_body_or_a_reply_that_echoes_it(fake_openai, ocfg, mk, monkeypatch, caplog):
    _, t = keyed_teacher(fake_openai, ocfg, monkeypatch, max_retries=0)
    with caplog.at_level(logging.DEBUG):
        cut, echoed = t.generate([mk("a", "[echoauthcut]"), mk("b", "[echokey]")])
    assert cut.finish_reason == "error" and "HTTP 500" in cut.error
    assert KEY[:8] not in cut.error  # the body is cut after the key is masked, not before
    assert echoed.finish_reason == "stop" and KEY not in echoed.text and "Bearer ***" in echoed.text
    assert KEY[:8] not in caplog.text


def test_missing_api_key_env_fails_at_load(ocfg, monkeypatch):
    monkeypatch.delenv("SIQ_TEST_MISSING", raising=False)
    with pytest.raises(TeacherLoadError, match="SIQ_TEST_MISSING"):
        load_teacher(ocfg(("http://127.0.0.1:9", 1), api_key_env="SIQ_TEST_MISSING"))


@pytest.mark.parametrize("fault", ["[500x2]", "[503x1]", "[garbagex2]", "[schemax1]"])
def test_retry_then_succeed(fault, fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 1)))
    (o,) = t.generate([mk("k", f"q {fault}")])
    assert o.finish_reason == "stop", o.error
    assert o.text.endswith(f"answer: q {fault}")
    expected = int(fault.split("x")[1].rstrip("]")) + 1
    assert len(srv.requests) == expected


def test_gives_up_after_max_retries(fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 1), max_retries=2))
    (o,) = t.generate([mk("k", "[500x99]")])
    assert o.finish_reason == "error" and o.text == ""
    assert "gave up after 3 attempts" in o.error and "HTTP 500" in o.error
    assert len(srv.requests) == 3


def test_client_errors_are_not_retried(fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 1)))
    (o,) = t.generate([mk("k", "[400]")])
    assert o.finish_reason == "error" and "HTTP 400" in o.error and "bad request" in o.error
    assert len(srv.requests) == 1


def test_429_honours_retry_after(fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 1)))
    start = time.monotonic()
    (o,) = t.generate([mk("k", "[429x1]")])
    assert o.finish_reason == "stop"
    assert len(srv.requests) == 2
    assert time.monotonic() - start >= 0.95  # Retry-After: 1, not the 0.01 s backoff


def test_timeout_is_retried(fake_openai, ocfg, mk):
    srv = fake_openai(hang_s=1.5)
    t = load_teacher(ocfg((srv.url, 1), timeout_s=0.3))
    start = time.monotonic()
    (o,) = t.generate([mk("k", "[hangx1]")])
    assert o.finish_reason == "stop", o.error
    assert len(srv.requests) == 2
    assert time.monotonic() - start < 1.4


def test_timeout_every_time_is_an_error(fake_openai, ocfg, mk):
    srv = fake_openai(hang_s=1.0)
    t = load_teacher(ocfg((srv.url, 1), timeout_s=0.2, max_retries=1))
    (o,) = t.generate([mk("k", "[hangx9]")])
    assert o.finish_reason == "error" and "timeout" in o.error


def test_connection_refused_is_retried_then_error(ocfg, mk):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = load_teacher(ocfg((f"http://127.0.0.1:{port}", 1), max_retries=2))
    (o,) = t.generate([mk("k", "q")])
    assert o.finish_reason == "error" and "gave up after 3 attempts" in o.error
    assert "connection error" in o.error


def test_failover_to_a_healthy_endpoint(fake_openai, ocfg, mk):
    good = fake_openai()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    t = load_teacher(ocfg((dead, 1), (good.url, 1), max_retries=4))
    out = t.generate([mk(str(i), f"q{i}") for i in range(6)])
    assert all(o.finish_reason == "stop" for o in out), [o.error for o in out]
    assert len(good.requests) == 6


def test_concurrency_limits_per_endpoint_and_order(fake_openai, ocfg, mk):
    a, b = fake_openai(), fake_openai()
    t = load_teacher(ocfg((a.url, 2), (b.url + "/v1", 3)))
    batch = [mk(f"k{i}", f"q{i} [sleep=0.1]") for i in range(20)]
    start = time.monotonic()
    out = t.generate(batch)
    elapsed = time.monotonic() - start
    t.close()
    assert [o.key for o in out] == [i.key for i in batch]
    assert all(o.text.endswith(f"q{i} [sleep=0.1]") for i, o in enumerate(out))
    assert a.max_in_flight <= 2 and b.max_in_flight <= 3
    assert a.max_in_flight == 2 and b.max_in_flight == 3  # both used fully
    assert len(a.requests) + len(b.requests) == 20
    assert elapsed < 20 * 0.1 / 2  # parallel, well under serial time


def test_length_and_reasoning_content(fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 2)))
    cut, split = t.generate([mk("a", "[length]"), mk("b", "[reasoning]")])
    assert cut.finish_reason == "length"
    assert split.text == "<think>\nhidden steps\n</think>\n\nfinal"


def test_model_defaults_to_teacher_name_and_extra_body(fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg((srv.url, 1), model=None, extra_body={"top_k": 20}))
    t.generate([mk("a", "q")])
    body = srv.requests[0]["body"]
    assert body["model"] == "remote" and body["top_k"] == 20


def test_endpoint_config_errors(ocfg):
    with pytest.raises(TeacherLoadError, match="at least one endpoint"):
        load_teacher(ocfg(endpoints=[]))
    with pytest.raises(TeacherLoadError, match="concurrency must be at least 1"):
        load_teacher(ocfg(("http://x", 0)))
    with pytest.raises(TeacherLoadError, match="must start with http"):
        load_teacher(ocfg(("localhost:8000", 1)))


def test_plain_url_endpoints(fake_openai, ocfg, mk):
    srv = fake_openai()
    t = load_teacher(ocfg(endpoints=[srv.url + "/"]))
    assert t.generate([mk("a", "q")])[0].finish_reason == "stop"


def test_backoff_grows_with_jitter_and_is_capped(ocfg):
    t = load_teacher(ocfg(("http://127.0.0.1:9", 1), backoff_s=1.0, max_backoff_s=5.0))
    for attempt, full in ((0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)):
        delays = {t._delay(attempt, None) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays) and len(delays) > 1
    assert t._delay(0, 3.0) == 3.0  # Retry-After wins
    assert t._delay(0, 100.0) == 5.0  # but is capped
    t.close()


def test_chat_url_forms():
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0 + 1e-9


def _server_extra_missing() -> str | None:
    import importlib.util

    for mod in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            return mod
    return None


@pytest.mark.skipif(_server_extra_missing() is not None, reason="needs llama-cpp-python[server]")
def test_against_llama_cpp_python_server(tiny_gguf_pair, ocfg, mk):
    """The real OpenAI-compatible server of llama-cpp-python, serving a tiny twin's GGUF."""
    import json
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf_pair[0]), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "512", "--model_alias", "tiny", "--chat_format", "chat_template.default"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as r:
                    assert json.load(r)["data"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama-cpp-python server did not start: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
        # llama-cpp-python's server applies a repeat penalty unless told otherwise.
        neutral = {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0}
        t = load_teacher(ocfg((f"http://127.0.0.1:{port}/v1", 2), model="tiny", extra_body=neutral))
        out = t.generate([mk("a", "hello there", max_new_tokens=6), mk("b", "another question", max_new_tokens=4)])
        t.close()
        assert [o.key for o in out] == ["a", "b"]
        for o, n in zip(out, (6, 4)):
            assert o.error is None and o.finish_reason in ("stop", "length")
            assert o.prompt_tokens > 3 and 1 <= o.completion_tokens <= n
        # Greedy through HTTP equals greedy in-process on the same GGUF.
        local = load_teacher(SimpleNamespace(name="g", backend="llama_cpp", path=str(tiny_gguf_pair[0]), n_ctx=512))
        assert local.generate([mk("a", "hello there", max_new_tokens=6)])[0].text == out[0].text
        local.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
