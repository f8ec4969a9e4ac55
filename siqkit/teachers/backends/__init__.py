"""Teacher backends, one per module, and the small helpers they share.

- :mod:`.python_fn`: a plain Python callable (``backend: python``);
- :mod:`.openai_http`: OpenAI-compatible ``/v1/chat/completions`` servers (``backend: openai``);
- :mod:`.transformers_hf`: a local Hugging Face checkpoint (``backend: transformers``);
- :mod:`.vllm_engine`: a local checkpoint in vLLM's offline engine (``backend: vllm``);
- :mod:`.llama_cpp_gguf`: a local GGUF through llama-cpp-python (``backend: llama_cpp``).

Backends read their settings from a config object's attributes with :func:`opt`, so a
missing attribute and ``None`` both mean "the documented default". Heavy libraries are
imported inside the backend modules only, so loading one backend never imports another's.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from typing import Any

from PIL import Image

from siqkit.errors import SiqkitError
from siqkit.teachers.base import TeacherInput, TeacherOutput


class TeacherLoadError(SiqkitError):
    """A teacher cannot be loaded as configured (missing file, bad import, missing key)."""


def opt(cfg: Any, name: str, default: Any) -> Any:
    """``cfg.name``, or ``default`` when the attribute is missing or None."""
    value = getattr(cfg, name, None)
    return default if value is None else value


def error_output(inp: TeacherInput, message: str) -> TeacherOutput:
    """The output for a sample that failed: no text, ``finish_reason="error"``."""
    return TeacherOutput(key=inp.key, text="", finish_reason="error", error=message)


def eos_ids(*values: Any) -> list[int]:
    """The distinct integer token ids among ``values`` (each an id, a list of ids or None)."""
    ids: list[int] = []
    for v in values:
        for t in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(t, int) and t not in ids:
                ids.append(t)
    return ids


def describe(exc: BaseException) -> str:
    """One line for an exception: its type and message.

    A pydantic validation error (vLLM validates its engine arguments with pydantic) gives
    its first problem instead of its "1 validation error for X" header.
    """
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not text:
        return type(exc).__name__
    if re.match(r"\d+ validation errors? for ", text[0]) and len(text) > 1:
        problem = next((t for t in text[1:] if t.startswith("Value error, ")), text[1])
        return re.sub(r"\s*\[type=.*$", "", problem.removeprefix("Value error, "))
    return f"{type(exc).__name__}: {text[0]}"


def image_data_url(image: Image.Image) -> str:
    """A ``data:image/png;base64,...`` URL for an image (converted to RGB/RGBA first)."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def count_image_parts(messages: list[dict]) -> int:
    """How many ``{"type": "image"}`` placeholders the messages hold."""
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )


def check_images(inp: TeacherInput) -> None:
    """Raise ``ValueError`` unless every image has exactly one placeholder, in order."""
    n = count_image_parts(inp.messages)
    if n != len(inp.images):
        raise ValueError(f"messages have {n} image part(s) but the input has {len(inp.images)} image(s)")


def with_images(inp: TeacherInput, image_part: Callable[[Image.Image], dict], text_parts: bool = False) -> list[dict]:
    """The input's messages with each ``{"type": "image"}`` part made ``image_part(next image)``.

    Other parts are kept; a string content stays a string, or with ``text_parts`` becomes
    one text part (and a missing one an empty text part). Raises ``ValueError`` unless every
    image has exactly one placeholder.
    """
    check_images(inp)
    images = iter(inp.images)
    out = []
    for m in inp.messages:
        content = m.get("content")
        if isinstance(content, list):
            content = [image_part(next(images)) if isinstance(p, dict) and p.get("type") == "image" else p
                       for p in content]
        elif text_parts:
            content = [{"type": "text", "text": content or ""}]
        out.append({**m, "content": content})
    return out


def openai_messages(inp: TeacherInput) -> list[dict]:
    """The input's messages in OpenAI form: each image part becomes an ``image_url`` part
    holding the next image as a base64 PNG data URL; text and string contents are kept."""
    return with_images(inp, lambda im: {"type": "image_url", "image_url": {"url": image_data_url(im)}})


def text_only_messages(inp: TeacherInput) -> list[dict]:
    """Messages with list contents joined into plain strings; images are an error."""
    if inp.images or count_image_parts(inp.messages):
        raise ValueError("this teacher is text-only but the input has images")
    out = []
    for m in inp.messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({**m, "content": content if content is not None else ""})
    return out
