"""Dataset exports: JSONL in ``messages`` form, Parquet, a LLaMA-Factory variant, a card.

A folder written by :func:`export_samples`::

    DIR/
      data.jsonl          one row per trace (the training contract below)
      data.parquet        the same rows; ``images`` a ``datasets`` Image feature, bytes embedded
      llamafactory.jsonl  LLaMA-Factory's sharegpt form: string content with ``<image>`` placeholders
      dataset_info.json   the entry to paste into LLaMA-Factory's ``data/dataset_info.json``
      images/<sha256>.<ext>   hard links to (or copies of) the run's stored images
      README.md           dataset card (:mod:`siqkit.curate.card`): Hub header, loading, credits, counts

Row contract (:class:`ExportRow`, the one definition of its fields: the query, the JSONL
rows and the Parquet schema derive from it; other code reads exactly these fields)::

    {"id": key, "seed_id": ..., "teacher": ..., "split": ..., "difficulty": "easy|medium|hard",
     "labels": [...], "images": ["/abs/DIR/images/<hash>.png", ...],
     "messages": [{"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": question}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "<think>\n…\n</think>\n\n…"}]}],
     "answer": ..., "gold": ..., "caption": ..., "finish_reason": ...}

Image paths in the JSONL files are absolute (the folder's ``images/`` at export time), so
``datasets`` and LLaMA-Factory open them from any working directory; a relative path
``images/…`` (older exports) means relative to the file, and :func:`read_export` falls back
to ``images/<name>`` beside the file when an absolute path no longer exists (the folder
moved). The Parquet file needs no image files at all: each image's bytes are embedded, with
the features header ``datasets`` reads, so ``load_dataset(DIR)`` (through the card's
``configs``) or ``load_dataset("parquet", data_files=…)`` give decoded images anywhere.
``caption`` is the seed's caption (or OCR text) when its source has one, else null: the
training stages use it to align a projector and to stand in for images with a text-only
student; ``finish_reason`` is why the teacher stopped (``stop``; ``length`` when a recipe keeps
truncated traces).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from siqkit.curate.card import KNOWN_SOURCES, dataset_card, llamafactory_entry
from siqkit.store import Store
from siqkit.teachers.parse import format_target

CHUNK = 5000
PARQUET_ROWS = 500  # rows per Parquet write: their images' bytes are held in memory at once


def contract(sql: str | None, feature: str = "text") -> Any:
    """An :class:`ExportRow` field: the SQL that selects it (over the generation ``g``, its seed
    ``s`` and annotation ``a``; None for a field built in Python) and its ``datasets`` feature
    (``text``, ``texts``, ``images`` or ``messages``)."""
    return field(default=None, metadata={"sql": sql, "feature": feature})


@dataclass
class ExportRow:
    """One row of the training contract, in the order of its fields."""

    id: str = contract("g.key")
    seed_id: str = contract("g.seed_id")
    teacher: str = contract("g.teacher")
    split: str = contract("s.split")
    difficulty: str | None = contract("a.difficulty_bucket")
    labels: list[str] = contract("coalesce(a.labels, [])", "texts")
    images: list[str] = contract("s.images", "images")  # stored hashes in the query, file paths in the row
    messages: list[dict] = contract(None, "messages")  # the question, then the reasoning and answer as target
    answer: str | None = contract("g.answer")
    gold: str | None = contract("s.answer")
    caption: str | None = contract("coalesce(json_extract_string(s.metadata, '$.caption'), "
                                   "json_extract_string(s.metadata, '$.ocr'))")
    finish_reason: str | None = contract("g.finish_reason")

    @classmethod
    def queried(cls) -> list[dataclasses.Field]:
        """The fields the export query selects, in order."""
        return [f for f in dataclasses.fields(cls) if f.metadata["sql"] is not None]


_FIELDS = [f.name for f in dataclasses.fields(ExportRow)]
_QUERIED = [f.name for f in ExportRow.queried()]
_BUILT_FROM = ("s.question", "g.reasoning")  # what ``messages`` is made of, after the queried fields


def parquet_schema() -> pa.Schema:
    """The Parquet file's Arrow schema, with the ``datasets`` features header (images: Image)."""
    import datasets
    from datasets import Features, Image, Value

    seq = getattr(datasets, "List", None) or datasets.Sequence  # List since datasets 4
    text = Value("string")
    features = {"text": text, "texts": seq(text), "images": seq(Image()),
                "messages": seq({"role": text, "content": seq({"type": text, "text": text})})}
    return Features({f.name: features[f.metadata["feature"]] for f in dataclasses.fields(ExportRow)}).arrow_schema


_ROWS_SQL = f"""
    SELECT {", ".join(f"{f.metadata['sql']} AS {f.name}" for f in ExportRow.queried())}, {", ".join(_BUILT_FROM)}
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
            values = [(dict(zip(_QUERIED, r)), *r[len(_QUERIED):]) for r in chunk]
            files = _media_files(store, {h for v, *_ in values for h in v["images"] or []})
            yield [_row(v, question, reasoning, files, image_dir) for v, question, reasoning in values]
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


def _row(v: dict, question: str, reasoning: str | None, files: dict[str, Path], image_dir: str) -> dict:
    """A contract row as a dict (:class:`ExportRow`'s fields, in order) from the query's values."""
    paths = [f"{image_dir}/{files[h].name}" for h in v["images"] or []]
    user = [{"type": "image"} for _ in paths] + [{"type": "text", "text": question}]
    target = [{"type": "text", "text": format_target(reasoning, v["answer"])}]
    row = {**v, "images": paths, "messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": target}]}
    return {name: row[name] for name in _FIELDS}


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
