"""A teacher that is a local Hugging Face checkpoint (``backend: transformers``).

It needs nothing beyond the base install (torch, transformers, bitsandbytes). Vision-language
checkpoints (a ``model_type`` that ``AutoModelForImageTextToText`` knows) load with that
class and their processor (``AutoProcessor``, or an image-only build of it when torchvision
is missing); text-only ones with ``AutoModelForCausalLM`` and ``AutoTokenizer``. Prompts are
rendered with the checkpoint's own chat template. Nothing is downloaded: the path must be a
local folder.

**Outputs**, on both paths below: the text is the completion only, cut at the first
end-of-sequence token and decoded with special tokens kept (so ``<think>`` tags survive);
``finish_reason`` is ``length`` when ``max_new_tokens`` tokens came without an EOS, else
``stop``. ``prompt_tokens`` counts the row's unpadded prompt (image tokens included),
``completion_tokens`` the generated tokens up to and including the EOS. Generation stops at
any of the checkpoint's EOS tokens (its ``generation_config`` and its tokenizer's).
``Sampling.min_new_tokens`` > 0 forbids every EOS before that many tokens (forced-length
outputs for ``benchmarks/generate.py``; recipes leave it 0). Sampling starts from the
checkpoint's ``generation_config.json`` (``top_k``, ``repetition_penalty`` …), then the
recipe's ``temperature`` and ``top_p``; temperature 0 is greedy.

**Static batches** (``batching: static``, the default). Inputs of one ``generate`` call are
grouped by sampling settings (and, for VLMs, by whether they carry images), sorted by prompt
length in tokens, and generated with ``model.generate`` in batches with LEFT padding, so
every row's prompt ends where generation starts: greedy decoding gives the same text batched
as one at a time, up to kernel rounding (bitsandbytes decodes a single row with another
kernel than a batch, so near-tied logits can drift apart late in long outputs). A sampled
batch seeds torch with its inputs' seed (the seed is part of the grouping) before it
generates, so a rerun of the same call gives the same texts. When a batch fails (out of
memory, say) it is retried in two halves, down to single inputs; an input that still fails
becomes an error output.

The batch size is ``batch_size`` when the recipe gives one. Without one (``None``), on CUDA
it is sized per batch from a KV-cache budget (:func:`batch_for_memory`): the free GPU
memory once the weights are loaded (``torch.cuda.mem_get_info`` plus what torch's allocator
holds unused) times :data:`KV_FRACTION` (0.75; the rest absorbs the allocator's
fragmentation as the cache grows step by step, and bitsandbytes' dequantization buffers),
divided by what one row costs: its KV cache for prompt + ``max_new_tokens`` tokens
(2 × layers × kv_heads × head_dim × dtype bytes per token) plus an allowance for what is not
KV cache (the fp32 last-position logits and the sampling temporaries, vocab × (dtype + 16)
bytes; one layer's prefill activations, prompt × (4 × hidden + 3 × intermediate) × dtype
bytes; the attention mask, prompt × total bytes), clamped to [1, :data:`MAX_BATCH` = 256].
Prompt lengths are counted in tokens (images estimated at ``max(576, pixels / 784)`` tokens
each, which is at least what Qwen-VL and LLaVA make of them), and each batch is sized for
its longest prompt. Each distinct size is logged once. On a CPU, ``None`` means 8.

``window`` (what the generate stage hands to one ``generate`` call) is 4 × ``batch_size``
for a fixed batch (32 at the CPU default of 8), so that sorting by length inside a call
puts like with like, and 512 when batches are sized on CUDA (two of the largest batches);
a recipe's ``window`` overrides it. Larger windows sort better but commit less often: the
stage stores a call's outputs when the call returns.

**Continuous batching** (``batching: continuous``): transformers' own paged engine
(``model.init_continuous_batching(generation_config, continuous_batching_config)``, then
``manager.start()``, ``add_request(input_ids, request_id=…, max_new_tokens=…,
eos_token_id=…)``, ``get_result()``, ``stop()``). :meth:`ContinuousTransformersTeacher.stream`
pulls inputs lazily, keeps at most ``window`` [512] requests in the engine (it schedules as
many as its paged KV cache holds and queues the rest), and yields each output as it
finishes; ``generate`` is built on it and keeps input order. The engine runs on CUDA (it
switches a bf16/fp16 model to flash attention when that is installed, else it keeps SDPA)
and on a CPU with SDPA; the tests run it on a CPU with fp32 and bitsandbytes NF4 twins of
qwen3, and the text-only prompts of the VLM families, with the same greedy texts as static
batches. On CUDA the engine sizes its cache
from the free GPU memory (its own default, 90% of it); on a CPU the cache holds
``min(window, 64)`` sequences of ``max_new_tokens`` + 512 tokens (at least one of
``max_new_tokens`` + 8192 tokens) within 2 GiB. A request the engine fails becomes an error
output; if the engine itself dies, every request it held does, and the next input starts a
new engine.

Sampling in the engine: ``do_sample``, ``temperature`` and ``top_p`` are fixed per engine
(its generation config), while ``max_new_tokens`` is per request. A stream therefore runs one
engine per distinct (greedy, or temperature and top_p) setting at a time: when the setting
changes, the running engine finishes its requests and stops before the next starts (the
generate stage sends one teacher's inputs, which share one setting, so that never thrashes).
Greedy outputs match the static path's (up to kernel rounding, as above), unless the
checkpoint's ``generation_config.json`` asks for a processor the engine does not support
(``repetition_penalty``, ``no_repeat_ngram_size`` …): the engine drops those, with a
warning. The engine has no per-request seed: it seeds torch once, with the seed of its first
request, and then draws
every sampled token from one generator in whatever order requests share its steps, so
**sampled outputs of continuous batching are not reproducible** from run to run (each of k
samples is still an independent draw); use static batches where sampled outputs must be.
``min_new_tokens`` is applied by a per-request logits processor added to the engine (its
stock min-length processors are not supported there); with asynchronous batching (on by
default on CUDA) it may forbid the EOS one token longer than asked, which changes nothing for
forced-length runs (``min_new_tokens == max_new_tokens``).

The engine takes token ids only, no images: on a vision-language checkpoint, inputs with
images go through static batches (up to ``window`` of them are collected; the engine finishes
its requests and stops while they run), text-only inputs go to the engine.

**Which on CUDA.** Measured on an H200 with Qwen3-8B's shape and 256 forced tokens per
request (``benchmarks/generate.py``): NF4 static batches of 4 made 76.7 tok/s, of 32 made 435,
continuous batching with 64 requests 487; bf16 static 32 made 428, continuous 663. So
continuous batching beat static batches of 32 by 12% (NF4) and 55% (bf16), and static batches
are far faster than batches of 4. Batches sized from the KV budget (up to 256 rows; all 64
requests of that benchmark in one batch) were not measured there: which of sized-static and
continuous is faster on CUDA is to be confirmed with ``benchmarks/generate.py`` on a GPU,
so ``batching`` stays ``static`` by default (the path whose sampled outputs are
reproducible) and a recipe asks for ``continuous``. On a CPU static batches win: with the
benchmark's default twin (25.7 M parameters, 2 cores, 32 requests × 64 forced tokens) static
batches of 16 made about 340 tok/s in fp32 and 480 in NF4, continuous batching about 165
(its per-step scheduling costs more than such a small model's forward pass).

Config attributes read (default in brackets):

- ``name`` [``"transformers"``]: the teacher's name;
- ``path`` (required): local checkpoint folder;
- ``quantization`` [``"4bit"``]: ``4bit`` (bitsandbytes NF4, double quantization, compute
  dtype bf16 on GPU and fp32 on CPU), ``8bit`` (bitsandbytes LLM.int8), ``bf16``, ``fp16``
  or ``fp32``;
- ``quantize_vision`` [false]: also quantize a VLM's vision tower and projector with
  bitsandbytes; by default they stay in the compute dtype, which costs little memory
  (a few hundred MB for a 7B VLM) and keeps image features faithful;
- ``batching`` [``"static"``]: ``static`` or ``continuous`` (see above);
- ``batch_size`` [None: sized from the KV-cache budget on CUDA, 8 on a CPU]: rows per
  static batch (with continuous batching, for inputs with images only);
- ``window`` [static: 4 × ``batch_size``, or 512 when sized; continuous: 512]: requests per
  ``generate`` call of the stage (static) or held by the engine at once (continuous);
- ``device`` [``cuda`` if available, else ``cpu``]: where the whole model is placed;
- ``trust_remote_code`` [false]: allow the checkpoint's own Python code;
- ``chat_template_kwargs`` [``{}``]: extra variables for the chat template, e.g.
  ``{enable_thinking: true}`` for Qwen3's hybrid templates.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siqkit.teachers.backends import (
    TeacherLoadError,
    count_image_parts,
    describe,
    eos_ids,
    error_output,
    opt,
    text_only_messages,
    with_images,
)
from siqkit.teachers.base import DEFAULT_BATCH, Sampling, TeacherInput, TeacherOutput

log = logging.getLogger(__name__)

QUANTIZATIONS = ("4bit", "8bit", "bf16", "fp16", "fp32")

MAX_BATCH = 256
"""The largest static batch sized from memory."""

KV_FRACTION = 0.75
"""Share of the free GPU memory a sized static batch may plan for."""

DEFAULT_WINDOW = 512
"""Requests in the continuous-batching engine at once, and the static window when batches are sized."""

WINDOW_BATCHES = 4
"""A fixed static batch's window, in batches."""

IMAGE_TOKENS_MIN = 576
"""Fewest tokens an image is counted as when sizing batches (LLaVA's 24 × 24 grid)."""

CPU_CACHE_BYTES = 2 * 1024**3
"""Continuous batching on a CPU: the paged KV cache's budget."""

CPU_MAX_BATCH_TOKENS = 1024
"""Continuous batching on a CPU: tokens per engine step (prefill chunks and decodes together)."""


# Vision towers and projectors of the supported VLM families (regexes matched from the
# start of a module name, as transformers' bitsandbytes integration does).
VISION_MODULES = [
    r"(?:.*\.)?(?:visual|vision_tower|vision_model|multi_modal_projector|connector|vision_embed_tokens)",
    "lm_head",
]


def load_kwargs(quantization: str, device: str, keep_vision: bool = False) -> dict:
    """``from_pretrained`` keyword arguments for a quantization choice on a device.

    ``keep_vision`` leaves vision towers, projectors and the LM head unquantized.
    """
    import torch
    from transformers import BitsAndBytesConfig

    if quantization not in QUANTIZATIONS:
        raise TeacherLoadError(f"unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    on_gpu = device.startswith("cuda")
    compute = torch.bfloat16 if on_gpu else torch.float32
    skip = {"llm_int8_skip_modules": VISION_MODULES} if keep_vision else {}
    if quantization == "4bit":
        q = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            **skip,
        )
        return {"quantization_config": q, "dtype": compute}
    if quantization == "8bit":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True, **skip), "dtype": compute}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[quantization]
    return {"dtype": dtype}


# -- sizing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a text model that its KV cache and activations scale with."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int  # of the KV cache and the activations (the compute dtype)

    @classmethod
    def of(cls, config: Any, dtype_bytes: int) -> "ModelShape":
        """The shape of a (text or image-text) model config."""
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(c.num_attention_heads)
        hidden = int(c.hidden_size)
        kv = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or hidden // heads
        inter = getattr(c, "intermediate_size", None) or 4 * hidden
        return cls(int(c.num_hidden_layers), int(kv), int(head_dim), hidden, int(inter), int(c.vocab_size),
                   int(dtype_bytes))

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of one token in every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def row_bytes(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """What one row of a static batch needs: its KV cache for the whole sequence, plus the
        fp32 logits and sampling temporaries, one layer's prefill activations, the attention mask."""
        total = prompt_tokens + max_new_tokens
        kv = self.kv_bytes_per_token * total
        logits = self.vocab * (self.dtype_bytes + 16)
        prefill = prompt_tokens * (4 * self.hidden + 3 * self.intermediate) * self.dtype_bytes
        mask = prompt_tokens * total
        return kv + logits + prefill + mask


def batch_for_memory(free_bytes: int, shape: ModelShape, prompt_tokens: int, max_new_tokens: int,
                     fraction: float = KV_FRACTION, lo: int = 1, hi: int = MAX_BATCH) -> int:
    """Rows of a static batch that fit ``fraction`` of ``free_bytes``, clamped to [lo, hi].

    ``prompt_tokens`` is the batch's longest prompt; see :meth:`ModelShape.row_bytes`.
    """
    per_row = shape.row_bytes(max(0, prompt_tokens), max(0, max_new_tokens))
    rows = int(max(0, free_bytes) * fraction) // max(1, per_row)
    return max(lo, min(hi, rows))


def cpu_cache_blocks(shape: ModelShape, window: int, max_new_tokens: int, page_size: int,
                     budget_bytes: int = CPU_CACHE_BYTES) -> int:
    """Pages of the continuous-batching KV cache on a CPU (see the module docstring)."""
    one = max_new_tokens + 8192
    tokens = min(window, 64) * (max_new_tokens + 512)
    tokens = max(one, min(tokens, budget_bytes // max(1, shape.kv_bytes_per_token)))
    return math.ceil(tokens / page_size) + 1


# -- the teacher ------------------------------------------------------------------------------


class TransformersTeacher:
    """Generation with a local checkpoint; see the module docstring.

    Built with ``batching: continuous``, the object is a :class:`ContinuousTransformersTeacher`.
    """

    def __new__(cls, cfg: Any = None, *args: Any, **kwargs: Any):
        if cls is TransformersTeacher and str(opt(cfg, "batching", "static")) == "continuous":
            cls = ContinuousTransformersTeacher
        return super().__new__(cls)

    def __init__(self, cfg: Any):
        import torch
        import transformers
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        from siqkit.models.processors import load_processor  # works without torchvision

        self.name = opt(cfg, "name", "transformers")
        path = opt(cfg, "path", None)
        if path is None or not Path(path).is_dir():
            raise TeacherLoadError(
                f"teacher '{self.name}': checkpoint folder not found: {path!r} (models are never downloaded; give a local path)"
            )
        batching = str(opt(cfg, "batching", "static"))
        if batching not in ("static", "continuous"):
            raise TeacherLoadError(f"teacher '{self.name}': unknown batching {batching!r}; choose static or continuous")
        size = opt(cfg, "batch_size", None)
        self.batch_size: int | None = max(1, int(size)) if size is not None else None
        self.template_kwargs = dict(opt(cfg, "chat_template_kwargs", {}))
        self.device = str(opt(cfg, "device", "cuda" if torch.cuda.is_available() else "cpu"))
        self.on_cuda = torch.device(self.device).type == "cuda"
        # None: sized from the KV-cache budget per batch on CUDA; the CPU default elsewhere.
        self._fixed_batch = self.batch_size or (None if self.on_cuda else DEFAULT_BATCH)
        window = opt(cfg, "window", None)
        if window is not None:
            self.window = max(1, int(window))
        else:
            self.window = WINDOW_BATCHES * self._fixed_batch if self._fixed_batch else DEFAULT_WINDOW
        quant = str(opt(cfg, "quantization", "4bit"))
        remote = bool(opt(cfg, "trust_remote_code", False))
        quantize_vision = bool(opt(cfg, "quantize_vision", False))
        common = {"trust_remote_code": remote, "local_files_only": True}
        try:
            config = AutoConfig.from_pretrained(path, **common)
            self.vision = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
            keep_vision = self.vision and not quantize_vision
            auto_model = transformers.AutoModelForImageTextToText if self.vision else transformers.AutoModelForCausalLM
            if self.vision:
                self.processor = load_processor(path, **common)
                self.tokenizer = self.processor.tokenizer
            else:
                self.processor = None
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, **common)
            self.model = auto_model.from_pretrained(
                path, device_map={"": self.device}, **load_kwargs(quant, self.device, keep_vision), **common
            ).eval()
        except TeacherLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - report what failed to load, and where
            raise TeacherLoadError(f"teacher '{self.name}': cannot load {path}: {describe(exc)}") from exc
        self.tokenizer.padding_side = "left"
        self.eos_ids = eos_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)
        if not self.eos_ids:
            raise TeacherLoadError(f"teacher '{self.name}': the checkpoint defines no end-of-sequence token")
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self.shape = ModelShape.of(self.model.config, torch.empty((), dtype=self.model.dtype).element_size())
        self._logged_sizes: set[int] = set()

    # -- static batches -----------------------------------------------------------------------

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        return self._generate_static(batch)

    def _generate_static(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        results: list[TeacherOutput | None] = [None] * len(batch)
        groups: dict[tuple, list[tuple[int, list[dict], int]]] = {}
        for i, inp in enumerate(batch):
            try:
                conv = self._conversation(inp)
            except Exception as exc:  # noqa: BLE001 - a bad input becomes an error output
                results[i] = error_output(inp, f"cannot build the prompt: {describe(exc)}")
                continue
            groups.setdefault((inp.sampling, bool(inp.images)), []).append((i, conv, self._prompt_length(inp, conv)))
        for (sampling, _), members in groups.items():
            members.sort(key=lambda m: m[2])  # similar lengths together waste less on padding
            start = 0
            while start < len(members):
                size = self._batch_rows(sampling, [m[2] for m in members], start)
                chunk = members[start : start + size]
                for (i, _, _), out in zip(chunk, self._run_items([(batch[i], conv) for i, conv, _ in chunk], sampling)):
                    results[i] = out
                start += size
        return results  # type: ignore[return-value]

    def _batch_rows(self, sampling: Sampling, lengths: list[int], start: int) -> int:
        """Rows of the batch starting at ``start`` of a group sorted by prompt length."""
        if self._fixed_batch:
            return self._fixed_batch
        free = self._free_gpu_bytes()
        first = batch_for_memory(free, self.shape, lengths[start], sampling.max_new_tokens)
        # The longest prompt of the batch that size would make; a batch sized for it is no longer.
        longest = lengths[min(start + first, len(lengths)) - 1]
        size = batch_for_memory(free, self.shape, longest, sampling.max_new_tokens)
        if size not in self._logged_sizes:
            self._logged_sizes.add(size)
            log.info("teacher %s: static batch of %d rows (%.1f GiB free, prompts up to %d tokens + %d new)",
                     self.name, size, free / 1024**3, longest, sampling.max_new_tokens)
        return size

    def _free_gpu_bytes(self) -> int:
        import torch

        device = self.model.device
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))

    def _prompt_length(self, inp: TeacherInput, conv: list[dict]) -> int:
        """The prompt's length in tokens (images estimated), for sorting and sizing."""
        try:
            if not self.vision:
                return int(self._encode([conv])["input_ids"].shape[1])
            text = self.processor.apply_chat_template(
                [conv], add_generation_prompt=True, tokenize=False, **self.template_kwargs
            )
            text = text[0] if isinstance(text, list) else text
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        except Exception:  # noqa: BLE001 - only an estimate; a real failure shows when the batch runs
            n = len(inp.question) // 3 + 64
        return n + sum(max(IMAGE_TOKENS_MIN, im.width * im.height // 784) for im in inp.images)

    def _run_items(self, items: list[tuple[TeacherInput, list[dict]]], sampling: Sampling) -> list[TeacherOutput]:
        """Outputs of one batch; a failed batch is retried in halves, down to single inputs."""
        try:
            return self._generate(items, sampling)
        except Exception as exc:  # noqa: BLE001 - isolate the failure
            message = describe(exc)
        _free_memory()
        if len(items) == 1:
            return [error_output(items[0][0], f"generation failed: {message}")]
        log.warning("teacher %s: batch of %d failed (%s); retrying in halves", self.name, len(items), message)
        half = len(items) // 2
        return self._run_items(items[:half], sampling) + self._run_items(items[half:], sampling)

    def _conversation(self, inp: TeacherInput) -> list[dict]:
        if not self.vision:
            return text_only_messages(inp)
        return with_images(inp, lambda im: {"type": "image", "image": im.convert("RGB")}, text_parts=True)

    def _encode(self, conversations: list[list[dict]]):
        if self.vision:
            return self.processor.apply_chat_template(
                conversations,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True, "padding_side": "left"},
                **self.template_kwargs,
            )
        texts = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=False, **self.template_kwargs
        )
        # The template already wrote any BOS; adding special tokens again would double it.
        return self.tokenizer(texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")

    def _generate(self, items: list[tuple[TeacherInput, list[dict]]], sampling: Sampling) -> list[TeacherOutput]:
        import torch

        enc = self._encode([conv for _, conv in items]).to(self.model.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": self.pad_id,
            "eos_token_id": list(self.eos_ids),
        }
        if sampling.min_new_tokens > 0:
            kwargs["min_new_tokens"] = sampling.min_new_tokens
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            torch.manual_seed(sampling.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        prompt_counts = enc["attention_mask"].sum(dim=1).tolist()
        return [
            self._output(inp, seqs[row, prompt_len:].tolist(), int(prompt_counts[row]), sampling.max_new_tokens)
            for row, (inp, _) in enumerate(items)
        ]

    def _output(self, inp: TeacherInput, new: list[int], prompt_tokens: int, max_new_tokens: int) -> TeacherOutput:
        """The output for generated token ids (padding and anything after the first EOS dropped)."""
        end = next((j for j, t in enumerate(new) if t in self.eos_ids), None)
        if end is None:
            kept, used = new, len(new)
            finish = "length" if len(new) >= max_new_tokens else "stop"
        else:
            kept, used, finish = new[:end], end + 1, "stop"
        return TeacherOutput(
            key=inp.key,
            text=self.tokenizer.decode(kept, skip_special_tokens=False),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=used,
        )

    def close(self) -> None:
        self.model = None
        _free_memory()


# -- continuous batching ------------------------------------------------------------------------


class ContinuousTransformersTeacher(TransformersTeacher):
    """``batching: continuous``: transformers' paged engine; see the module docstring."""

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if not hasattr(self.model, "init_continuous_batching"):
            import transformers

            raise TeacherLoadError(
                f"teacher '{self.name}': transformers {transformers.__version__} has no continuous batching "
                "(model.init_continuous_batching); use batching: static"
            )
        self.window = max(1, int(opt(cfg, "window", DEFAULT_WINDOW)))
        self._image_window = self.window  # inputs with images collected for one static call

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        results: list[TeacherOutput | None] = [None] * len(batch)
        for pos, out in self._stream(batch):
            results[pos] = out
        return results  # type: ignore[return-value]

    def stream(self, inputs: Iterable[TeacherInput]) -> Iterator[TeacherOutput]:
        """Outputs in the order they finish; at most ``window`` requests in the engine at once."""
        for _, out in self._stream(inputs):
            yield out

    def _stream(self, inputs: Iterable[TeacherInput]) -> Iterator[tuple[int, TeacherOutput]]:
        """(input position, output) pairs, as the outputs finish."""
        session: _Engine | None = None
        images: list[tuple[int, TeacherInput]] = []
        try:
            for pos, inp in enumerate(inputs):
                if self.vision and (inp.images or count_image_parts(inp.messages)):
                    images.append((pos, inp))
                    if len(images) >= self._image_window:
                        if session is not None:
                            yield from session.finish()
                            session = None
                        yield from self._static_pairs(images)
                        images = []
                    continue
                try:
                    ids = self._encode([self._conversation(inp)])["input_ids"][0].tolist()
                except Exception as exc:  # noqa: BLE001 - a bad input becomes an error output
                    yield pos, error_output(inp, f"cannot build the prompt: {describe(exc)}")
                    continue
                key = _engine_key(inp.sampling)
                if session is not None and (session.key != key or session.dead):
                    yield from session.finish()
                    session = None
                if session is None:
                    try:
                        session = _Engine(self, key, inp.sampling)
                    except Exception as exc:  # noqa: BLE001 - this input fails; the next tries again
                        log.warning("teacher %s: cannot start continuous batching: %s", self.name, describe(exc))
                        _free_memory()
                        yield pos, error_output(inp, f"cannot start continuous batching: {describe(exc)}")
                        continue
                yield from session.add(pos, inp, ids)
            if session is not None:
                yield from session.finish()
                session = None
            if images:
                yield from self._static_pairs(images)
        finally:
            if session is not None:  # the consumer stopped early, or something raised
                session.abort()

    def _static_pairs(self, items: list[tuple[int, TeacherInput]]) -> Iterator[tuple[int, TeacherOutput]]:
        outs = self._generate_static([inp for _, inp in items])
        yield from ((pos, out) for (pos, _), out in zip(items, outs))

    def _start_engine(self, sampling: Sampling, forced: bool):
        """A started continuous-batching manager for these sampling settings."""
        from transformers import ContinuousBatchingConfig

        gen = copy.deepcopy(self.model.generation_config)
        if sampling.temperature > 0:
            gen.do_sample, gen.temperature, gen.top_p = True, float(sampling.temperature), float(sampling.top_p)
        else:
            gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
        gen.max_new_tokens = sampling.max_new_tokens
        gen.eos_token_id = list(self.eos_ids)
        gen.pad_token_id = self.pad_id
        cb: dict[str, Any] = {"seed": int(sampling.seed), "max_requests_per_batch": min(self.window, 1024)}
        if not self.on_cuda:  # its default would take 60% of the machine's RAM for the cache
            page = 256
            cb.update(page_size=page, max_batch_tokens=CPU_MAX_BATCH_TOKENS,
                      num_blocks=cpu_cache_blocks(self.shape, self.window, sampling.max_new_tokens, page))
        # Not under inference_mode: the engine's thread updates the tensors made here in place,
        # and transformers before 5.2x refuses that for inference tensors.
        manager = self.model.init_continuous_batching(
            generation_config=gen, continuous_batching_config=ContinuousBatchingConfig(**cb)
        )
        try:
            if forced:
                _add_min_new_tokens(manager, self.eos_ids, self.model.device)
            manager.warmup()  # captures CUDA graphs where the engine uses them; else nothing
            manager.start()
        except BaseException:
            _stop(manager, hard=True)
            raise
        return manager


def _engine_key(s: Sampling) -> tuple:
    """Requests with the same key can share one engine (see the module docstring)."""
    forced = s.min_new_tokens > 0
    if s.temperature > 0:
        return ("sample", float(s.temperature), float(s.top_p), forced)
    return ("greedy", forced)


class _Engine:
    """One running continuous-batching manager and the requests it holds."""

    def __init__(self, teacher: ContinuousTransformersTeacher, key: tuple, sampling: Sampling):
        self.teacher, self.key, self.forced = teacher, key, key[-1]
        self.pending: dict[str, tuple[int, TeacherInput, int]] = {}  # request id -> (position, input, prompt tokens)
        self.dead = False
        self.manager = teacher._start_engine(sampling, self.forced)

    def add(self, pos: int, inp: TeacherInput, ids: list[int]) -> Iterator[tuple[int, TeacherOutput]]:
        """Add one request, first waiting for room in the window; yields what finished meanwhile."""
        while len(self.pending) >= self.teacher.window and not self.dead:
            yield from self._collect(block=True)
        if self.dead:
            yield pos, error_output(inp, "the continuous batching engine stopped")
            return
        extra = {"min_new_tokens": int(inp.sampling.min_new_tokens)} if self.forced else {}
        rid = f"r{pos}"
        try:
            added = self.manager.add_request(
                ids, request_id=rid, max_new_tokens=inp.sampling.max_new_tokens,
                eos_token_id=list(self.teacher.eos_ids), **extra,
            )
            problem = None if added is not None else "the engine did not accept the request"
        except Exception as exc:  # noqa: BLE001 - one refused request is one error output
            problem = describe(exc)
        if problem is not None:
            yield pos, error_output(inp, f"generation failed: {problem}")
            return
        self.pending[rid] = (pos, inp, len(ids))
        yield from self._collect(block=False)

    def finish(self) -> Iterator[tuple[int, TeacherOutput]]:
        """Wait for every request held, then stop the engine."""
        try:
            while self.pending:
                yield from self._collect(block=True)
        finally:
            self.close(hard=bool(self.pending))

    def abort(self) -> None:
        self.close(hard=True)

    def close(self, hard: bool = False) -> None:
        manager, self.manager = self.manager, None
        if manager is not None:
            _stop(manager, hard=hard)
            _free_memory()
        self.dead = True

    def _collect(self, block: bool) -> Iterator[tuple[int, TeacherOutput]]:
        """The finished results waiting; with ``block``, wait until there is at least one."""
        from transformers.generation.continuous_batching import RequestStatus

        manager = self.manager
        while self.pending:
            result = manager.get_result(timeout=0.2 if block else 0)
            if result is None:
                if manager.is_running():
                    if block:
                        continue
                    return
                # The engine stopped: take what it delivered before; the rest is lost.
                while self.pending and (result := manager.get_result(timeout=0)) is not None:
                    yield from self._take(result, RequestStatus.FINISHED)
                yield from self._fail_pending(manager)
                return
            yield from self._take(result, RequestStatus.FINISHED)
            block = False  # one is enough; take the rest that are ready

    def _take(self, result, finished) -> Iterator[tuple[int, TeacherOutput]]:
        """The output of one engine result, if it is a finished request of ours."""
        held = self.pending.pop(result.request_id, None) if result.is_finished() else None
        if held is None:
            return
        pos, inp, n_prompt = held
        if result.error is not None or result.status != finished:
            yield pos, error_output(inp, f"generation failed: {result.error or result.status.name}")
        else:
            yield pos, self.teacher._output(inp, list(result.generated_tokens), n_prompt,
                                            inp.sampling.max_new_tokens)

    def _fail_pending(self, manager) -> Iterator[tuple[int, TeacherOutput]]:
        self.dead = True
        if not self.pending:
            return
        error = getattr(getattr(manager, "background_thread_status", None), "fatal_error", None)
        message = f"the continuous batching engine stopped: {describe(error) if error else 'no error given'}"
        log.warning("teacher %s: %s; %d request(s) lost", self.teacher.name, message, len(self.pending))
        pending, self.pending = self.pending, {}
        for pos, inp, _ in pending.values():
            yield pos, error_output(inp, message)


def _stop(manager, hard: bool) -> None:
    """Stop a manager's thread and free what it holds; never raises."""
    try:
        manager.stop(block=True, hard_stop=hard)
    except Exception as exc:  # noqa: BLE001
        log.warning("continuous batching: stop failed: %s", describe(exc))
    try:
        manager.destroy()
    except Exception as exc:  # noqa: BLE001
        log.warning("continuous batching: destroy failed: %s", describe(exc))


def _add_min_new_tokens(manager, eos: list[int], device) -> None:
    """Give a manager a per-request ``min_new_tokens`` (EOS forbidden until that many tokens).

    transformers' own min-length processors are not supported in continuous batching, so this
    adds a processor of the engine's per-request kind to its list before the engine starts.
    """
    import torch
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessor,
    )

    class MinNewTokens(ContinuousBatchingLogitsProcessor):
        supported_kwargs = {"min_new_tokens": int}
        ignored_kwargs = ()

        def __init__(self) -> None:
            self.eos = torch.tensor(eos, dtype=torch.long, device=device)

        def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
            int32_tensor.fill_(0)

        def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
            flags = [
                int(r.state.generated_len() < int(r.state.logit_processor_kwargs.get("min_new_tokens", 0)))
                for r in requests_with_new_token
            ]
            return torch.tensor(flags, dtype=torch.int32, device="cpu")

        def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
            block = tensor_arg[: scores.size(0)].bool().unsqueeze(-1)  # [B, 1]
            eos_scores = scores.index_select(-1, self.eos).masked_fill(block, float("-inf"))
            return scores.index_copy(-1, self.eos, eos_scores)

    processors = manager.logit_processor
    processors.logits_processor.append(MinNewTokens())
    processors.tensors_required += 1
    processors.supported_keys.update(MinNewTokens.supported_kwargs)
    processors.do_processing = True


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
