"""Small curated-traces folders written by hand, in the curate stage's export format."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")
LEVELS = ("easy", "medium", "hard")


def shape_image(colour: str, shape: str, size: int = 64) -> Image.Image:
    im = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    box = (12, 12, size - 12, size - 12)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return im


def seeds(n: int, prefix: str = "seed") -> list[dict]:
    """``n`` colour/shape questions with gold answers and captions (no files written)."""
    out = []
    names = list(COLOURS)
    for i in range(n):
        colour, shape = names[i % len(names)], SHAPES[(i // len(names)) % len(SHAPES)]
        question = "What color is the shape?" if i % 2 == 0 else "What shape is this?"
        gold = colour if i % 2 == 0 else shape
        out.append({"seed_id": f"{prefix}-{i:03d}", "colour": colour, "shape": shape, "question": question,
                    "gold": gold, "caption": f"A {colour} {shape} on a white background.",
                    "difficulty": LEVELS[i % 3]})
    return out


def write_traces(folder: Path, n: int = 12, prefix: str = "seed") -> Path:
    """A traces folder: ``data.jsonl`` and ``images/`` with ``n`` rows."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    lines = []
    for s in seeds(n, prefix):
        rel = f"images/{s['colour']}-{s['shape']}.png"
        shape_image(s["colour"], s["shape"]).save(folder / rel)
        reasoning = f"The picture shows a {s['colour']} {s['shape']}. The question asks about it."
        target = f"<think>\n{reasoning}\n</think>\n\n{s['gold']}"
        lines.append({
            "id": f"trace-{s['seed_id']}", "seed_id": s["seed_id"], "teacher": "perception", "split": "train",
            "difficulty": s["difficulty"], "labels": ["color" if "color" in s["question"] else "shape"],
            "images": [rel],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s["question"]}]},
                {"role": "assistant", "content": [{"type": "text", "text": target}]},
            ],
            "answer": s["gold"], "gold": s["gold"], "caption": s["caption"],
        })
    (folder / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def eval_seeds(n: int = 4, prefix: str = "held") -> list[dict]:
    """Held-out seeds with PIL images and a teacher trace."""
    return [{"seed_id": s["seed_id"], "question": s["question"], "images": [shape_image(s["colour"], s["shape"])],
             "gold": s["gold"], "caption": s["caption"],
             "teacher_trace": f"<think>\nI see a {s['colour']} {s['shape']}.\n</think>\n\n{s['gold']}"}
            for s in seeds(n, prefix)]
