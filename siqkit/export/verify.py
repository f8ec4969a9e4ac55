"""Check an exported GGUF against the Hugging Face model it came from, in llama-cpp-python.

The same prompts (and, with an mmproj, the same images) go through both runtimes:

- **greedy agreement**: each runtime continues each prompt greedily for ``n_greedy`` tokens;
  we count how many leading tokens agree. A split where the Hugging Face model's top two
  logits are within ``tie_tol`` logit standard deviations is a near-tie that any rounding can
  flip; it is reported as *excused* rather than as a mismatch. ``greedy_lead_min`` is the
  smallest Hugging Face top-1 lead met along the greedy paths (in logit stds).
- **top-1 agreement**: both runtimes score the same token sequence (prompt + the Hugging Face
  continuation); the share of positions whose arg-max agrees, over all positions and over
  the *decisive* ones (where the Hugging Face lead exceeds ``tie_tol``).
- **logit error**: the largest and the mean absolute logit difference, also relative to the
  Hugging Face logits' standard deviation.
- **image** (with an mmproj): the next-token logits after an image prompt, their top-1 and
  error, and a greedy continuation.

A file passes when its decisive top-1 agreement reaches the threshold of its quant type
(:data:`TOP1_THRESHOLDS`), its greedy agreement reaches :data:`GREEDY_THRESHOLDS` (a quantized
file that scores the reference's tokens well but wanders off on its own greedy path will
answer differently), f32/f16 files also follow every greedy path to the end (near-ties
excused, image prompts included), and the image next-token logits stay within
:data:`IMAGE_LOGIT_TOL` of a logit standard deviation with the same top-1. What a file
costs in answers is measured apart, on held-out questions (the export stage's
``max_accuracy_drop``). The summary is
saved beside the file as ``<file>.verify.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import gguf
import numpy as np
import torch
from PIL import Image, ImageDraw

from siqkit.errors import SiqkitError
from siqkit.export.runtime import VisionContext, eval_logits, greedy, open_llama

DEFAULT_PROMPTS = (
    "The red circle is left of the blue square. What colour is the circle?",
    "What is 12 + 30? Think step by step.",
    "Our robot counts the numbers, then explains every step.",
)
IMAGE_QUESTION = "What colour is the circle?"

TOP1_THRESHOLDS = {"f32": 0.99, "f16": 0.99, "bf16": 0.98, "q8_0": 0.99, "q6_k": 0.95, "q5_k_m": 0.92, "q4_k_m": 0.90}
"""Decisive top-1 agreement each quant type must reach (q4_k_m: the acceptance bar of 0.90)."""

GREEDY_THRESHOLDS = {"bf16": 0.90, "q8_0": 0.90, "q6_k": 0.75, "q5_k_m": 0.70, "q4_k_m": 0.60}
"""Greedy agreement (the share of greedy tokens, over the reference prompts, before the first
divergence; a path that parts at a near-tie counts as followed) each quantized type must reach. f32/f16 must follow every greedy path exactly
(near-ties excused) instead. A judgment, not a law: 8-bit keeps nearly every path; a 4-bit
file that keeps less than 60% of them changes most answers longer than a word."""

IMAGE_LOGIT_TOL = 0.05
"""Largest image next-token logit error allowed, in Hugging Face logit standard deviations.

Measured on tiny Qwen-VL twins (f16 text model, f16 mmproj): about 0.002-0.01 of a std.
"""

TIE_TOL = 0.02
"""A Hugging Face top-1 lead below this many logit stds counts as a near-tie."""

FILE_TYPE_NAMES = {0: "f32", 1: "f16", 32: "bf16", 7: "q8_0", 15: "q4_k_m", 17: "q5_k_m", 18: "q6_k"}
_IMAGE_PLACEHOLDERS = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}


class VerifyError(SiqkitError, RuntimeError):
    """The exported file does not reproduce the Hugging Face model."""


def quant_of(path: str | Path) -> str:
    """The quant name of a GGUF file from its ``general.file_type`` ("f16", "q4_k_m", ...)."""
    field_ = gguf.GGUFReader(path).fields.get("general.file_type")
    if field_ is None:
        return "unknown"
    return FILE_TYPE_NAMES.get(int(field_.contents()), f"file_type_{int(field_.contents())}")


def summary_path(path: str | Path) -> Path:
    """Where :func:`verify_gguf` saves its summary for ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".verify.json")


def default_image(hf_dir: str | Path) -> Image.Image:
    """A red circle left of a blue square, sized so neither runtime resizes it (8 visual tokens)."""
    from siqkit.export.mmproj import _processor_settings, pixel_limits

    proc = _processor_settings(Path(hf_dir))
    cfg = json.loads((Path(hf_dir) / "config.json").read_text())
    vc = cfg.get("vision_config") or {}
    factor = int(proc.get("patch_size") or vc.get("patch_size", 14)) * int(proc.get("merge_size", 2))
    lo, hi = pixel_limits(proc)
    gh, gw = 2, 4  # llama.cpp asks Qwen-VL images for at least 8 visual tokens by default
    while gh * gw * factor * factor < lo:
        gh, gw = gh + 1, gw + 2
    if gh * gw * factor * factor > hi:
        gh, gw = 1, max(1, hi // (factor * factor))
    h, w = gh * factor, gw * factor
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.ellipse([w * 0.05, h * 0.1, w * 0.45, h * 0.9], fill=(220, 30, 30))
    draw.rectangle([w * 0.55, h * 0.2, w * 0.95, h * 0.8], fill=(30, 60, 220))
    return img


@dataclass
class _Case:
    """One prompt through the Hugging Face model: its ids, greedy path, and logits."""

    prompt_ids: list[int]
    greedy: list[int]
    logits: np.ndarray  # rows: positions of prompt + greedy[:-1] (text) or the continuation (image)
    lead: np.ndarray  # per greedy step: top-1 lead over the runner-up, in logit stds
    text: str = ""
    image: Image.Image | None = None
    extra: dict = field(default_factory=dict)


class HFReference:
    """The Hugging Face side of a check, loaded once and reused for every quant type."""

    def __init__(self, hf_dir: str | Path, *, n_greedy: int = 32, dtype: torch.dtype = torch.float32):
        from transformers import AutoTokenizer

        from siqkit.models.twins import is_vision, load_tiny

        self.dir = Path(hf_dir)
        cfg = json.loads((self.dir / "config.json").read_text())
        self.model_type = cfg.get("model_type")
        self.vision = is_vision(self.model_type)
        self.n_greedy = n_greedy
        self.model = load_tiny(self.dir, dtype=dtype).eval()
        self.tok = AutoTokenizer.from_pretrained(self.dir, trust_remote_code=False, local_files_only=True)
        self._processor = None
        self._cases: dict[tuple, _Case] = {}

    @property
    def processor(self):
        if self._processor is None:
            from siqkit.models import load_processor

            self._processor = load_processor(self.dir, trust_remote_code=False, local_files_only=True)
        return self._processor

    def _generate(self, inputs: dict) -> tuple[list[int], np.ndarray]:
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.n_greedy, do_sample=False, num_beams=1,
                                      repetition_penalty=1.0, eos_token_id=None, pad_token_id=pad,
                                      output_logits=True, return_dict_in_generate=True)
        n = inputs["input_ids"].shape[1]
        scores = torch.stack(out.logits)[:, 0].float()
        top2 = scores.topk(2, dim=-1).values
        lead = ((top2[:, 0] - top2[:, 1]) / scores.std(-1)).numpy()
        return out.sequences[0, n:].tolist(), lead

    def chat_text(self, prompt: str, chat: bool = True) -> str:
        if chat and getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
        return prompt

    def text_case(self, prompt: str, chat: bool = True) -> _Case:
        key = ("text", prompt, chat)
        if key not in self._cases:
            text = self.chat_text(prompt, chat)
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            if getattr(self.tok, "add_bos_token", False) and self.tok.bos_token_id is not None:
                ids = [self.tok.bos_token_id] + ids
            tokens, lead = self._generate({"input_ids": torch.tensor([ids])})
            full = ids + tokens[:-1]
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([full])).logits[0].float().numpy()
            self._cases[key] = _Case(ids, tokens, logits, lead, text=text)
        return self._cases[key]

    def image_case(self, prompt: str, image: Image.Image) -> _Case:
        key = ("image", prompt, image.tobytes(), image.size)
        if key not in self._cases:
            if self.model_type not in _IMAGE_PLACEHOLDERS:
                raise VerifyError(f"image checks support {', '.join(_IMAGE_PLACEHOLDERS)}, not {self.model_type}")
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            inputs = dict(self.processor(text=[text], images=[image], return_tensors="pt"))
            inputs.pop("token_type_ids", None)
            tokens, lead = self._generate(inputs)
            ids = inputs["input_ids"][0].tolist()
            full = torch.tensor([ids + tokens[:-1]])
            fwd = {}
            for k, v in inputs.items():  # per-token inputs (attention mask, token types) grow with the text
                if k != "input_ids" and v.dim() == 2 and v.shape == inputs["input_ids"].shape:
                    pad = torch.full((1, len(tokens) - 1), 1 if k == "attention_mask" else 0, dtype=v.dtype)
                    v = torch.cat([v, pad], dim=1)
                if k != "input_ids":
                    fwd[k] = v
            with torch.no_grad():
                logits = self.model(input_ids=full, **fwd).logits[0, len(ids) - 1:].float().numpy()
            self._cases[key] = _Case(ids, tokens, logits, lead, text=text, image=image,
                                     extra={"placeholder": _IMAGE_PLACEHOLDERS[self.model_type]})
        return self._cases[key]


def _prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _compare(ref: np.ndarray, got: np.ndarray) -> dict:
    std = float(ref.std())
    top2 = np.sort(ref, -1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) >= TIE_TOL * ref.std(-1)
    agree = ref.argmax(-1) == got.argmax(-1)
    diff = np.abs(got - ref)
    return {
        "positions": int(len(ref)),
        "top1": float(agree.mean()),
        "top1_decisive": float(agree[decisive].mean()) if decisive.any() else 1.0,
        "decisive_positions": int(decisive.sum()),
        "logit_max_abs": float(diff.max()),
        "logit_mean_abs": float(diff.mean()),
        "logit_err_rel": float(diff.max() / std) if std else 0.0,
    }


def _greedy_stats(cases: list[_Case], paths: list[list[int]], n: int) -> dict:
    prefixes = [_prefix(c.greedy, p) for c, p in zip(cases, paths)]
    excused = sum(1 for c, k in zip(cases, prefixes) if k < n and c.lead[k] < TIE_TOL)
    mismatched = sum(1 for k in prefixes if k < n) - excused
    # A path that parts at a near-tie of the Hugging Face model counts as followed to the end.
    decisive = [n if k < n and c.lead[k] < TIE_TOL else k for c, k in zip(cases, prefixes)]
    return {
        "greedy_tokens": n,
        "greedy_exact": float(np.mean([k >= n for k in prefixes])),
        "greedy_prefix_min": int(min(prefixes)),
        "greedy_prefix_mean": float(np.mean(prefixes)),
        "greedy_agreement": float(np.mean(prefixes) / n),
        "greedy_agreement_decisive": float(np.mean(decisive) / n),
        "greedy_excused": int(excused),
        "greedy_mismatched": int(mismatched),
        "greedy_lead_min": min((float(c.lead[:n].min()) for c in cases if len(c.lead[:n])), default=None),
    }


def _merge(parts: list[dict]) -> dict:
    total = sum(p["positions"] for p in parts)
    out = {"positions": total}
    for k in ("top1", "top1_decisive"):
        out[k] = float(sum(p[k] * p["positions"] for p in parts) / total)
    out["decisive_positions"] = sum(p["decisive_positions"] for p in parts)
    out["logit_max_abs"] = max(p["logit_max_abs"] for p in parts)
    out["logit_mean_abs"] = float(sum(p["logit_mean_abs"] * p["positions"] for p in parts) / total)
    out["logit_err_rel"] = max(p["logit_err_rel"] for p in parts)
    return out


def _check_text(llm, ref: HFReference, prompts, chat: bool) -> dict:
    cases = [ref.text_case(p, chat) for p in prompts]
    parts, paths = [], []
    for case in cases:
        full = case.prompt_ids + case.greedy[:-1]
        got = eval_logits(llm, full)
        parts.append(_compare(case.logits, got))
        start = eval_logits(llm, case.prompt_ids)[-1]
        paths.append(greedy(llm, ref.n_greedy, start)[0])
    return {"prompts": len(cases), **_merge(parts), **_greedy_stats(cases, paths, ref.n_greedy)}


def _check_images(llm, ref: HFReference, mmproj: Path, images, question: str) -> dict:
    cases = [ref.image_case(question, im) for im in images]
    parts, paths, errors = [], [], []
    with VisionContext(llm, mmproj) as vision:
        for case in cases:
            text = case.text.replace(case.extra["placeholder"], vision.marker)
            n_prompt, last = vision.eval_prompt(text, [case.image])
            if n_prompt != len(case.prompt_ids):
                errors.append(f"image prompt is {n_prompt} tokens in llama.cpp, {len(case.prompt_ids)} in transformers")
            rows = [last]
            for tok in case.greedy[:-1]:
                llm.eval([tok])
                rows.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32))
            cmp = _compare(case.logits, np.stack(rows))
            nxt = _compare(case.logits[:1], last[None])
            cmp.update({"next_top1": bool(nxt["top1"] == 1.0), "next_logit_err_rel": nxt["logit_err_rel"],
                        "next_decisive": bool(nxt["decisive_positions"] == 1)})
            parts.append(cmp)
            vision.eval_prompt(text, [case.image])
            paths.append(greedy(llm, ref.n_greedy, last)[0])
    merged = _merge(parts)
    merged.update({
        "images": len(cases),
        "next_top1": float(np.mean([p["next_top1"] for p in parts])),
        "next_logit_err_rel": max(p["next_logit_err_rel"] for p in parts),
        "next_all_decisive": all(p["next_decisive"] for p in parts),
        "prompt_errors": errors,
    })
    return {**merged, **_greedy_stats(cases, paths, ref.n_greedy)}


def _verdict(quant: str, text: dict, image: dict | None) -> list[str]:
    failures = []
    need = TOP1_THRESHOLDS.get(quant, 0.90)
    if text["top1_decisive"] < need:
        failures.append(f"text top-1 agreement {text['top1_decisive']:.3f} < {need} for {quant}")
    greedy_need = GREEDY_THRESHOLDS.get(quant)
    if greedy_need is not None and text["greedy_agreement_decisive"] < greedy_need:
        failures.append(f"greedy agreement {text['greedy_agreement_decisive']:.2f} < {greedy_need} for {quant} "
                        "(paths parting at a near-tie excused)")
    if quant in ("f32", "f16") and text["greedy_mismatched"]:
        failures.append(f"greedy continuation differs for {text['greedy_mismatched']} prompt(s) at a decisive "
                        f"step (first {text['greedy_prefix_min']} of {text['greedy_tokens']} tokens agree)")
    if image is not None:
        failures.extend(image["prompt_errors"])
        if image["next_logit_err_rel"] > IMAGE_LOGIT_TOL and quant in ("f32", "f16"):
            failures.append(f"image next-token logit error {image['next_logit_err_rel']:.3f} std > {IMAGE_LOGIT_TOL}")
        if image["next_top1"] < 1.0 and image["next_all_decisive"] and quant in ("f32", "f16", "bf16", "q8_0"):
            failures.append("image next-token top-1 differs")
        if quant in ("f32", "f16") and image["greedy_mismatched"]:
            failures.append(f"greedy answer to the image prompt differs at a decisive step (first "
                            f"{image['greedy_prefix_min']} of {image['greedy_tokens']} tokens agree)")
        if image["top1_decisive"] < need:
            failures.append(f"image top-1 agreement {image['top1_decisive']:.3f} < {need} for {quant}")
    return failures


def verify_gguf(
    gguf_path: str | Path,
    hf_dir: str | Path,
    mmproj: str | Path | None = None,
    prompts: list[str] | tuple[str, ...] | None = None,
    *,
    images: list[Image.Image] | None = None,
    question: str = IMAGE_QUESTION,
    chat: bool = True,
    n_greedy: int = 32,
    reference: HFReference | None = None,
    n_threads: int | None = None,
    save: bool = True,
) -> dict:
    """Compare ``gguf_path`` (and ``mmproj``) with the Hugging Face model in ``hf_dir``.

    ``prompts`` default to :data:`DEFAULT_PROMPTS`, rendered with the model's chat template
    when it has one and ``chat`` is true (raw text otherwise, e.g. for base models);
    ``images`` default to :func:`default_image` when an mmproj is given.
    Pass one ``reference`` (an :class:`HFReference`) to check several files against the
    same Hugging Face run. Returns the summary (also saved beside the file unless ``save``
    is false); ``summary["passed"]`` says whether the file meets its quant type's bar.
    """
    path, started = Path(gguf_path), time.perf_counter()
    if not path.is_file():
        raise VerifyError(f"no GGUF file at {path}")
    ref = reference or HFReference(hf_dir, n_greedy=n_greedy)
    prompts = list(prompts or DEFAULT_PROMPTS)
    quant = quant_of(path)
    longest = max(len(ref.tok(ref.chat_text(p, chat))["input_ids"]) for p in prompts)
    llm = open_llama(path, n_ctx=max(512, longest + ref.n_greedy + 64 + (1024 if mmproj else 0)), n_threads=n_threads)
    try:
        text = _check_text(llm, ref, prompts, chat)
        image = None
        if mmproj is not None:
            imgs = images or [default_image(ref.dir)]
            image = _check_images(llm, ref, Path(mmproj), imgs, question)
    finally:
        llm.close()
    failures = _verdict(quant, text, image)
    summary = {
        "file": str(path),
        "mmproj": str(mmproj) if mmproj else None,
        "hf_dir": str(ref.dir),
        "model_type": ref.model_type,
        "quant": quant,
        "size_bytes": path.stat().st_size,
        "text": text,
        "image": image,
        "thresholds": {"top1_decisive": TOP1_THRESHOLDS.get(quant, 0.90),
                       "greedy_agreement": GREEDY_THRESHOLDS.get(quant), "tie_tol": TIE_TOL,
                       "image_logit_tol": IMAGE_LOGIT_TOL},
        "passed": not failures,
        "failures": failures,
        "seconds": round(time.perf_counter() - started, 2),
        "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if save:
        summary_path(path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
