"""A teacher that is a local GGUF file run by llama-cpp-python (``backend: llama_cpp``).

Prompts are rendered with the chat template stored in the GGUF (``tokenizer.chat_template``);
a GGUF without one is refused rather than silently given a generic format. For images, an
``mmproj`` GGUF (the vision projector) is loaded through llama-cpp-python's generic
multimodal handler (``MTMDChatHandler``, libmtmd), which also renders with the GGUF's own
template; images go in as base64 PNG data URLs. A text-only teacher (no ``mmproj``) answers
an input with images with an error output.

llama.cpp serves one request at a time here, so a batch runs sequentially; the prompt
prefix cache still spares re-reading a shared system prompt. Sampling is plain
temperature/top-p (llama.cpp's extra samplers, top-k, min-p and the repeat penalty are
switched off) so that the same settings mean the same thing on every backend; temperature 0
is greedy. ``finish_reason`` and token counts come from the completion's own fields
(llama-cpp-python may add a token or two past ``max_tokens`` to finish a UTF-8 character).

Config attributes read (default in brackets):

- ``name`` [``"llama_cpp"``]: the teacher's name;
- ``path`` (required): the model GGUF;
- ``mmproj`` [none]: the vision projector GGUF, needed for images;
- ``n_ctx`` [4096]: context length (prompt, images and completion together);
- ``n_gpu_layers`` [-1]: layers offloaded to the GPU, -1 for all (ignored by CPU builds);
- ``n_threads`` [llama.cpp's choice]: CPU threads;
- ``seed`` [0]: the context's seed (each request also passes its sampling seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from siqkit.teachers.backends import (
    TeacherLoadError,
    describe,
    error_output,
    openai_messages,
    opt,
    text_only_messages,
)
from siqkit.teachers.base import TeacherInput, TeacherOutput

GGUF_TEMPLATE = "chat_template.default"  # llama-cpp-python's name for the GGUF's own template


class LlamaCppTeacher:
    """Chat completions from a local GGUF; see the module docstring."""

    def __init__(self, cfg: Any):
        self.name = opt(cfg, "name", "llama_cpp")
        path = opt(cfg, "path", None)
        if path is None or not Path(path).is_file():
            raise TeacherLoadError(f"teacher '{self.name}': GGUF file not found: {path!r}")
        mmproj = opt(cfg, "mmproj", None)
        if mmproj is not None and not Path(mmproj).is_file():
            raise TeacherLoadError(f"teacher '{self.name}': mmproj file not found: {mmproj!r}")
        try:
            import llama_cpp
            from llama_cpp import llama_chat_format
        except ImportError as exc:
            raise TeacherLoadError(
                f"backend 'llama_cpp' needs llama-cpp-python (pip install llama-cpp-python): {describe(exc)}"
            ) from exc

        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": int(opt(cfg, "n_ctx", 4096)),
            "n_gpu_layers": int(opt(cfg, "n_gpu_layers", -1)),
            "seed": int(opt(cfg, "seed", 0)),
            "verbose": False,
        }
        if opt(cfg, "n_threads", None) is not None:
            kwargs["n_threads"] = int(cfg.n_threads)
        self.vision = mmproj is not None
        if self.vision:
            handler_cls = getattr(llama_chat_format, "MTMDChatHandler", None)
            if handler_cls is None:
                raise TeacherLoadError(
                    "images with a GGUF teacher need a llama-cpp-python with MTMDChatHandler (libmtmd); upgrade it"
                )
            try:
                kwargs["chat_handler"] = handler_cls(clip_model_path=str(mmproj), verbose=False)
            except Exception as exc:  # noqa: BLE001
                raise TeacherLoadError(f"teacher '{self.name}': cannot load mmproj {mmproj}: {describe(exc)}") from exc
        else:
            kwargs["chat_format"] = GGUF_TEMPLATE
        try:
            self.llm = llama_cpp.Llama(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise TeacherLoadError(f"teacher '{self.name}': cannot load {path}: {describe(exc)}") from exc
        if not self.llm.metadata.get("tokenizer.chat_template"):
            self.llm.close()
            raise TeacherLoadError(f"teacher '{self.name}': {path} has no chat template (tokenizer.chat_template)")

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        return [self._one(inp) for inp in batch]

    def _one(self, inp: TeacherInput) -> TeacherOutput:
        try:
            if self.vision:
                messages = openai_messages(inp)
            elif inp.images:
                return error_output(inp, "this GGUF teacher has no mmproj, so it cannot read images; set 'mmproj'")
            else:
                messages = text_only_messages(inp)
        except Exception as exc:  # noqa: BLE001
            return error_output(inp, f"cannot build the prompt: {describe(exc)}")
        s = inp.sampling
        try:
            resp = self.llm.create_chat_completion(
                messages=messages,
                max_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                seed=s.seed,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a prompt longer than n_ctx
            return error_output(inp, f"generation failed: {describe(exc)}")
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        return TeacherOutput(
            key=inp.key,
            text=choice["message"].get("content") or "",
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
