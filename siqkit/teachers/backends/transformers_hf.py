"""A teacher that is a local Hugging Face checkpoint (``backend: transformers``).

Vision-language checkpoints (a ``model_type`` that ``AutoModelForImageTextToText`` knows)
load with that class and their processor (``AutoProcessor``, or an image-only build of it
when torchvision is missing); text-only ones with ``AutoModelForCausalLM`` and
``AutoTokenizer``. Prompts are rendered with the checkpoint's own chat template. Nothing is
downloaded: the path must be a local folder.

Inputs are grouped by sampling settings (and, for VLMs, by whether they carry images),
sorted by prompt length, and generated in batches of ``batch_size`` with LEFT padding, so
that every row's prompt ends where generation starts: greedy decoding (temperature 0) gives
the same text batched as one at a time, up to kernel rounding (bitsandbytes decodes a single
row with another kernel than a batch, so near-tied logits can drift apart late in long
outputs). The output text is the completion only, cut at the
first end-of-sequence token and decoded with special tokens kept (so ``<think>`` tags
survive); ``finish_reason`` is ``length`` when ``max_new_tokens`` tokens came without an
EOS. ``prompt_tokens`` counts the row's unpadded prompt (image tokens included),
``completion_tokens`` the generated tokens up to and including the EOS. When a batch fails
(out of memory, say), its inputs are retried one at a time; an input that still fails
becomes an error output.

Config attributes read (default in brackets):

- ``name`` [``"transformers"``]: the teacher's name;
- ``path`` (required): local checkpoint folder;
- ``quantization`` [``"4bit"``]: ``4bit`` (bitsandbytes NF4, double quantization, compute
  dtype bf16 on GPU and fp32 on CPU), ``8bit`` (bitsandbytes LLM.int8), ``bf16``, ``fp16``
  or ``fp32``;
- ``quantize_vision`` [false]: also quantize a VLM's vision tower and projector with
  bitsandbytes; by default they stay in the compute dtype, which costs little memory
  (a few hundred MB for a 7B VLM) and keeps image features faithful;
- ``batch_size`` [8]: prompts per ``generate`` call;
- ``device`` [``cuda`` if available, else ``cpu``]: where the whole model is placed;
- ``trust_remote_code`` [false]: allow the checkpoint's own Python code;
- ``chat_template_kwargs`` [``{}``]: extra variables for the chat template, e.g.
  ``{enable_thinking: true}`` for Qwen3's hybrid templates.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from siqkit.teachers.backends import (
    TeacherLoadError,
    check_images,
    describe,
    error_output,
    opt,
    text_only_messages,
)
from siqkit.teachers.base import Sampling, TeacherInput, TeacherOutput

log = logging.getLogger(__name__)

QUANTIZATIONS = ("4bit", "8bit", "bf16", "fp16", "fp32")


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


class TransformersTeacher:
    """Batched generation with a local checkpoint; see the module docstring."""

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
        self.batch_size = max(1, int(opt(cfg, "batch_size", 8)))
        self.template_kwargs = dict(opt(cfg, "chat_template_kwargs", {}))
        self.device = str(opt(cfg, "device", "cuda" if torch.cuda.is_available() else "cpu"))
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
        self.eos_ids = _eos_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)
        if not self.eos_ids:
            raise TeacherLoadError(f"teacher '{self.name}': the checkpoint defines no end-of-sequence token")
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    # -- generation ---------------------------------------------------------------------------

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        results: list[TeacherOutput | None] = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, inp in enumerate(batch):
            groups.setdefault((inp.sampling, bool(inp.images)), []).append(i)
        for (sampling, _), idx in groups.items():
            # Similar lengths together waste less compute on padding.
            idx.sort(key=lambda i: len(batch[i].question) + 1000 * len(batch[i].images))
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                for i, out in zip(chunk, self._run_chunk([batch[i] for i in chunk], sampling)):
                    results[i] = out
        return results  # type: ignore[return-value]

    def _run_chunk(self, chunk: list[TeacherInput], sampling: Sampling) -> list[TeacherOutput]:
        outputs: list[TeacherOutput | None] = [None] * len(chunk)
        ready: list[tuple[int, list[dict]]] = []
        for pos, inp in enumerate(chunk):
            try:
                ready.append((pos, self._conversation(inp)))
            except Exception as exc:  # noqa: BLE001 - a bad input becomes an error output
                outputs[pos] = error_output(inp, f"cannot build the prompt: {describe(exc)}")
        if ready:
            try:
                done = self._generate([(chunk[pos], conv) for pos, conv in ready], sampling)
                for (pos, _), out in zip(ready, done):
                    outputs[pos] = out
            except Exception as exc:  # noqa: BLE001 - retry one by one to isolate the failure
                if len(ready) > 1:
                    log.warning("teacher %s: batch of %d failed (%s); retrying one at a time", self.name, len(ready), describe(exc))
                for pos, conv in ready:
                    try:
                        outputs[pos] = self._generate([(chunk[pos], conv)], sampling)[0]
                    except Exception as one_exc:  # noqa: BLE001
                        outputs[pos] = error_output(chunk[pos], f"generation failed: {describe(one_exc)}")
                    finally:
                        _free_memory()
        return outputs  # type: ignore[return-value]

    def _conversation(self, inp: TeacherInput) -> list[dict]:
        if not self.vision:
            return text_only_messages(inp)
        check_images(inp)
        images = iter(inp.images)
        conv = []
        for m in inp.messages:
            content = m.get("content")
            if isinstance(content, str) or content is None:
                parts = [{"type": "text", "text": content or ""}]
            else:
                parts = [
                    {"type": "image", "image": next(images).convert("RGB")} if p.get("type") == "image" else p
                    for p in content
                ]
            conv.append({**m, "content": parts})
        return conv

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
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": self.pad_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            torch.manual_seed(sampling.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        prompt_counts = enc["attention_mask"].sum(dim=1).tolist()
        outputs = []
        for row, (inp, _) in enumerate(items):
            new = seqs[row, prompt_len:].tolist()
            end = next((j for j, t in enumerate(new) if t in self.eos_ids), None)
            if end is None:
                kept, used = new, len(new)
                finish = "length" if len(new) >= sampling.max_new_tokens else "stop"
            else:
                kept, used, finish = new[:end], end + 1, "stop"
            outputs.append(
                TeacherOutput(
                    key=inp.key,
                    text=self.tokenizer.decode(kept, skip_special_tokens=False),
                    finish_reason=finish,
                    prompt_tokens=int(prompt_counts[row]),
                    completion_tokens=used,
                )
            )
        return outputs

    def close(self) -> None:
        self.model = None
        _free_memory()


def _eos_ids(*values: Any) -> list[int]:
    ids: list[int] = []
    for v in values:
        for t in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(t, int) and t not in ids:
                ids.append(t)
    return ids


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
