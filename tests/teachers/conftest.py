"""Shared fixtures for teacher tests: inputs, a fault-injecting OpenAI server, tiny twins."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from PIL import Image

from siqkit.teachers.base import Sampling, TeacherInput


def make_input(key: str, text: str, images: list[Image.Image] | None = None, **sampling) -> TeacherInput:
    """One input: a user message with an image part per image, then the text."""
    images = images or []
    parts = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    return TeacherInput(
        key=key,
        seed_id=f"seed-{key}",
        question=text,
        images=images,
        messages=[{"role": "user", "content": parts}],
        sampling=Sampling(**sampling),
    )


@pytest.fixture
def mk():
    """The :func:`make_input` factory."""
    return make_input


def square(color: str, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), color)


@pytest.fixture
def img():
    """A factory for plain coloured test images."""
    return square


# -- a fault-injecting OpenAI-compatible server ---------------------------------------------

_DIRECTIVE = re.compile(r"\[(\d{3}|[a-z]+?)(?:x(\d+))?(?:=([\d.]+))?\]")


class FakeOpenAI:
    """A real HTTP server on 127.0.0.1 answering ``POST /v1/chat/completions``.

    The last user text chooses the behaviour with bracketed directives; ``[500x2]`` means
    "the first two attempts of this prompt get HTTP 500", then it answers normally:

    ``[500xN]``, ``[503xN]``, ``[429xN]`` (with ``Retry-After: 1``), ``[hangxN]`` (sleep
    ``hang_s`` before answering), ``[garbagexN]`` (a non-JSON 200 body), ``[schemaxN]`` (JSON
    without ``choices``), ``[400]`` (always 400), ``[echoauth]`` (always 500 with the
    request's Authorization header in the body; ``[echoauthcut]``: with the key across the
    200th character), ``[echokey]`` (a 200 answer that repeats the Authorization header),
    ``[sleep=S]`` (answer after S seconds),
    ``[length]`` (finish_reason length), ``[reasoning]`` (reasoning in ``reasoning_content``).
    """

    def __init__(self, hang_s: float = 2.0):
        self.hang_s = hang_s
        self.requests: list[dict] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake._serve(self, raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        body = json.loads(raw)
        text = _user_text(body["messages"])
        with self._lock:
            self.attempts[text] += 1
            attempt = self.attempts[text]
            self.requests.append({"path": h.path, "headers": dict(h.headers), "body": body, "text": text})
        faults = {m.group(1): m for m in _DIRECTIVE.finditer(text)}

        def failing(name: str) -> bool:
            m = faults.get(name)
            return m is not None and attempt <= int(m.group(2) or 10**9)

        if h.path != "/v1/chat/completions":
            return _send(h, 404, b'{"error": "not found"}')
        if failing("400"):
            return _send(h, 400, b'{"error": {"message": "bad request"}}')
        if "echoauthcut" in faults:  # the key starts 10 characters before the body's 200th
            start = '{"pad": "", "error": "Bearer '
            pad = "x" * (190 - len(start))
            body = f'{{"pad": "{pad}", "error": "{h.headers.get("Authorization")}"}}'
            return _send(h, 500, body.encode())
        if "echoauth" in faults:
            return _send(h, 500, json.dumps({"error": h.headers.get("Authorization")}).encode())
        for code in ("500", "503"):
            if failing(code):
                return _send(h, int(code), b'{"error": "server error"}')
        if failing("429"):
            return _send(h, 429, b'{"error": "slow down"}', {"Retry-After": "1"})
        if failing("hang"):
            time.sleep(self.hang_s)
        if failing("garbage"):
            return _send(h, 200, b"<html>502 Bad Gateway</html>")
        if failing("schema"):
            return _send(h, 200, b'{"object": "chat.completion", "choices": []}')
        if "sleep" in faults:
            time.sleep(float(faults["sleep"].group(3)))
        message = {"role": "assistant", "content": f"<think>\nthinking about {text}\n</think>\n\nanswer: {text}"}
        if "echokey" in faults:  # a 200 reply that repeats the request's Authorization header
            message["content"] += f" (you sent {h.headers.get('Authorization')})"
        if "reasoning" in faults:
            message = {"role": "assistant", "content": "final", "reasoning_content": "hidden steps"}
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": "length" if "length" in faults else "stop"}
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
        _send(h, 200, json.dumps(reply).encode())


def _user_text(messages: list[dict]) -> str:
    content = [m for m in messages if m["role"] == "user"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def _send(h: BaseHTTPRequestHandler, code: int, body: bytes, headers: dict | None = None) -> None:
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def fake_openai():
    """A factory starting :class:`FakeOpenAI` servers, all shut down after the test."""
    servers: list[FakeOpenAI] = []

    def start(**kwargs) -> FakeOpenAI:
        servers.append(FakeOpenAI(**kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def openai_cfg(*urls_and_conc, **kw) -> SimpleNamespace:
    """An ``openai`` teacher config with fast retries, endpoints as (url, concurrency)."""
    base = dict(
        name="remote",
        backend="openai",
        model="teacher-model",
        endpoints=[{"url": u, "concurrency": c} for u, c in urls_and_conc],
        max_retries=3,
        timeout_s=5.0,
        backoff_s=0.01,
        max_backoff_s=2.0,
    )
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def ocfg():
    """The :func:`openai_cfg` factory."""
    return openai_cfg


# -- tiny twins, built once per session --------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory):
    from siqkit.models.twins import make_tiny

    return make_tiny("qwen3", tmp_path_factory.mktemp("tiny") / "qwen3", init_std=0.2)


@pytest.fixture(scope="session")
def tiny_vl_dir(tmp_path_factory):
    from siqkit.models.twins import make_tiny

    return make_tiny("qwen2_vl", tmp_path_factory.mktemp("tiny") / "qwen2_vl", init_std=0.2)


@pytest.fixture(scope="session")
def tiny_gguf_pair(tmp_path_factory):
    """(GGUF file, Hugging Face folder) of the same tiny qwen3 twin, weights in f32.

    Width 128 and init std 0.1 keep the random model's logits apart, so greedy decoding in
    llama.cpp and in torch picks the same tokens despite their different float rounding.
    """
    pytest.importorskip("llama_cpp")
    from siqkit.export import tiny_gguf

    root = tmp_path_factory.mktemp("gguf")
    gguf_path = tiny_gguf("qwen3", root, dtype="f32", hidden=128, intermediate=256, init_std=0.1, seed=1)
    return gguf_path, root / "qwen3-hf"
