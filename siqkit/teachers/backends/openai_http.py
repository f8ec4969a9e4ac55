"""A teacher behind OpenAI-compatible ``/v1/chat/completions`` servers (``backend: openai``).

Works with vLLM, SGLang, llama-server, llama-cpp-python's server, Ollama and the OpenAI API.
Requests are spread over several endpoints; each endpoint has at most ``concurrency``
requests in flight (a shared pool of endpoint slots: a request takes any free slot, and
gives it back while it waits to retry; an endpoint that just failed rests for the backoff
delay, doubled for each failure in a row, so the retry goes to another endpoint when one is
healthy). HTTP is httpx's asynchronous client (connection pooling and keep-alive), driven
by one event loop in a background thread; only the endpoint pool, the retries and the
bounds are siqkit's.

Images become ``image_url`` parts holding base64 PNG data URLs. When a server splits the
reasoning off (``reasoning_content`` or ``reasoning`` in the message, as vLLM's and
llama-server's reasoning parsers do), it is put back as ``<think>\\n…\\n</think>\\n\\n``
before the content, so the raw output keeps the whole trace.

Bounds, whatever the server does: ``timeout_s`` is a deadline for the whole request
(connecting, sending, the headers and the complete reply body), so a server that trickles
one byte a second still times out; a reply body over ``max_reply_mb`` (declared in
``Content-Length`` or counted while it streams) is abandoned at once and the sample is
recorded as failed with that reason (not retried: the same prompt would get the same reply),
so memory stays under ``concurrency`` × ``max_reply_mb`` per endpoint.

Retried, with exponential backoff and jitter (or the server's ``Retry-After``): HTTP 408,
429 and 5xx, timeouts, connection errors, and bodies that are not JSON or have no
``choices[0].message``. Other HTTP errors (400, 401, 404, ...) fail at once. A request that
still fails after ``max_retries`` retries becomes an error output. The API key is only ever
put in the ``Authorization`` header; it is never logged, and is masked in error texts and
reply text (before any cut) even when a server echoes it back.

Config attributes read (default in brackets):

- ``name`` [``"openai"``]: the teacher's name;
- ``endpoints`` (required): a list of ``{url, concurrency [4]}`` (dicts or objects) or plain
  URL strings. A URL may be the server root (``http://host:8000``), its ``/v1`` base, or
  the full ``/v1/chat/completions`` address;
- ``model`` [``name``]: the ``model`` field sent with every request;
- ``api_key_env`` [none]: name of the environment variable that holds the API key; sent as
  ``Authorization: Bearer <key>``; loading fails if the variable is named but unset;
- ``max_retries`` [5]: retries after the first attempt;
- ``timeout_s`` [120]: deadline of one attempt, from connecting to the last byte of the reply;
- ``max_reply_mb`` [8]: largest reply body read, in MiB (a 100,000-token answer is under 1 MiB;
  raise it for replies that carry logprobs);
- ``backoff_s`` [1.0]: first retry delay; doubles each retry, scaled by a random 0.5–1.0;
- ``max_backoff_s`` [60]: upper bound on one delay, ``Retry-After`` included;
- ``extra_body`` [``{}``]: extra JSON fields merged into every request, e.g.
  ``chat_template_kwargs`` for vLLM, or ``repeat_penalty: 1.0`` for llama-cpp-python's
  server, whose default repeat penalty (1.1) changes even greedy outputs.

Sampling maps to ``temperature``, ``top_p``, ``max_tokens`` and ``seed``. Server
``finish_reason`` ``length`` maps to ``length``, ``content_filter`` to an error (text kept),
anything else to ``stop``; ``usage.prompt_tokens``/``completion_tokens`` are copied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from siqkit.teachers.backends import TeacherLoadError, describe, error_output, openai_messages, opt
from siqkit.teachers.base import TeacherInput, TeacherOutput

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429}
_BODY_SNIPPET = 200
_ERROR_BODY = 64 * 1024  # bytes of an error body read for its snippet


@dataclass(frozen=True)
class Endpoint:
    url: str  # full chat completions address
    concurrency: int


class _Retry(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that another attempt would not fix."""


def chat_url(url: str) -> str:
    """The chat completions address for a server root, a ``/v1`` base or the full address."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def parse_endpoints(raw: Any) -> list[Endpoint]:
    """Endpoints from config: URL strings or ``{url, concurrency}`` dicts/objects."""
    if isinstance(raw, (str, dict)) or raw is None:
        raw = [raw] if raw else []
    endpoints = []
    for item in raw:
        if isinstance(item, str):
            url, conc = item, None
        elif isinstance(item, dict):
            url, conc = item.get("url"), item.get("concurrency")
        else:
            url, conc = getattr(item, "url", None), getattr(item, "concurrency", None)
        if not url:
            raise TeacherLoadError(f"endpoint without a url: {item!r}")
        if not str(url).startswith(("http://", "https://")):
            raise TeacherLoadError(f"endpoint url must start with http:// or https://, got {url!r}")
        conc = 4 if conc is None else int(conc)
        if conc < 1:
            raise TeacherLoadError(f"endpoint {url}: concurrency must be at least 1, got {conc}")
        endpoints.append(Endpoint(chat_url(str(url)), conc))
    if not endpoints:
        raise TeacherLoadError("backend 'openai' needs at least one endpoint ('endpoints: [{url: ...}]')")
    return endpoints


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds, or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class OpenAITeacher:
    """Sends each input as one chat completion request; see the module docstring."""

    def __init__(self, cfg: Any):
        self.name = opt(cfg, "name", "openai")
        self.endpoints = parse_endpoints(opt(cfg, "endpoints", None))
        self.model = opt(cfg, "model", self.name)
        self.max_retries = int(opt(cfg, "max_retries", 5))
        self.timeout_s = float(opt(cfg, "timeout_s", 120))
        self.max_reply_bytes = int(float(opt(cfg, "max_reply_mb", 16)) * 2**20)
        self.backoff_s = float(opt(cfg, "backoff_s", 1.0))
        self.max_backoff_s = float(opt(cfg, "max_backoff_s", 60))
        self.extra_body = dict(opt(cfg, "extra_body", {}))
        for key in ("max_retries", "timeout_s", "max_reply_bytes", "backoff_s", "max_backoff_s"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)) or (value == 0 and key in ("timeout_s", "max_reply_bytes")):
                raise TeacherLoadError(f"teacher '{self.name}': {key} must be a finite number above 0, got {value}")
        key_env = opt(cfg, "api_key_env", None)
        self._key = None
        if key_env:
            self._key = os.environ.get(key_env)
            if not self._key:
                raise TeacherLoadError(f"teacher '{self.name}': environment variable {key_env} (api_key_env) is not set")
        # An endpoint that just failed is rested until this time, so retries go elsewhere; the
        # rest doubles with each failure in a row (reset by a success), so a dead endpoint is
        # tried ever more rarely while a healthy one takes the work.
        self._rest_until = [0.0] * len(self.endpoints)
        self._failures = [0] * len(self.endpoints)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"teacher-{self.name}")
        self._thread.start()
        self._run(self._open())

    async def _open(self) -> None:
        # One token per allowed in-flight request per endpoint, interleaved, so that the
        # first requests of a batch go to different endpoints.
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for level in range(max(e.concurrency for e in self.endpoints)):
            for i, e in enumerate(self.endpoints):
                if e.concurrency > level:
                    self._slots.put_nowait(i)
        total = sum(e.concurrency for e in self.endpoints)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=total, max_keepalive_connections=total),
        )

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        async def all_of() -> list[TeacherOutput]:
            return list(await asyncio.gather(*(self._request(inp) for inp in batch)))

        return self._run(all_of())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=5)
        except Exception:  # noqa: BLE001 - closing is best effort; the loop stops anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def payload(self, inp: TeacherInput) -> dict:
        s = inp.sampling
        body = {
            "model": self.model,
            "messages": openai_messages(inp),
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
            "stream": False,
        }
        body.update(self.extra_body)
        return body

    async def _request(self, inp: TeacherInput) -> TeacherOutput:
        try:
            data = json.dumps(self.payload(inp)).encode("utf-8")
        except Exception as exc:  # noqa: BLE001 - a bad input becomes an error output
            return error_output(inp, f"cannot build the request: {describe(exc)}")
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            slot = await self._take_slot()
            endpoint = self.endpoints[slot]
            try:
                out = await asyncio.wait_for(self._post(endpoint, data, inp), self.timeout_s)
                self._failures[slot] = 0
                return out
            except _Fatal as exc:
                return error_output(inp, self._mask(str(exc)))
            except _Retry as exc:
                last, hint = self._mask(str(exc)), exc.retry_after
            except asyncio.TimeoutError:
                last, hint = f"timeout on {endpoint.url}: no complete reply within {self.timeout_s:g}s", None
            except Exception as exc:  # noqa: BLE001 - anything unexpected still ends as an output
                return error_output(inp, self._mask(f"{endpoint.url}: {describe(exc)}"))
            finally:
                self._slots.put_nowait(slot)
            self._failures[slot] += 1
            self._rest_until[slot] = time.monotonic() + self._delay(self._failures[slot] - 1, hint)
            if attempt < self.max_retries:
                delay = self._delay(attempt, hint)
                log.warning("teacher %s: %s; retry %d/%d in %.2fs", self.name, last, attempt + 1, self.max_retries, delay)
                await asyncio.sleep(delay)
        return error_output(inp, f"gave up after {self.max_retries + 1} attempts; last error: {last}")

    async def _take_slot(self) -> int:
        """A free endpoint slot, preferring endpoints that are not resting after a failure."""
        while True:
            slot = await self._slots.get()
            now = time.monotonic()
            if self._rest_until[slot] <= now or all(t > now for t in self._rest_until):
                return slot
            self._slots.put_nowait(slot)  # resting: let a healthy endpoint take this request
            await asyncio.sleep(0.005)

    def _delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(hint, self.max_backoff_s)
        return min(self.backoff_s * 2**attempt, self.max_backoff_s) * random.uniform(0.5, 1.0)

    def _mask(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _snippet(self, raw: bytes) -> str:
        """The start of a response body for an error message: the key masked first, then cut,
        so no part of a key echoed near the cut survives."""
        text = self._mask(raw.decode("utf-8", errors="replace").strip().replace("\n", " "))
        return text[:_BODY_SNIPPET] + ("…" if len(text) > _BODY_SNIPPET else "") if text else "(empty body)"

    async def _post(self, endpoint: Endpoint, data: bytes, inp: TeacherInput) -> TeacherOutput:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        try:
            async with self._client.stream("POST", endpoint.url, content=data, headers=headers) as resp:
                failed = resp.status_code >= 400
                # An error body only feeds a 200-character snippet: its first 64 KiB are plenty.
                raw = await self._body(endpoint, resp, _ERROR_BODY if failed else self.max_reply_bytes, failed)
        except httpx.TimeoutException as exc:
            raise _Retry(f"timeout on {endpoint.url}: {describe(exc)}") from None
        except (httpx.TransportError, OSError) as exc:
            raise _Retry(f"connection error on {endpoint.url}: {describe(exc)}") from None
        if failed:
            msg = f"HTTP {resp.status_code} from {endpoint.url}: {self._snippet(raw)}"
            if resp.status_code in RETRY_STATUS or resp.status_code >= 500:
                raise _Retry(msg, retry_after_seconds(resp.headers.get("Retry-After")))
            raise _Fatal(msg)
        return self._output(endpoint, raw, inp)

    async def _body(self, endpoint: Endpoint, resp: httpx.Response, limit: int, truncate: bool) -> bytes:
        """The reply body, at most ``limit`` bytes: cut there when ``truncate``, else refused."""
        declared = resp.headers.get("Content-Length", "")
        if not truncate and declared.isdigit() and int(declared) > limit:
            raise _Fatal(self._too_big(endpoint, f"declares {int(declared):,} bytes"))
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if truncate:
                    break
                raise _Fatal(self._too_big(endpoint, f"passed {limit:,} bytes"))
        return b"".join(chunks)[:limit]

    def _too_big(self, endpoint: Endpoint, what: str) -> str:
        return (f"reply too large: the body from {endpoint.url} {what}, over max_reply_mb="
                f"{self.max_reply_bytes / 2**20:g}; raise max_reply_mb if such replies are expected")

    def _output(self, endpoint: Endpoint, raw: bytes, inp: TeacherInput) -> TeacherOutput:
        try:
            body = json.loads(raw)
            choice = body["choices"][0]
            message = choice["message"]
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retry(f"malformed response from {endpoint.url} ({describe(exc)}): {self._snippet(raw)}") from None
        text = _text(message.get("content"))
        thought = _text(message.get("reasoning_content") or message.get("reasoning"))
        if thought.strip():
            text = f"<think>\n{thought.strip()}\n</think>\n\n{text.lstrip()}"
        text = self._mask(text)  # a server that echoes the key must not get it into the store
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        finish = choice.get("finish_reason")
        out = TeacherOutput(
            key=inp.key,
            text=text,
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
        )
        if finish == "content_filter":
            out.finish_reason, out.error = "error", "the server's content filter stopped the output"
        return out


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

