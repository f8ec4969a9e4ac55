"""Small stand-ins for the public datasets the real-model recipes read, and the README's conversions.

Each ``*_hub`` builder writes a folder shaped like the dataset's Hugging Face Hub repository
(Parquet files under ``data/``, one per split, with the Hub dataset's columns and types), a
few dozen rows whose answers are computed from what was drawn:

- ``chartqa_hub``: like ``HuggingFaceM4/ChartQA``: ``image``, ``query``, ``label`` (a list of
  strings), ``human_or_machine``; splits train/val/test; bar charts drawn here;
- ``docvqa_hub``: like ``pixparse/docvqa-single-page-questions``: ``image``, ``question_id``,
  ``question``, ``answers``, ``data_split``, ``ocr_results`` (lines of text), ``other_metadata``;
  splits train/validation/test; small forms with printed text;
- ``scienceqa_hub``: like ``derek-thomas/ScienceQA``: ``image`` (often none), ``question``,
  ``choices``, ``answer`` (an index), ``hint``, ``task``, ``grade``, ``subject``, ``topic``,
  ``category``, ``skill``, ``lecture``, ``solution``; pictures from the easy-VQA package.

:func:`convert_with_readme` runs the conversion commands of ``recipes/README.md`` on such a
folder, word for word except for the dataset name (the folder instead of the Hub id), so the
datasets a recipe reads in the tests are made exactly the way the README tells users to.
"""

from __future__ import annotations

import io
import random
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

README = Path(__file__).resolve().parents[2] / "recipes" / "README.md"
COLORS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 210), "orange": (240, 150, 30)}
HUB_IDS = {"chartqa": "HuggingFaceM4/ChartQA", "docvqa": "pixparse/docvqa-single-page-questions",
           "scienceqa": "derek-thomas/ScienceQA"}


def _png(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _write_hub(rows: dict[str, list[dict]], features, out: Path) -> Path:
    """One Parquet file per split under out/data/, named the way Hub repositories name them."""
    import datasets

    (out / "data").mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        ds = datasets.Dataset.from_list(split_rows, features=features)
        ds.to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    return out


def _split(i: int) -> str:
    return ("train", "train", "val", "test")[i % 4]


def bar_chart(values: list[int], names: list[str]) -> Image.Image:
    """A 64x64 bar chart: one coloured bar per value, the initial of its name under it."""
    img = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(img)
    d.line([(4, 54), (60, 54)], fill="black")
    width = 50 // len(values)
    for i, (v, n) in enumerate(zip(values, names)):
        x0 = 6 + i * width
        d.rectangle([x0, 54 - v * 4, x0 + width - 3, 54], fill=COLORS[n])
        d.text((x0 + 1, 55), n[0].upper(), fill="black")
    return img


def chartqa_hub(out: Path, n: int = 32, seed: int = 0) -> Path:
    import datasets

    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i in range(n):
        names = rng.sample(list(COLORS), 3)
        values = rng.sample(range(2, 12), 3)
        if i % 3 == 0:
            q, a = "What is the value of the tallest bar in the chart?", max(values)
        elif i % 3 == 1:
            q, a = f"What is the value of the {names[1]} bar?", values[1]
        else:
            q, a = "What is the difference between the tallest and the shortest bar?", max(values) - min(values)
        rows[_split(i)].append({"image": _png(bar_chart(values, names)), "query": q, "label": [str(a)],
                                "human_or_machine": i % 2})
    features = datasets.Features({
        "image": datasets.Image(), "query": datasets.Value("string"),
        "label": datasets.List(datasets.Value("string")),
        "human_or_machine": datasets.ClassLabel(names=["human", "machine"]),
    })
    return _write_hub(rows, features, out)


def form(lines: list[str], size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A white page with a few lines of printed text."""
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((2, 2 + 12 * i), line, fill="black")
    return img


def docvqa_hub(out: Path, n: int = 32, seed: int = 0, page: tuple[int, int] = (64, 64)) -> Path:
    import datasets

    rng = random.Random(seed + 1)
    rows: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for i in range(n):
        number, year = rng.randint(100, 999), rng.randint(1960, 1999)
        kind = i % 4
        second = f"CHART {year}" if kind == 3 else f"YEAR {year}"
        lines = [f"FORM {number}", second, rng.choice(["PAID", "DUE", "VOID"])]
        if kind == 0:
            q, a = "What is the form number written at the top of the page?", str(number)
        elif kind == 1:
            q, a = "Which year is written on the document?", str(year)
        elif kind == 2:
            q, a = "What word is written on the last line of the document?", lines[2].lower()
        else:  # a chart question on a document: the chart teacher's, by its task label
            q, a = "Which year is in the title of the chart on this page?", str(year)
        split = ("train", "train", "validation", "test")[i % 4]
        ocr = {"page": 1, "clockwise_orientation": 0.0, "width": page[0], "height": page[1], "unit": "pixel",
               "lines": [{"bounding_box": [2, 2 + 12 * j, 60, 12 + 12 * j], "text": t,
                          "words": [{"bounding_box": [2, 2 + 12 * j, 60, 12 + 12 * j], "text": w,
                                     "confidence": "High"} for w in t.split()]}
                         for j, t in enumerate(lines)]}
        rows[split].append({
            "image": _png(form(lines, page)), "question_id": 1000 + i, "question": q,
            "answers": [a] if split != "test" else [], "data_split": split, "ocr_results": ocr,
            "other_metadata": {"ucsf_document_id": f"doc{i}", "ucsf_document_page_no": "1", "doc_id": i,
                               "image": f"documents/doc{i}.png"},
        })
    word = {"bounding_box": datasets.List(datasets.Value("int64")), "text": datasets.Value("string"),
            "confidence": datasets.Value("string")}
    features = datasets.Features({
        "image": datasets.Image(), "question_id": datasets.Value("int64"), "question": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")), "data_split": datasets.Value("string"),
        "ocr_results": {
            "page": datasets.Value("int64"), "clockwise_orientation": datasets.Value("float64"),
            "width": datasets.Value("int64"), "height": datasets.Value("int64"), "unit": datasets.Value("string"),
            "lines": datasets.List({"bounding_box": datasets.List(datasets.Value("int64")),
                                    "text": datasets.Value("string"), "words": datasets.List(word)}),
        },
        "other_metadata": {"ucsf_document_id": datasets.Value("string"),
                           "ucsf_document_page_no": datasets.Value("string"),
                           "doc_id": datasets.Value("int64"), "image": datasets.Value("string")},
    })
    return _write_hub(rows, features, out)


def scienceqa_hub(out: Path, n: int = 32, seed: int = 0) -> Path:
    import datasets
    from easy_vqa import get_train_image_paths, get_train_questions

    rng = random.Random(seed + 2)
    texts, answers, image_ids = get_train_questions()
    paths = get_train_image_paths()
    shapes = sorted({(i, a) for t, a, i in zip(texts, answers, image_ids)  # "what is the blue shape?" -> circle
                     if t.startswith("what is the") and t.endswith("shape?") and a in ("circle", "rectangle", "triangle")})
    facts = [("Which of these animals is a mammal?", ["trout", "dolphin", "sparrow"], 1, "biology"),
             ("Which of these materials is a metal?", ["wood", "glass", "copper"], 2, "physics"),
             ("At what temperature does water freeze at sea level?", ["0 degrees Celsius", "50 degrees Celsius"], 0,
              "physics"),
             ("Which planet is closest to the Sun?", ["Mars", "Mercury", "Venus"], 1, "earth-science")]
    rows: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for i in range(n):
        split = ("train", "train", "validation", "test")[(i // 2) % 4]  # pairs: one with an image, one without
        common = {"task": "closed choice", "grade": "grade4", "topic": "science", "category": "general",
                  "skill": "identify", "lecture": "A short lecture.", "solution": "A short solution."}
        if i % 2 == 0:
            image_id, shape = shapes[(i * 7) % len(shapes)]
            choices = ["circle", "rectangle", "triangle"]
            rng.shuffle(choices)
            rows[split].append({**common, "image": {"bytes": Path(paths[image_id]).read_bytes(), "path": None},
                                "question": "Which shape is shown in the picture?", "choices": choices,
                                "answer": choices.index(shape), "hint": "Look at the picture.",
                                "subject": "natural science"})
        else:
            question, choices, k, subject = facts[(i // 2) % len(facts)]
            order = list(range(len(choices)))
            rng.shuffle(order)
            rows[split].append({**common, "image": None, "question": question,
                                "choices": [choices[j] for j in order], "answer": order.index(k), "hint": "",
                                "subject": subject})
    string = datasets.Value("string")
    features = datasets.Features({
        "image": datasets.Image(), "question": string, "choices": datasets.List(string),
        "answer": datasets.Value("int8"), "hint": string, "task": string, "grade": string, "subject": string,
        "topic": string, "category": string, "skill": string, "lecture": string, "solution": string,
    })
    return _write_hub(rows, features, out)


def readme_conversion(name: str) -> str:
    """The README's Python conversion block for one dataset (the block that loads its Hub id)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if f'load_dataset("{HUB_IDS[name]}")' in b]
    if len(found) != 1:
        raise AssertionError(f"recipes/README.md: expected one conversion block loading {HUB_IDS[name]}, "
                             f"found {len(found)}")
    return found[0]


def convert_with_readme(name: str, hub_dir: Path, cwd: Path, env: dict | None = None) -> None:
    """Run the README's conversion of ``name`` in ``cwd``, reading ``hub_dir`` instead of the Hub."""
    code = readme_conversion(name).replace(f'"{HUB_IDS[name]}"', repr(str(hub_dir)))
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=300)
    if res.returncode != 0:
        raise AssertionError(f"README conversion of {name} failed:\n{res.stderr[-3000:]}")


def build_siq_data(root: Path, env: dict | None = None) -> Path:
    """Hub-shaped stand-ins under root/hub/, converted by the README into root/siq-data/; returns the latter."""
    builders = {"chartqa": chartqa_hub, "docvqa": docvqa_hub, "scienceqa": scienceqa_hub}
    for name, build in builders.items():
        convert_with_readme(name, build(root / "hub" / name), root, env)
    return root / "siq-data"
