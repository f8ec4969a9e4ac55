"""Evaluate a student on held-out seeds: accuracy, format adherence, reasoning length, examples.

:func:`evaluate_student` first refuses any seed the training data used (the error lists up
to five offending ids and their count). It then generates greedily with the student
through the backend the teachers use (``transformers``, with chat template, processor and
left-padded batches; ``llama_cpp`` for a GGUF file), parses each output with
:func:`~siqkit.teachers.parse.parse_cot` and checks its answer with
:func:`~siqkit.annotate.normalize.check_answer`, the normaliser annotation uses. A
text-only student sees each image as its seed's caption, as in training.

Numbers returned (and written to ``eval.json`` when ``out_dir`` is given):

- ``accuracy``: correct / seeds with a gold answer (a missing answer counts as wrong);
- ``format_ok``: share of outputs with both reasoning and answer (parse status ``ok``);
- ``mean_reasoning_tokens``: mean whitespace tokens of the reasoning, over outputs that have some;
- ``parse_status``: outputs per parse status;
- ``tasks``: per task (a seed's ``task``; ``None`` when the seeds have none) the same
  counts: ``seeds``, ``judged``, ``correct``, ``accuracy``;
- ``rows``: per seed its task, the question, the student's output, its answer and verdict.

``side_by_side.md`` puts question, image, teacher trace and student output next to each
other for the first ``table_rows`` seeds, for reading what the numbers hide.

:func:`evaluate_checkpoint` is how the train and eval stages call it: one folder per
evaluation under ``out_dir/eval/``, an identical earlier evaluation reused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from siqkit.errors import SiqkitError
from siqkit.hashing import digest

log = logging.getLogger(__name__)

MAX_LISTED = 5


class EvalRefusedError(SiqkitError):
    """Evaluation seeds overlap the training data."""


@dataclass
class EvalSeed:
    """One held-out seed: images are PIL images or paths."""

    seed_id: str
    question: str
    images: list[Any] = field(default_factory=list)
    gold: str | None = None
    teacher_trace: str | None = None
    caption: str | None = None
    task: str | None = None  # what the per-task scores group it under


def as_seed(item: Any) -> EvalSeed:
    """An :class:`EvalSeed` from itself or a mapping with the same keys."""
    if isinstance(item, EvalSeed):
        return item
    try:
        return EvalSeed(seed_id=str(item["seed_id"]), question=str(item["question"]),
                        images=list(item.get("images") or []), gold=item.get("gold"),
                        teacher_trace=item.get("teacher_trace"), caption=item.get("caption"),
                        task=item.get("task"))
    except (KeyError, TypeError) as e:
        raise SiqkitError(f"evaluation seed {item!r:.80}: needs seed_id and question ({e})") from None


def check_held_out(seeds: Iterable[Any], train_ids: Iterable[str]) -> None:
    """Raise :class:`EvalRefusedError` if any seed was used in training."""
    train = set(train_ids)
    bad = sorted({as_seed(s).seed_id for s in seeds} & train)
    if bad:
        listed = ", ".join(bad[:MAX_LISTED]) + (f", … ({len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else "")
        raise EvalRefusedError(
            f"refusing to evaluate: {len(bad)} evaluation seed(s) were used in training: {listed}; "
            "evaluate on held-out seeds only"
        )


def _open(image: Any):
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    return image.convert("RGB")


def _inputs(seeds: list[EvalSeed], *, text_only: bool, image_text: str, max_new_tokens: int) -> list:
    from siqkit.teachers.base import Sampling, TeacherInput

    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
    inputs = []
    for s in seeds:
        if text_only:
            prefix = "".join(image_text.format(caption=s.caption or "no description") + "\n" for _ in s.images)
            messages = [{"role": "user", "content": [{"type": "text", "text": prefix + s.question}]}]
            images = []
        else:
            images = [_open(im) for im in s.images]
            parts = [{"type": "image"} for _ in images] + [{"type": "text", "text": s.question}]
            messages = [{"role": "user", "content": parts}]
        inputs.append(TeacherInput(key=s.seed_id, seed_id=s.seed_id, question=s.question, images=images,
                                   messages=messages, sampling=sampling))
    return inputs


def evaluate_student(model_dir: str | Path, seeds: Iterable[Any], train_ids: Iterable[str], *,
                     max_new_tokens: int = 512, batch_size: int = 8, answer_kind: str = "auto",
                     tolerance: float = 1e-6, text_only: bool | None = None,
                     image_text: str = "[Image: {caption}]", device: str | None = None,
                     table_rows: int = 20, out_dir: str | Path | None = None, label: str = "",
                     mmproj: str | Path | None = None, n_ctx: int = 4096) -> dict:
    """Evaluate the checkpoint in ``model_dir`` on ``seeds``; see the module docstring.

    ``model_dir`` may also be a GGUF file (an exported student): it then runs in
    llama-cpp-python, with ``mmproj`` for images (without one it sees captions, as a
    text-only student) and a context of ``n_ctx`` tokens.
    """
    import torch

    from siqkit.annotate.normalize import check_answer
    from siqkit.annotate.stats import reasoning_stats
    from siqkit.models.checkpoints import is_vision_checkpoint
    from siqkit.teachers.backends.transformers_hf import TransformersTeacher
    from siqkit.teachers.parse import parse_cot

    seeds = [as_seed(s) for s in seeds]
    check_held_out(seeds, train_ids)
    if not seeds:
        raise SiqkitError("no evaluation seeds")
    if Path(model_dir).suffix == ".gguf":  # an exported student, run by llama.cpp
        from siqkit.teachers.backends.llama_cpp_gguf import LlamaCppTeacher

        text_only = mmproj is None if text_only is None else text_only
        teacher = LlamaCppTeacher(SimpleNamespace(name=label or "student", path=str(model_dir),
                                                  mmproj=None if text_only else mmproj, n_ctx=n_ctx))
    else:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        vision = is_vision_checkpoint(model_dir)
        text_only = (not vision) if text_only is None else text_only
        quant = "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        teacher = TransformersTeacher(SimpleNamespace(name=label or "student", path=str(model_dir),
                                                      quantization=quant, batch_size=batch_size, device=device))
    try:
        outputs = teacher.generate(_inputs(seeds, text_only=text_only, image_text=image_text,
                                           max_new_tokens=max_new_tokens))
    finally:
        teacher.close()

    rows, status_counts = [], {}
    for s, out in zip(seeds, outputs):
        parsed = parse_cot(out.text, out.finish_reason, out.error)
        correct, detail = check_answer(parsed.answer, s.gold, answer_kind, tolerance)
        stats = reasoning_stats(parsed.reasoning, parsed.answer)
        status_counts[parsed.status] = status_counts.get(parsed.status, 0) + 1
        rows.append({"seed_id": s.seed_id, "task": s.task, "question": s.question, "gold": s.gold, "output": out.text,
                     "reasoning": parsed.reasoning, "answer": parsed.answer, "parse_status": parsed.status,
                     "correct": correct, "correct_detail": detail, "reasoning_tokens": stats.tokens,
                     "teacher_trace": s.teacher_trace, "finish_reason": out.finish_reason})
    judged = [r for r in rows if r["correct"] is not None]
    with_reasoning = [r["reasoning_tokens"] for r in rows if r["reasoning"]]
    result = {
        "label": label, "model": str(model_dir), "seeds": len(rows), "judged": len(judged),
        "correct": sum(1 for r in judged if r["correct"]),
        "accuracy": (sum(1 for r in judged if r["correct"]) / len(judged)) if judged else None,
        "format_ok": sum(1 for r in rows if r["parse_status"] == "ok") / len(rows),
        "mean_reasoning_tokens": (sum(with_reasoning) / len(with_reasoning)) if with_reasoning else 0.0,
        "parse_status": status_counts, "tasks": task_scores(rows), "rows": rows,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        result["table"] = str(side_by_side(seeds, rows[:table_rows], out / "side_by_side.md", title=label))
    return result


def evaluate_checkpoint(model_path: str | Path, label: str, index: int, seeds: list[EvalSeed],
                        train_ids: Iterable[str], out_dir: str | Path, *, text_only: bool, max_new_tokens: int = 512,
                        batch_size: int = 8, image_text: str = "[Image: {caption}]", device: str | None = None,
                        table_rows: int = 20) -> dict:
    """:func:`evaluate_student` once into ``out_dir/eval/<index>-<label>/``, reusing an earlier
    identical evaluation there (same model, seeds and settings: the ``fingerprint`` in its
    ``eval.json``). The train stage evaluates through it, and the eval stage reuses its results."""
    from siqkit.models.checkpoints import model_identity

    eval_dir = Path(out_dir) / "eval" / f"{index:02d}-{label}"
    fingerprint = digest({"model": model_identity(model_path), "seeds": [(s.seed_id, s.task) for s in seeds],
                           "max_new_tokens": max_new_tokens, "text_only": text_only}, 16)
    cached = eval_dir / "eval.json"
    if cached.is_file():
        found = json.loads(cached.read_text())
        if found.get("fingerprint") == fingerprint:
            return found
    result = evaluate_student(model_path, seeds, train_ids, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              text_only=text_only, image_text=image_text, device=device, table_rows=table_rows,
                              out_dir=eval_dir, label=label)
    result["fingerprint"] = fingerprint
    cached.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    log.info("eval %s: accuracy %s, format %.2f, mean reasoning tokens %.1f", label, result["accuracy"],
             result["format_ok"], result["mean_reasoning_tokens"])
    return result


def task_scores(rows: list[dict]) -> dict[str, dict]:
    """Per task (rows without one under ``None``), in order of first appearance: seeds,
    judged, correct and accuracy (correct / judged; ``None`` when nothing was judged)."""
    out: dict = {}
    for r in rows:
        t = out.setdefault(r.get("task"), {"seeds": 0, "judged": 0, "correct": 0})
        t["seeds"] += 1
        if r["correct"] is not None:
            t["judged"] += 1
            t["correct"] += bool(r["correct"])
    for t in out.values():
        t["accuracy"] = t["correct"] / t["judged"] if t["judged"] else None
    return out


def _cell(text: Any) -> str:
    if text is None or text == "":
        return "—"
    return str(text).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def side_by_side(seeds: list[EvalSeed], rows: list[dict], path: Path, title: str = "") -> Path:
    """A Markdown table: question, image, teacher trace, student output, verdict."""
    by_id = {s.seed_id: s for s in seeds}
    image_dir = path.parent / "images"
    lines = [f"# {title or 'evaluation'}: side by side", "",
             "| seed | question | image | teacher trace | student output | gold | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        seed = by_id[r["seed_id"]]
        cells = []
        for k, im in enumerate(seed.images):
            image_dir.mkdir(parents=True, exist_ok=True)
            name = f"{r['seed_id'][:16]}-{k}.png"
            _open(im).save(image_dir / name)
            cells.append(f"![]({image_dir.name}/{name})")
        verdict = {True: "correct", False: "wrong", None: "no gold"}[r["correct"]]
        lines.append("| " + " | ".join([
            _cell(r["seed_id"][:12]), _cell(r["question"]), " ".join(cells) or "—", _cell(seed.teacher_trace),
            _cell(r["output"]), _cell(r["gold"]), f"{verdict} ({_cell(r['parse_status'])})",
        ]) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path
