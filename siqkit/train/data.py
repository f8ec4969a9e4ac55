"""Training data: the curated traces folder, per-stage examples, tokens and batches.

The curate stage exports a folder with ``data.jsonl`` (one trace per
line; image paths relative to the folder; an optional ``caption`` or ``ocr`` field holds
the seed's text for its images). :func:`load_traces` reads it, :func:`build_examples` turns the
rows into one stage's examples (caption, short-answer or chain-of-thought targets; for a
text-only student each image part becomes its seed's caption/OCR text),
:class:`Encoder` renders them with the student's own chat template and processor, and
:func:`plan_batches` fixes the order of micro-batches for an epoch.

Loss only on assistant tokens: an example's prompt is the conversation up to the
assistant turn rendered with ``add_generation_prompt=True``; its tokens are a prefix of
the full conversation's tokens, so everything before that prefix's end is masked
(``-100``), and so is anything after the last end-of-turn token (the template's trailing
newline). This works with any chat template, ``{% generation %}`` markers or not.

Batches are a pure function of (seed, epoch, the examples' lengths): a resumed run
rebuilds exactly the same order and skips what it already trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siqkit.errors import SiqkitError
from siqkit.teachers.parse import format_target

TRACES_FILES = ("data.jsonl",)  # what the curate stage exports
CAPTION_PROMPT = "Describe the image."
DIFFICULTY_RANK = {"easy": 0, "medium": 1, "hard": 2}
IGNORE = -100


class TrainDataError(SiqkitError):
    """The training data folder cannot be used (missing file, malformed row)."""


@dataclass
class TraceRow:
    """One curated trace, as exported by the curate stage."""

    id: str
    seed_id: str
    messages: list[dict]
    images: list[Path]
    difficulty: str | None = None
    labels: list[str] = field(default_factory=list)
    answer: str | None = None
    gold: str | None = None
    caption: str | None = None
    teacher: str | None = None
    line: int = 0


@dataclass
class Example:
    """One training conversation; ``key`` is unique within a stage."""

    key: str
    seed_id: str
    messages: list[dict]
    images: list[Path]
    difficulty: str | None = None


def traces_file(data_dir: str | Path) -> Path:
    """The JSONL file of a traces folder (``data.jsonl``), or the file itself."""
    path = Path(data_dir)
    if path.is_file():
        return path
    for name in TRACES_FILES:
        if (path / name).is_file():
            return path / name
    raise TrainDataError(f"{path}: training data not found (expected {' or '.join(TRACES_FILES)}, "
                         "which the curate stage writes)")


def load_traces(data_dir: str | Path) -> list[TraceRow]:
    """Read a traces folder's JSONL; a malformed row is an error naming its line."""
    path = traces_file(data_dir)
    rows: list[TraceRow] = []
    with path.open(encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise TrainDataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            rows.append(_row(raw, path, n))
    if not rows:
        raise TrainDataError(f"{path}: no training rows")
    return rows


def _row(raw: Any, path: Path, n: int) -> TraceRow:
    where = f"{path}:{n}"
    if not isinstance(raw, dict):
        raise TrainDataError(f"{where}: expected a JSON object")
    for key in ("id", "seed_id", "messages"):
        if key not in raw:
            raise TrainDataError(f"{where}: missing field '{key}'")
    messages = raw["messages"]
    if (not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages)
            or messages[-1].get("role") != "assistant"):
        raise TrainDataError(f"{where}: messages: expected a list ending with an assistant message")
    images = [path.parent / p for p in raw.get("images") or []]
    for p in images:
        if not p.is_file():
            raise TrainDataError(f"{where}: images: file not found: {p}")
    n_parts = sum(1 for m in messages if isinstance(m.get("content"), list)
                  for part in m["content"] if isinstance(part, dict) and part.get("type") == "image")
    if n_parts != len(images):
        raise TrainDataError(f"{where}: {n_parts} image part(s) in messages but {len(images)} image(s)")
    caption = raw.get("caption") or raw.get("ocr")
    return TraceRow(
        id=str(raw["id"]), seed_id=str(raw["seed_id"]), messages=messages, images=images,
        difficulty=raw.get("difficulty"), labels=list(raw.get("labels") or []),
        answer=_str(raw.get("answer")), gold=_str(raw.get("gold")), caption=_str(caption),
        teacher=raw.get("teacher"), line=n,
    )


def _str(v: Any) -> str | None:
    return None if v is None or str(v).strip() == "" else str(v)


# --------------------------------------------------------------------------- examples


def _user_parts(messages: list[dict]) -> list[dict]:
    for m in messages:
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
    return []


def _question(messages: list[dict]) -> str:
    return "".join(p.get("text", "") for p in _user_parts(messages) if p.get("type") == "text").strip()


def _assistant_text(messages: list[dict]) -> str:
    content = messages[-1].get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def textualise(messages: list[dict], caption: str | None, image_text: str) -> list[dict] | None:
    """Messages for a text-only student: image parts become ``image_text`` with the caption,
    and every content becomes a plain string. None when an image has no caption."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            pieces = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image":
                    if not caption:
                        return None
                    pieces.append(image_text.format(caption=caption) + "\n")
                elif isinstance(part, dict):
                    pieces.append(part.get("text", ""))
            content = "".join(pieces)
        out.append({**m, "content": content or ""})
    return out


def _sample_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def build_examples(rows: list[TraceRow], stage: Any, *, text_only: bool, image_text: str,
                   seed: int = 0) -> tuple[list[Example], Counter]:
    """One stage's examples from the trace rows, and the count of rows dropped per reason."""
    drops: Counter = Counter()
    kept: list[Example] = []
    seen_images: set[tuple] = set()
    for row in rows:
        if stage.difficulty is not None and row.difficulty not in stage.difficulty:
            drops["difficulty not selected"] += 1
            continue
        if stage.labels is not None and not set(stage.labels) & set(row.labels):
            drops["no selected label"] += 1
            continue
        if stage.data == "caption":
            if text_only:
                drops["caption data needs a vision student"] += 1
                continue
            if not row.images:
                drops["no image"] += 1
                continue
            if not row.caption:
                drops["no caption"] += 1
                continue
            images_key = tuple(str(p) for p in row.images)
            if images_key in seen_images:
                drops["same images already captioned"] += 1
                continue
            seen_images.add(images_key)
            user = [{"type": "image"} for _ in row.images] + [{"type": "text", "text": CAPTION_PROMPT}]
            messages = [{"role": "user", "content": user},
                        {"role": "assistant", "content": [{"type": "text", "text": format_target(None, row.caption)}]}]
            key = "caption:" + hashlib.sha256("\n".join(images_key).encode()).hexdigest()[:16]
        elif stage.data == "answer":
            answer = row.answer
            if answer is None:
                from siqkit.teachers.parse import parse_cot

                answer = parse_cot(_assistant_text(row.messages)).answer
            if not answer:
                drops["no answer"] += 1
                continue
            user = _user_parts(row.messages)
            messages = [{"role": "user", "content": user},
                        {"role": "assistant", "content": [{"type": "text", "text": format_target(None, answer)}]}]
            key = row.id
        else:
            messages, key = row.messages, row.id
        images = list(row.images)
        if text_only:
            messages = textualise(messages, row.caption, image_text)
            if messages is None:
                drops["image without caption or OCR text (text-only student)"] += 1
                continue
            images = []
        kept.append(Example(key=key, seed_id=row.seed_id, messages=messages, images=images,
                            difficulty=row.difficulty))
    if getattr(stage, "max_examples", None) is not None and len(kept) > stage.max_examples:
        chosen = set(sorted((_sample_key(seed, e.key) for e in kept))[: stage.max_examples])
        drops["over max_examples"] += len(kept) - stage.max_examples
        kept = [e for e in kept if _sample_key(seed, e.key) in chosen]
    return kept, drops


# --------------------------------------------------------------------------- tokens


@dataclass
class Encoded:
    """Token counts of one example: ``length`` tokens, of which ``prompt`` are masked."""

    length: int
    prompt: int
    target: int  # tokens that carry loss


class Encoder:
    """Renders examples with the student's chat template and processor; builds batches.

    ``processor`` is the student's processor (vision students) or tokenizer (text-only);
    images larger than ``max_image_pixels`` are scaled down first
    (:func:`siqkit.train.images.cap_image`).
    """

    def __init__(self, processor: Any, *, vision: bool, max_seq_len: int, max_image_pixels: int | None = None):
        self.processor = processor
        self.max_image_pixels = max_image_pixels
        self.vision = vision
        self.tokenizer = processor.tokenizer if vision else processor
        self.max_seq_len = max_seq_len
        eos = self.tokenizer.eos_token_id
        self.eos_id = eos if isinstance(eos, int) else None
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_id or 0)

    def _render(self, messages: list[dict], prompt: bool) -> str:
        msgs = messages[:-1] if prompt else messages
        owner = self.processor if self.vision else self.tokenizer
        return owner.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    def _tokenize(self, texts: list[str], images: list[list] | None) -> dict:
        if self.vision:
            kwargs: dict[str, Any] = {"text": texts, "add_special_tokens": False, "return_tensors": "pt",
                                      "padding": True, "padding_side": "right"}
            if images is not None:
                kwargs["images"] = images
            return self.processor(**kwargs)
        return self.tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True,
                              padding_side="right")

    def _images(self, ex: Example) -> list | None:
        if not ex.images:
            return None
        from PIL import Image

        from siqkit.train.images import cap_image

        loaded = []
        for p in ex.images:
            with Image.open(p) as im:
                loaded.append(cap_image(im.convert("RGB"), self.max_image_pixels))
        return loaded

    def encode(self, ex: Example) -> Encoded | None:
        """Token counts of one example; None when its prompt alone exceeds ``max_seq_len``."""
        images = self._images(ex)
        imgs = [images] if images else None
        full = self._tokenize([self._render(ex.messages, False)], imgs)["input_ids"][0].tolist()
        prompt = self._tokenize([self._render(ex.messages, True)], imgs)["input_ids"][0].tolist()
        start = 0
        while start < min(len(full), len(prompt)) and full[start] == prompt[start]:
            start += 1
        end = self._target_end(full, start)
        if start >= self.max_seq_len:
            return None
        length = min(len(full), self.max_seq_len)
        return Encoded(length=length, prompt=start, target=max(0, min(end, length) - start))

    def _target_end(self, ids: list[int], start: int) -> int:
        """One past the last end-of-turn token of the target (the whole tail if none)."""
        if self.eos_id is not None:
            for i in range(len(ids) - 1, start - 1, -1):
                if ids[i] == self.eos_id:
                    return i + 1
        return len(ids)

    def collate(self, examples: list[Example], encoded: list[Encoded]) -> dict:
        """Model inputs for a micro-batch, right-padded, with ``labels`` on assistant tokens only."""
        import torch

        texts = [self._render(ex.messages, False) for ex in examples]
        images = [self._images(ex) for ex in examples]
        has_images = any(images)
        if has_images and not all(images):
            raise ValueError("a micro-batch mixes examples with and without images")
        batch = dict(self._tokenize(texts, images if has_images else None))
        ids = batch["input_ids"]
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        labels = torch.full_like(ids, IGNORE)
        for row, enc in enumerate(encoded):
            row_ids = ids[row, : lengths[row]].tolist()
            end = self._target_end(row_ids, enc.prompt)
            labels[row, enc.prompt : end] = ids[row, enc.prompt : end]
        batch["labels"] = labels
        if ids.shape[1] > self.max_seq_len:  # cut the answers' tails; prompts always fit
            width = ids.shape[1]
            for key, value in list(batch.items()):
                if hasattr(value, "dim") and value.dim() >= 2 and value.shape[:2] == (ids.shape[0], width):
                    batch[key] = value[:, : self.max_seq_len]
        return batch


# --------------------------------------------------------------------------- batches


def plan_batches(lengths: list[int], *, micro_batch: int, seed: int, epoch: int, order: str = "shuffle",
                 batching: str = "length_grouped", groups: list[int] | None = None,
                 difficulty: list[str | None] | None = None, window: int = 32) -> list[list[int]]:
    """Micro-batches (lists of example indices) for one epoch, deterministic in its inputs.

    Examples are shuffled under ``(seed, epoch)``; ``order="easy_to_hard"`` then sorts them
    stably by difficulty. ``length_grouped`` cuts the sequence into windows of
    ``window * micro_batch`` examples, sorts each window by length and batches it, then
    shuffles the batches inside the window, so padding is small while the curriculum order
    holds across windows. A micro-batch never mixes ``groups`` (image / no image).
    """
    n = len(lengths)
    rng = random.Random(f"{seed}:{epoch}")
    idx = list(range(n))
    rng.shuffle(idx)
    if order == "easy_to_hard":
        rank = [DIFFICULTY_RANK.get(d or "", 1) for d in (difficulty or [None] * n)]
        idx.sort(key=lambda i: rank[i])
    group_of = groups or [0] * n
    size = window * micro_batch if batching == "length_grouped" else n
    batches: list[list[int]] = []
    for start in range(0, n, max(1, size)):
        chunk = idx[start : start + size]
        if batching == "length_grouped":
            chunk = sorted(chunk, key=lambda i: -lengths[i])
        pos = {i: p for p, i in enumerate(chunk)}
        out: list[list[int]] = []
        for g in sorted({group_of[i] for i in chunk}):
            members = [i for i in chunk if group_of[i] == g]
            out.extend(members[j : j + micro_batch] for j in range(0, len(members), micro_batch))
        out.sort(key=lambda b: pos[b[0]])  # keep the chunk's order when groups interleave
        if batching == "length_grouped":
            rng.shuffle(out)
        batches.extend(out)
    return batches
