"""Run exported GGUF files in llama-cpp-python: text logits, greedy decoding, and images via mtmd.

llama-cpp-python's chat handlers hide the per-position logits that a parity check needs, so
this module drives the same pieces they use: ``Llama.eval`` for text and llama.cpp's mtmd
library (``llama_cpp.mtmd_cpp``) to tokenize a prompt with media markers, encode images with
the mmproj and feed the image embeddings to the language model (M-RoPE positions included).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from siqkit.errors import SiqkitError
from siqkit.export.quantize import quiet_llama


class RuntimeCheckError(SiqkitError, RuntimeError):
    """llama-cpp-python could not load or run an exported file."""


_MTMD_LOG = None


def _route_mtmd_logs(mtmd_cpp) -> None:
    """Send mtmd's log lines through llama-cpp-python's logger (silent below ERROR unless verbose)."""
    global _MTMD_LOG
    if _MTMD_LOG is not None:
        return
    import logging

    import llama_cpp

    logger = logging.getLogger("llama-cpp-python")

    @llama_cpp.llama_log_callback
    def _log(level, text, user_data):
        if level == 3 or logger.level == logging.DEBUG:  # 3 = GGML_LOG_LEVEL_ERROR
            print(text.decode("utf-8", errors="replace"), end="", file=sys.stderr)

    _MTMD_LOG = _log
    mtmd_cpp.mtmd_log_set(_log, None)
    mtmd_cpp.mtmd_helper_log_set(_log, None)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_llama(path: str | Path, *, n_ctx: int = 2048, n_threads: int | None = None, logits_all: bool = True):
    """``llama_cpp.Llama`` for ``path`` with per-position logits kept (``scores``)."""
    import llama_cpp

    try:  # verbose=False also sets llama-cpp-python's logger to errors only
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=logits_all, verbose=False,
                               n_threads=n_threads, n_batch=min(512, n_ctx))
    except ValueError as err:
        raise RuntimeCheckError(f"llama-cpp-python cannot load {path}: {err}") from None


def eval_logits(llm, ids: Sequence[int]) -> np.ndarray:
    """Logits at every position of ``ids``, from a fresh context (rows: positions)."""
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def greedy(llm, n: int, start_logits: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Continue the evaluated context greedily for ``n`` tokens; returns tokens and their logits rows."""
    tokens, rows = [], [start_logits]
    for _ in range(n):
        tok = int(np.argmax(rows[-1]))
        tokens.append(tok)
        if len(tokens) == n:
            break
        llm.eval([tok])
        rows.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32))
    return tokens, np.stack(rows)


class VisionContext:
    """An mmproj loaded next to a ``Llama`` model (llama.cpp's mtmd context).

    ``min_tokens``/``max_tokens`` bound the visual tokens per image (llama.cpp's own defaults
    otherwise); set them from the Hugging Face processor so both resize images alike.
    """

    def __init__(self, llm, mmproj: str | Path, *, min_tokens: int = 0, max_tokens: int = 0):
        from llama_cpp import mtmd_cpp

        _route_mtmd_logs(mtmd_cpp)
        self.m = mtmd_cpp
        self.llm = llm
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = llm.n_threads
        params.warmup = False
        if min_tokens:
            params.image_min_tokens = int(min_tokens)
        if max_tokens:
            params.image_max_tokens = int(max_tokens)
        with _stderr_silenced():  # the clip loader prints its hyper-parameters and advice
            self.ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
        if not self.ctx:
            raise RuntimeCheckError(f"llama.cpp's mtmd cannot load the mmproj {mmproj} with this model")
        self.marker = mtmd_cpp.mtmd_default_marker().decode()

    def close(self) -> None:
        if self.ctx:
            self.m.mtmd_free(self.ctx)
            self.ctx = None

    def __enter__(self) -> VisionContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _bitmap(self, image: Image.Image):
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        buf = (ctypes.c_uint8 * rgb.size).from_buffer_copy(rgb.tobytes())
        bitmap = self.m.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0], buf)
        if not bitmap:
            raise RuntimeCheckError("mtmd could not take the image")
        return bitmap

    def _chunks(self, text: str, images: Sequence[Image.Image]):
        bitmaps = [self._bitmap(im) for im in images]
        try:
            data = text.encode()
            inp = self.m.mtmd_input_text()
            inp.text, inp.text_len, inp.add_special, inp.parse_special = data, len(data), False, True
            chunks = self.m.mtmd_input_chunks_init()
            arr = (self.m.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            rc = self.m.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), arr, len(bitmaps))
            if rc != 0:
                self.m.mtmd_input_chunks_free(chunks)
                raise RuntimeCheckError(f"mtmd could not tokenize the prompt (code {rc}); one marker per image?")
            return chunks
        finally:
            for b in bitmaps:
                self.m.mtmd_bitmap_free(b)

    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        """The projector's output for one image: (visual tokens, embedding width)."""
        chunks = self._chunks(self.marker, [image])
        try:
            for i in range(self.m.mtmd_input_chunks_size(chunks)):
                chunk = self.m.mtmd_input_chunks_get(chunks, i)
                if self.m.mtmd_input_chunk_get_type(chunk) != self.m.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    continue
                n = self.m.mtmd_input_chunk_get_n_tokens(chunk)
                if self.m.mtmd_encode_chunk(self.ctx, chunk) != 0:
                    raise RuntimeCheckError("mtmd could not encode the image")
                import llama_cpp

                # Qwen3-VL stacks its deepstack features after the main embedding
                width = llama_cpp.llama_model_n_embd_inp(self.llm.model)
                embd = self.m.mtmd_get_output_embd(self.ctx)
                return np.ctypeslib.as_array(embd, shape=(n * width,)).reshape(n, width).copy()
        finally:
            self.m.mtmd_input_chunks_free(chunks)
        raise RuntimeCheckError("the prompt produced no image chunk")

    def eval_prompt(self, text: str, images: Sequence[Image.Image]) -> tuple[int, np.ndarray]:
        """Evaluate ``text`` (one marker per image) from a fresh context.

        Returns (number of prompt tokens, logits at the last prompt position).
        """
        llm = self.llm
        llm.reset()
        llm._ctx.kv_cache_clear()
        chunks = self._chunks(text, images)
        n_tokens = 0
        try:
            import llama_cpp

            for i in range(self.m.mtmd_input_chunks_size(chunks)):
                chunk = self.m.mtmd_input_chunks_get(chunks, i)
                kind = self.m.mtmd_input_chunk_get_type(chunk)
                if kind == self.m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    ptr = self.m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    toks = [ptr[j] for j in range(count.value)]
                    llm.eval(toks)
                    n_tokens += len(toks)
                else:
                    new_pos = llama_cpp.llama_pos(0)
                    with quiet_llama():
                        rc = self.m.mtmd_helper_eval_chunk_single(
                            self.ctx, llm._ctx.ctx, chunk, llama_cpp.llama_pos(llm.n_tokens),
                            llama_cpp.llama_seq_id(0), llm.n_batch, False, ctypes.byref(new_pos))
                    if rc != 0:
                        raise RuntimeCheckError(f"mtmd could not evaluate the image (code {rc})")
                    llm.n_tokens = new_pos.value
                    n_tokens += self.m.mtmd_input_chunk_get_n_tokens(chunk)
        finally:
            self.m.mtmd_input_chunks_free(chunks)
        return n_tokens, np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
