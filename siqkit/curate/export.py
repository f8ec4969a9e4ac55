"""Training exports: JSONL in ``messages`` form, Parquet, a LLaMA-Factory variant, a card; and back.

A folder written by :func:`export_samples`::

    DIR/
      data.jsonl          one row per trace (the training contract below)
      data.parquet        the same rows; ``images`` a ``datasets`` Image feature, bytes embedded
      llamafactory.jsonl  LLaMA-Factory's sharegpt form: string content with ``<image>`` placeholders
      dataset_info.json   the entry to paste into LLaMA-Factory's ``data/dataset_info.json``
      images/<sha256>.<ext>   hard links to (or copies of) the run's stored images
      README.md           dataset card (:mod:`siqkit.curate.card`): Hub header, loading, credits, counts

Row contract (other code reads exactly these fields)::

    {"id": key, "seed_id": ..., "teacher": ..., "split": ..., "difficulty": "easy|medium|hard",
     "labels": [...], "images": ["/abs/DIR/images/<hash>.png", ...],
     "messages": [{"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": question}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "<think>\n…\n</think>\n\n…"}]}],
     "answer": ..., "gold": ..., "caption": ...}

Image paths in the JSONL files are absolute (the folder's ``images/`` at export time), so
``datasets`` and LLaMA-Factory open them from any working directory; a relative path
``images/…`` (older exports) means relative to the file, and :func:`read_export` falls back
to ``images/<name>`` beside the file when an absolute path no longer exists (the folder
moved). The Parquet file needs no image files at all: each image's bytes are embedded, with
the features header ``datasets`` reads, so ``load_dataset(DIR)`` (through the card's
``configs``) or ``load_dataset("parquet", data_files=…)`` give decoded images anywhere.
``caption`` is the seed's caption (or OCR text) when its source has one, else null: the
training stages use it to align a projector and to stand in for images with a text-only
student. :func:`read_export` reads a folder (or either file) back; :func:`import_seeds` and
:func:`import_traces` put it into a run store.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from siqkit.curate.card import KNOWN_SOURCES, dataset_card, llamafactory_entry
from siqkit.store import Store
from siqkit.teachers.parse import format_target, parse_cot

CHUNK = 5000
PARQUET_ROWS = 500  # rows per Parquet write: their images' bytes are held in memory at once


def parquet_schema() -> pa.Schema:
    """The Parquet file's Arrow schema, with the ``datasets`` features header (images: Image)."""
    import datasets
    from datasets import Features, Image, Value

    seq = getattr(datasets, "List", None) or datasets.Sequence  # List since datasets 4
    text = Value("string")
    return Features({
        "id": text, "seed_id": text, "teacher": text, "split": text, "difficulty": text,
        "labels": seq(text), "images": seq(Image()),
        "messages": seq({"role": text, "content": seq({"type": text, "text": text})}),
        "answer": text, "gold": text, "caption": text,
    }).arrow_schema

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


def export_samples(store: Store, keys: list[str], out_dir: Path,
                   formats: list[str] = ("jsonl", "parquet", "llamafactory"),
                   link_images: bool = True, card: dict | None = None) -> dict:
    """Write the samples to ``out_dir`` (replacing an earlier export there); return counts."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(exist_ok=True)
    tmp = {f: out_dir / f".{FILES[f]}.tmp" for f in formats}
    jsonl = open(tmp["jsonl"], "w", encoding="utf-8") if "jsonl" in formats else None
    lf = open(tmp["llamafactory"], "w", encoding="utf-8") if "llamafactory" in formats else None
    writer = pq.ParquetWriter(tmp["parquet"], parquet_schema()) if "parquet" in formats else None
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
            absolute = [{**r, "images": [str(out_dir / p) for p in r["images"]]} for r in chunk]
            if jsonl is not None:
                jsonl.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in absolute)
            if lf is not None:
                lf.writelines(json.dumps(llamafactory_row(r), ensure_ascii=False) + "\n" for r in absolute)
            if writer is not None:
                for i in range(0, len(chunk), PARQUET_ROWS):
                    part = [{**r, "images": [{"bytes": (out_dir / p).read_bytes(), "path": Path(p).name}
                                             for p in r["images"]]} for r in chunk[i:i + PARQUET_ROWS]]
                    writer.write_table(pa.Table.from_pylist(part, schema=writer.schema))
            n += len(chunk)
    finally:
        for fh in (jsonl, lf, writer):
            if fh is not None:
                fh.close()
    for f, path in tmp.items():
        os.replace(path, out_dir / FILES[f])  # a reader never sees half a file
    counts = {"samples": n, "images_linked": linked, "images_copied": copied, "path": str(out_dir),
              "files": [FILES[f] for f in formats], **stats.summary(), "sources": _sources(store, keys)}
    if "llamafactory" in formats:
        entry = llamafactory_entry(f"siqkit_{out_dir.name}".replace("-", "_"), out_dir / FILES["llamafactory"])
        (out_dir / "dataset_info.json").write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(dataset_card(out_dir, counts, card or {}, formats), encoding="utf-8")
    return counts


FILES = {"jsonl": "data.jsonl", "parquet": "data.parquet", "llamafactory": "llamafactory.jsonl"}


def llamafactory_row(row: dict) -> dict:
    """A contract row in LLaMA-Factory's sharegpt form: each message's content one string, with an
    ``<image>`` placeholder where each image part was (its multimodal plugin counts them)."""
    messages = [{"role": m["role"], "content": "".join("<image>" if c["type"] == "image" else c["text"] or ""
                                                       for c in m["content"])} for m in row["messages"]]
    return {"id": row["id"], "messages": messages, "images": row["images"]}


def _sources(store: Store, keys: list[str]) -> list[dict]:
    """The seed sources of these samples, with their type, count and (for built-in ones) license."""
    settings = (store.last_stage_runs().get("seeds") or {}).get("settings") or {}
    types = {s.get("name"): s.get("type") for s in (settings.get("seeds") or {}).get("sources") or []}
    cur = store.con.cursor()
    try:
        cur.register("_source_keys", pa.table({"key": keys}))
        rows = cur.execute("SELECT s.source, count(*) FROM _source_keys k JOIN generations g ON g.key = k.key "
                           "JOIN seeds s ON s.id = g.seed_id GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    finally:
        cur.close()
    out = []
    for name, n in rows:
        known = KNOWN_SOURCES.get(types.get(name), {})
        out.append({"name": name, "type": types.get(name), "samples": n, "license": known.get("license"),
                    "credit": known.get("credit")})
    return out


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
        self.images = 0

    def add(self, row: dict) -> None:
        self.images += len(row["images"])
        for field, values in (("split", [row["split"]]), ("teacher", [row["teacher"]]),
                              ("difficulty", [row["difficulty"] or "unknown"]), ("labels", row["labels"])):
            for v in values:
                self.by[field][v] = self.by[field].get(v, 0) + 1

    def summary(self) -> dict:
        return {"images": self.images,
                **{k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in self.by.items()}}


# ------------------------------------------------------------------------------ import


def read_export(path: str | Path) -> Iterator[dict]:
    """Rows of an export (a folder, ``data.jsonl`` or ``data.parquet``), with ``question``,
    ``reasoning`` and ``image_files`` (absolute paths) added; Parquet rows also carry the
    embedded ``image_bytes``, and their ``images`` become ``images/<name>`` paths."""
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
        if row["images"] and isinstance(row["images"][0], dict):  # Parquet: the Image feature's structs
            row["image_bytes"] = [im["bytes"] for im in row["images"]]
            row["images"] = [f"images/{im['path']}" for im in row["images"]]
        row["image_files"] = [_image_file(root, p) for p in row["images"]]
        yield row


def _image_file(root: Path, p: str) -> Path:
    """An exported image path: absolute, or relative to the export folder; a moved folder's
    absolute path is found again under its ``images/``."""
    f = root / p
    return f if f.exists() or not f.is_absolute() else root / "images" / f.name


def import_seeds(store: Store, path: str | Path, source: str = "import") -> int:
    """Store an export's questions, gold answers and images as seeds of ``source``."""
    rows, seen = [], set()
    for r in read_export(path):
        if r["seed_id"] in seen:
            continue
        seen.add(r["seed_id"])
        blobs = r.get("image_bytes") or [f.read_bytes() for f in r["image_files"]]
        hashes = [store.media.put(b)[0] for b in blobs]
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
