"""Reading a dataset export back, and putting it into a run store: the round trip that shows an
export loses nothing (the tests' check of :mod:`siqkit.curate.datasets`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
from PIL import Image

from siqkit.curate.datasets import CHUNK
from siqkit.records import Generation, Media, Seed
from siqkit.store import Store
from siqkit.teachers.parse import parse_cot


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
        rows.append(Seed(r["seed_id"], source, r["split"], r["question"], r["gold"], hashes,
                         {"labels": r["labels"]}, f"{path}"))
    with store.transaction():
        _media_rows(store, {h for row in rows for h in row.images})
        store.write(rows, "INSERT OR IGNORE")
    return len(rows)


def import_traces(store: Store, path: str | Path, source: str = "import") -> int:
    """Store an export as seeds and teacher traces (``generations``), ready to annotate again."""
    import_seeds(store, path, source)
    rows = []
    for r in read_export(path):
        raw = next(m for m in r["messages"] if m["role"] == "assistant")["content"][0]["text"]
        parsed = parse_cot(raw)
        rows.append(Generation(key=r["id"], seed_id=r["seed_id"], teacher=r["teacher"], raw=raw,
                               reasoning=parsed.reasoning, answer=parsed.answer, parse_status=parsed.status,
                               parse_reason=parsed.reason, finish_reason=r.get("finish_reason") or "stop",
                               sample_index=0))
    with store.transaction():
        store.write(rows, "INSERT OR IGNORE")
    return len(rows)


def _media_rows(store: Store, digests: set[str]) -> None:
    rows = []
    for d in sorted(digests):
        f = store.media.find(d)
        with Image.open(f) as im:
            rows.append(Media(d, f.suffix.lstrip("."), im.size[0], im.size[1], f.stat().st_size))
    store.write(rows, "INSERT OR IGNORE")
