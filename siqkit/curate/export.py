"""Training exports: JSONL in ``messages`` form, Parquet, images and a dataset card; and back.

A folder written by :func:`export_samples`::

    DIR/
      data.jsonl     one row per trace (the training contract below)
      data.parquet   the same rows and columns
      images/<sha256>.<ext>   hard links to (or copies of) the run's stored images
      README.md      dataset card: counts, distributions, filters applied, how to load

Row contract (other code reads exactly these fields)::

    {"id": key, "seed_id": ..., "teacher": ..., "split": ..., "difficulty": "easy|medium|hard",
     "labels": [...], "images": ["images/<hash>.png", ...],
     "messages": [{"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": question}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "<think>\\n…\\n</think>\\n\\n…"}]}],
     "answer": ..., "gold": ..., "caption": ...}

Image paths are relative to the folder. ``caption`` is the seed's caption (or OCR text) when
its source has one, else null: the training stages use it to align a projector and to stand
in for images with a text-only student. Both files load with ``datasets.load_dataset("json",
data_files=DIR + "/data.jsonl")`` or ``("parquet", …)``, and ``load_dataset(DIR)`` reads the
Parquet file through the card's ``configs`` header. :func:`read_export` reads a folder (or
either file) back; :func:`import_seeds` and :func:`import_traces` put it into a run store.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from siqkit.store import Store
from siqkit.teachers.parse import format_target, parse_cot

CHUNK = 5000
_TEXT = pa.struct([("type", pa.string()), ("text", pa.string())])
SCHEMA = pa.schema([
    ("id", pa.string()), ("seed_id", pa.string()), ("teacher", pa.string()), ("split", pa.string()),
    ("difficulty", pa.string()), ("labels", pa.list_(pa.string())), ("images", pa.list_(pa.string())),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.list_(_TEXT))]))),
    ("answer", pa.string()), ("gold", pa.string()), ("caption", pa.string()),
])
_ROWS_SQL = """
    SELECT g.key, g.seed_id, g.teacher, s.split, a.difficulty_bucket, a.labels, s.images, s.question,
           g.reasoning, g.answer, s.answer AS gold,
           coalesce(json_extract_string(s.metadata, '$.caption'), json_extract_string(s.metadata, '$.ocr'))
    FROM _export_keys k JOIN generations g ON g.key = k.key JOIN seeds s ON s.id = g.seed_id
    LEFT JOIN annotations a ON a.key = g.key
    ORDER BY k.pos"""


def rows_for(store: Store, keys: list[str], image_dir: str = "images") -> Iterator[list[dict]]:
    """Contract rows for these generation keys, in their order, in chunks."""
    cur = store.con.cursor()  # its own connection: the lookups below must not end this query
    cur.register("_export_keys", pa.table({"key": keys, "pos": list(range(len(keys)))}))
    try:
        cur.execute(_ROWS_SQL)
        while True:
            chunk = cur.fetchmany(CHUNK)
            if not chunk:
                break
            files = _media_files(store, {h for r in chunk for h in r[6] or []})
            yield [_row(r, files, image_dir) for r in chunk]
    finally:
        cur.close()


def _media_files(store: Store, digests: set[str]) -> dict[str, Path]:
    """Stored file of each image hash (by its recorded format; searched for when unrecorded)."""
    found = {h: store.media.path(h, fmt) for h, fmt in store.con.execute(
        "SELECT hash, format FROM media WHERE hash IN (SELECT unnest(?))", [sorted(digests)]).fetchall()}
    for h in digests:
        if h not in found or not found[h].exists():
            found[h] = store.media.find(h)
    return found


def _row(r: tuple, files: dict[str, Path], image_dir: str) -> dict:
    key, seed_id, teacher, split, bucket, labels, images, question, reasoning, answer, gold, caption = r
    paths = [f"{image_dir}/{files[h].name}" for h in images or []]
    user = [{"type": "image"} for _ in paths] + [{"type": "text", "text": question}]
    return {
        "id": key, "seed_id": seed_id, "teacher": teacher, "split": split, "difficulty": bucket,
        "labels": list(labels or []), "images": paths,
        "messages": [{"role": "user", "content": user},
                     {"role": "assistant", "content": [{"type": "text", "text": format_target(reasoning, answer)}]}],
        "answer": answer, "gold": gold, "caption": caption,
    }


def export_samples(store: Store, keys: list[str], out_dir: Path, formats: list[str] = ("jsonl", "parquet"),
                   link_images: bool = True, card: dict | None = None) -> dict:
    """Write the samples to ``out_dir`` (replacing an earlier export there); return counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(exist_ok=True)
    tmp = {f: out_dir / f".data.{f}.tmp" for f in formats}
    jsonl = open(tmp["jsonl"], "w", encoding="utf-8") if "jsonl" in formats else None
    writer = pq.ParquetWriter(tmp["parquet"], SCHEMA) if "parquet" in formats else None
    n, linked, copied, stats = 0, 0, 0, _Stats()
    try:
        for chunk in rows_for(store, keys):
            for row in chunk:
                for rel in row["images"]:
                    dst = out_dir / rel
                    if not dst.exists():
                        how = _place(store.media.path(dst.stem, dst.suffix.lstrip(".")), dst, link_images)
                        linked += how == "link"
                        copied += how == "copy"
                stats.add(row)
            if jsonl is not None:
                jsonl.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk)
            if writer is not None:
                writer.write_table(pa.Table.from_pylist(chunk, schema=SCHEMA))
            n += len(chunk)
    finally:
        if jsonl is not None:
            jsonl.close()
        if writer is not None:
            writer.close()
    for f, path in tmp.items():
        os.replace(path, out_dir / f"data.{f}")  # a reader never sees half a file
    counts = {"samples": n, "images_linked": linked, "images_copied": copied, "path": str(out_dir),
              "files": [f"data.{f}" for f in formats], **stats.summary()}
    (out_dir / "README.md").write_text(dataset_card(out_dir.name, counts, card or {}, formats), encoding="utf-8")
    return counts


def _place(src: Path, dst: Path, link: bool) -> str:
    if link:
        try:
            os.link(src, dst)
            return "link"
        except OSError:
            pass
    shutil.copy2(src, dst)
    return "copy"


class _Stats:
    def __init__(self):
        self.by: dict[str, dict[str, int]] = {"split": {}, "teacher": {}, "difficulty": {}, "labels": {}}

    def add(self, row: dict) -> None:
        for field, values in (("split", [row["split"]]), ("teacher", [row["teacher"]]),
                              ("difficulty", [row["difficulty"] or "unknown"]), ("labels", row["labels"])):
            for v in values:
                self.by[field][v] = self.by[field].get(v, 0) + 1

    def summary(self) -> dict:
        return {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in self.by.items()}


def dataset_card(name: str, counts: dict, info: dict, formats) -> str:
    """README.md: a ``configs`` header for ``load_dataset(DIR)``, then counts and settings."""
    splits = list(counts.get("split", {})) or ["train"]
    split = splits[0] if len(splits) == 1 else "curated"
    main = "data.parquet" if "parquet" in formats else "data.jsonl"
    lines = ["---", "configs:", "- config_name: default", "  data_files:", f"  - split: {split}",
             f"    path: {main}", "---", "", f"# {name}", "",
             f"{counts['samples']:,} reasoning traces for distillation, curated by siqkit "
             f"(`{info.get('source', 'siqkit curate')}`).", "",
             "Each row holds a `messages` conversation (user: images then question; assistant: "
             "`<think>` reasoning, then the answer), the image paths relative to this folder, the "
             "teacher, the seed split, difficulty bucket, task labels, the answer and the gold answer.", "",
             "```python", "from datasets import load_dataset",
             f'ds = load_dataset("{"parquet" if main.endswith("parquet") else "json"}", '
             f'data_files="{main}")  # or load_dataset(".") in this folder', "```", ""]
    for title, field in (("Splits", "split"), ("Teachers", "teacher"), ("Difficulty", "difficulty"),
                         ("Task labels", "labels")):
        values = counts.get(field, {})
        if values:
            lines += [f"## {title}", "", "| value | samples |", "|---|---:|"]
            lines += [f"| {k} | {v:,} |" for k, v in values.items()]
            lines.append("")
    for title, key in (("Filters applied", "filters"), ("Dropped, by layer and reason", "dropped"),
                       ("Deduplication", "dedup"), ("Selection", "selection"), ("Subset", "subset")):
        if info.get(key):
            lines += [f"## {title}", "", "```json", json.dumps(info[key], indent=2, default=str), "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ import


def read_export(path: str | Path) -> Iterator[dict]:
    """Rows of an export (a folder, ``data.jsonl`` or ``data.parquet``), with ``question``,
    ``reasoning`` and absolute ``image_files`` added."""
    path = Path(path)
    if path.is_dir():
        path = path / "data.parquet" if (path / "data.parquet").exists() else path / "data.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no exported data here")
    root = path.parent
    if path.suffix == ".parquet":
        rows: Iterator[dict] = (r for b in pq.ParquetFile(path, pre_buffer=False).iter_batches(CHUNK) for r in b.to_pylist())
    else:
        rows = (json.loads(line) for line in open(path, encoding="utf-8") if line.strip())
    for row in rows:
        user = next(m for m in row["messages"] if m["role"] == "user")
        target = next(m for m in row["messages"] if m["role"] == "assistant")["content"][0]["text"]
        parsed = parse_cot(target)
        row["question"] = next(c["text"] for c in user["content"] if c["type"] == "text")
        row["reasoning"] = parsed.reasoning
        row["image_files"] = [root / p for p in row["images"]]
        yield row


def import_seeds(store: Store, path: str | Path, source: str = "import") -> int:
    """Store an export's questions, gold answers and images as seeds of ``source``."""
    rows, seen = [], set()
    for r in read_export(path):
        if r["seed_id"] in seen:
            continue
        seen.add(r["seed_id"])
        hashes = [store.media.put(f.read_bytes())[0] for f in r["image_files"]]
        rows.append((r["seed_id"], source, r["split"], r["question"], r["gold"], hashes,
                     json.dumps({"labels": r["labels"]}), f"{path}"))
    with store.transaction():
        _media_rows(store, {h for row in rows for h in row[5]})
        store.insert("seeds", ["id", "source", "split", "question", "answer", "images", "metadata", "origin"],
                     rows, "INSERT OR IGNORE")
    return len(rows)


def import_traces(store: Store, path: str | Path, source: str = "import") -> int:
    """Store an export as seeds and teacher traces (``generations``), ready to annotate again."""
    import_seeds(store, path, source)
    rows = []
    for r in read_export(path):
        raw = next(m for m in r["messages"] if m["role"] == "assistant")["content"][0]["text"]
        parsed = parse_cot(raw)
        rows.append((r["id"], r["seed_id"], r["teacher"], raw, parsed.reasoning, parsed.answer,
                     parsed.status, parsed.reason, "stop", 0))
    with store.transaction():
        store.insert("generations", ["key", "seed_id", "teacher", "raw", "reasoning", "answer", "parse_status",
                                     "parse_reason", "finish_reason", "sample_index"], rows, "INSERT OR IGNORE")
    return len(rows)


def _media_rows(store: Store, digests: set[str]) -> None:
    from PIL import Image

    rows = []
    for d in sorted(digests):
        f = store.media.find(d)
        with Image.open(f) as im:
            rows.append((d, f.suffix.lstrip("."), im.size[0], im.size[1], f.stat().st_size))
    store.insert("media", ["hash", "format", "width", "height", "size_bytes"], rows, "INSERT OR IGNORE")
