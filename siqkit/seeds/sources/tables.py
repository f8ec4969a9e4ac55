"""Readers for columnar data: a Parquet file, and a Hugging Face ``save_to_disk`` folder.

Rows are read in small batches (images may be embedded, so a batch can be large)
and handed to the shared :class:`~siqkit.seeds.sources.rows.RowValidator`. Here the
image column may also hold raw bytes or HF Image structs ``{"bytes", "path"}``;
a struct path, like any path, is taken relative to the dataset root. Reject and
origin numbers are 1-based row numbers (per split for a ``DatasetDict``).

A missing question column makes the whole source unusable and raises
:class:`SourceError`: it is a ``fields`` mapping mistake, not thousands of bad rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from siqkit.records import RawSeed, Reject

from .base import (
    SourceError,
    base_fingerprint,
    digest,
    field_map,
    file_stat,
    setting,
    splits_filter,
    tree_size,
    tree_stat,
)
from .files import label_for
from .images import image_loader
from .rows import RowValidator

_BATCH_ROWS = 64  # rows may carry embedded images of a few MB each


def _check_columns(path: Path, columns: list[str], question: str, where: str = "") -> None:
    if question not in columns:
        raise SourceError(f"{path}{where}: no column '{question}' (columns: {', '.join(columns)})")


def _split_names(values: list, default: str) -> set[str]:
    """Distinct split names of a split column's values (empty/null -> the default)."""
    # Non-string values are rows the validator rejects as "wrong type": no split.
    return {(v or "").strip() or default for v in values if v is None or isinstance(v, str)}


class ParquetSource:
    """One Parquet file; image cells are paths, lists of paths, bytes or HF Image structs."""

    def __init__(self, cfg: Any):
        self.name: str = cfg.name
        self.path = Path(cfg.path)
        self.root = Path(setting(cfg, "root", self.path.parent))
        self.fields = field_map(cfg)
        self.default_split: str = setting(cfg, "split", "train")
        self.splits = splits_filter(cfg)
        self.label = label_for(self.path, self.root)
        self._cfg = cfg

    def _file(self) -> pq.ParquetFile:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: source file not found")
        try:
            return pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.path}: not a Parquet file ({exc})") from None

    def describe(self) -> dict:
        column = self.fields.get("split")
        with self._file() as pf:
            rows = pf.metadata.num_rows
            if column and column in pf.schema_arrow.names:
                # Reading one string column is cheap next to the images.
                values = pf.read(columns=[column]).column(0).unique().to_pylist()
                splits = sorted(_split_names(values, self.default_split))
            else:
                splits = [self.default_split]
        if self.splits is not None:
            splits = [s for s in splits if s in self.splits]
        return {
            "type": "parquet",
            "path": str(self.path),
            "size_bytes": self.path.stat().st_size,
            "rows": rows,
            "splits": splits,
        }

    def fingerprint(self) -> str:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: source file not found")
        return digest(
            [
                base_fingerprint(self._cfg, "parquet"),
                file_stat(self.path),
                str(self.root),
                tree_stat(self.root),
            ]
        )

    def read(self) -> Iterator[RawSeed | Reject]:
        validator = RowValidator(self.fields, self.default_split, self.splits, image_loader(self._cfg, self.root))
        with self._file() as pf:
            _check_columns(self.path, pf.schema_arrow.names, self.fields["question"])
            row = 0
            batches = pf.iter_batches(batch_size=_BATCH_ROWS)
            while True:
                try:
                    batch = next(batches, None)
                except (OSError, pa.ArrowException) as exc:  # a corrupt page mid-file
                    raise SourceError(f"{self.path}: unreadable after row {row} ({exc})") from None
                if batch is None:
                    return
                for record in batch.to_pylist():
                    row += 1
                    out = validator(record, self.label, row)
                    if out is not None:
                        yield out


class HfDiskSource:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``.

    A DatasetDict's split names are the seeds' splits (a split column inside is
    ignored); a single Dataset uses its split column or the default split.
    """

    def __init__(self, cfg: Any):
        self.name: str = cfg.name
        self.path = Path(cfg.path)
        self.root = Path(setting(cfg, "root", self.path))
        self.fields = field_map(cfg)
        self.default_split: str = setting(cfg, "split", "train")
        self.splits = splits_filter(cfg)
        self._cfg = cfg

    def _parts(self) -> list[tuple[str | None, Any]]:
        """(split or None, Dataset) pairs, unwanted DatasetDict splits left out."""
        import datasets  # slow to import; only sources that need it pay

        if not self.path.is_dir():
            raise SourceError(f"{self.path}: dataset folder not found")
        try:
            loaded = datasets.load_from_disk(str(self.path))
        except Exception as exc:  # datasets raises FileNotFoundError, ValueError, JSON errors...
            raise SourceError(
                f"{self.path}: not a Hugging Face save_to_disk folder ({str(exc).splitlines()[0]})"
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            return [(k, v) for k, v in loaded.items() if self.splits is None or k in self.splits]
        return [(None, loaded)]

    def describe(self) -> dict:
        parts = self._parts()
        splits: set[str] = set()
        column = self.fields.get("split")
        for split, ds in parts:
            if split is not None:
                splits.add(split)
            elif column and column in ds.column_names:
                splits.update(_split_names(ds.unique(column), self.default_split))
            else:
                splits.add(self.default_split)
        if self.splits is not None:
            splits &= self.splits
        return {
            "type": "hf_disk",
            "path": str(self.path),
            "size_bytes": tree_size(self.path),
            "rows": sum(ds.num_rows for _, ds in parts),
            "splits": sorted(splits),
        }

    def fingerprint(self) -> str:
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: dataset folder not found")
        parts: list = [base_fingerprint(self._cfg, "hf_disk"), str(self.path), tree_stat(self.path)]
        if self.root.resolve() != self.path.resolve():
            parts += [str(self.root), tree_stat(self.root)]
        return digest(parts)

    def read(self) -> Iterator[RawSeed | Reject]:
        loader = image_loader(self._cfg, self.root)  # shared across splits: same images, same verdicts
        validator = RowValidator(self.fields, self.default_split, self.splits, loader)
        parts = self._parts()
        for split, ds in parts:  # all splits checked before the first row is yielded
            where = f" split '{split}'" if split else ""
            _check_columns(self.path, ds.column_names, self.fields["question"], where)
        for split, ds in parts:
            label = f"{self.path.name}/{split}" if split else self.path.name
            row = 0
            # Arrow format hands back raw Image structs instead of decoded PIL images.
            for batch in ds.with_format("arrow").iter(batch_size=_BATCH_ROWS):
                for record in batch.to_pylist():
                    row += 1
                    out = validator(record, label, row, forced_split=split)
                    if out is not None:
                        yield out
