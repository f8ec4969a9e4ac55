"""The standalone commands behind ``siqkit dedup`` and ``siqkit subset`` (plain functions).

``dedup_command`` works on any JSONL or Parquet file: it removes exact and near-duplicate
rows by one text column and writes the kept rows with all their columns, in input order.
JSONL lines are copied byte for byte; Parquet keeps its schema. It always prints the
similarity histogram of the candidate pairs and what other thresholds would remove, so a
``--dry-run`` is enough to choose a threshold. Memory stays bounded: texts are read in
batches, twice (a JSONL file's column is first copied to a temporary Arrow file), and only a
few numbers per row are held.

``subset_command`` exports a filtered view of a run's curated samples (see
:mod:`siqkit.curate.subsets`) to a folder, in the training format of
:mod:`siqkit.curate.datasets`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from siqkit.curate.dedup import DedupSettings, find_duplicates, format_report
from siqkit.curate.datasets import export_samples
from siqkit.curate.subsets import subset_keys
from siqkit.errors import SiqkitError
from siqkit.store import Store

BATCH = 4096
JSONL = (".jsonl", ".json", ".ndjson")


class DataError(SiqkitError):
    """An input file for a standalone command cannot be used as asked. Exit code 1."""


class UsageError(SiqkitError):
    """An option value is impossible. Exit code 2, like other usage errors."""

    exit_code = 2


def _kind(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise DataError(f"{path}: {what} must be .jsonl (JSON lines) or .parquet, got '{suffix or path.name}'")


def _text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def dedup_command(input: Path, output: Path | None, column: str, threshold: float = 0.8,  # noqa: A002
                  num_perm: int = 128, ngram: int = 5, dry_run: bool = False,
                  echo: Callable[[str], None] = print) -> dict:
    """Deduplicate ``input`` by ``column`` into ``output``; print and return the counts."""
    input, output = Path(input), Path(output) if output is not None else None
    if not 0 < threshold <= 1:
        raise UsageError(f"--threshold {threshold}: must be in (0, 1]")
    if num_perm < 2:
        raise UsageError(f"--num-perm {num_perm}: must be at least 2")
    if not 1 <= ngram <= 64:
        raise UsageError(f"--ngram {ngram}: must be between 1 and 64")
    if not input.is_file():
        raise DataError(f"{input}: file not found")
    kind = _kind(input, "the input")
    if output is None and not dry_run:
        raise UsageError("--out: required (or --dry-run to only see what would be removed)")
    if output is not None:
        _kind(output, "--out")
        if output.resolve() == input.resolve():
            raise DataError(f"--out {output}: must differ from the input file")
    settings = DedupSettings(threshold=threshold, num_perm=num_perm, ngram=ngram, batch_size=BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        batches, n = (_parquet_texts(input, column) if kind == "parquet"
                      else _jsonl_texts(input, column, Path(tmp) / "texts.arrow"))
        result = find_duplicates(batches, settings)
    for line in format_report(result, "rows"):
        echo(line)
    s = result.summary()
    counts = {"input": str(input), "rows": n, "kept": s["kept"], "removed": s["removed"],
              "exact_removed": s["exact_removed"], "near_removed": s["near_removed"],
              "output": None if dry_run else str(output), "histogram": s["histogram"], "thresholds": s["thresholds"]}
    if not dry_run:
        _write_kept(input, kind, output, result.keep)
        echo(f"kept {s['kept']:,} of {n:,} rows, removed {s['removed']:,} -> {output}")
    else:
        echo(f"dry run: would keep {s['kept']:,} of {n:,} rows and remove {s['removed']:,}; nothing written")
    return counts


def _parquet_texts(path: Path, column: str):
    try:
        pf = _parquet(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if column not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column '{column}'; columns are {', '.join(pf.schema_arrow.names)}")

    def batches() -> Iterator[list]:
        for b in pf.iter_batches(BATCH, columns=[column]):
            col = b.column(0)
            yield col.to_pylist() if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) \
                else [_text(v) for v in col.to_pylist()]

    return batches, pf.metadata.num_rows


def _parquet(path: Path) -> pq.ParquetFile:
    # without pre-buffering, memory holds a batch, not the whole file's column chunks
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


def _jsonl_texts(path: Path, column: str, cache: Path):
    """Parse the file once; keep the column in an Arrow file that both passes read."""
    schema = pa.schema([("text", pa.string())])
    n, seen = 0, False
    with ipc.new_file(str(cache), schema) as writer, open(path, "rb") as f:
        buf: list = []
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines are not rows (and are not written out)
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            seen |= column in row
            buf.append(_text(row.get(column)))
            n += 1
            if len(buf) == BATCH:
                writer.write_batch(pa.record_batch([pa.array(buf, pa.string())], schema=schema))
                buf = []
        if buf:
            writer.write_batch(pa.record_batch([pa.array(buf, pa.string())], schema=schema))
    if n and not seen:
        raise DataError(f"{path}: no row has a '{column}' field")

    def batches() -> Iterator[list]:
        with ipc.open_file(str(cache)) as reader:
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i).column(0).to_pylist()

    return batches, n


def _write_kept(input: Path, kind: str, output: Path, keep: np.ndarray) -> None:  # noqa: A002
    out_kind = _kind(output, "--out")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.unlink(missing_ok=True)
    if kind == "jsonl" and out_kind == "jsonl":
        with open(input, "rb") as f, open(tmp, "wb") as out:
            i = 0
            for line in f:
                if not line.strip():
                    continue
                if keep[i]:
                    out.write(line if line.endswith(b"\n") else line + b"\n")
                i += 1
    else:
        writer = None
        try:
            start = 0
            for table in _tables(input, kind):
                part = table.filter(pa.array(keep[start: start + len(table)]))
                start += len(table)
                if out_kind == "parquet":
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, part.schema)
                    writer.write_table(part.cast(writer.schema))
                else:
                    with open(tmp, "a", encoding="utf-8") as out:
                        out.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in part.to_pylist())
            if writer is None and out_kind == "parquet":
                pq.write_table(pa.table({}), tmp)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"{input}: rows do not fit one {out_kind} schema ({e}); write {kind} instead") from None
        finally:
            if writer is not None:
                writer.close()
    tmp.replace(output)


def _tables(path: Path, kind: str) -> Iterator[pa.Table]:
    if kind == "parquet":
        for b in _parquet(path).iter_batches(BATCH):
            yield pa.Table.from_batches([b])
        return
    rows: list = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) == BATCH:
                yield pa.Table.from_pylist(rows)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows)


def subset_command(run_dir: Path, out: Path, difficulty: list[str] | None = None, labels: list[str] | None = None,
                   teachers: list[str] | None = None, splits: list[str] | None = None, max: int | None = None,  # noqa: A002
                   formats: list[str] = ("jsonl", "parquet", "llamafactory"), echo: Callable[[str], None] = print) -> dict:
    """Export the curated samples of ``run_dir`` that match the filters to ``out``."""
    for d in difficulty or []:
        if d not in ("easy", "medium", "hard"):
            raise UsageError(f"--difficulty {d}: expected easy, medium or hard")
    if max is not None and max < 1:
        raise UsageError(f"--max {max}: must be at least 1")
    store = Store.open(run_dir, read_only=True)
    try:
        keys = subset_keys(store, difficulty, labels, teachers, splits, max)
        flt = {"difficulty": difficulty, "labels": labels, "teachers": teachers, "splits": splits, "max": max}
        export = (((store.last_stage_runs().get("curate") or {}).get("settings") or {}).get("curate") or {}).get(
            "export") or {}  # the recipe's card license and language, as the curate stage used them
        counts = export_samples(store, keys, Path(out), list(formats), True,
                                {"source": f"siqkit subset {run_dir}", "subset": flt,
                                 "license": export.get("license"), "language": export.get("language")})
    finally:
        store.close()
    echo(f"{len(keys):,} samples -> {out} (" + ", ".join(f"{k} {v:,}" for k, v in counts["difficulty"].items())
         + ")" if keys else f"no curated sample matches; wrote an empty subset to {out}")
    return counts
