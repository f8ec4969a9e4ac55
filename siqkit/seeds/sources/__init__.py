"""Seed-pool sources: readers that turn a recipe's ``seeds`` entries into RawSeeds.

``build_source(cfg, seed)`` picks the reader for ``cfg.type``:

========== ================================================== ==================
type       reads                                              module
========== ================================================== ==================
jsonl      one JSON object per line                           ``files``
csv        header row + rows                                  ``files``
images     image folder + a .jsonl/.csv questions file        ``files``
parquet    one Parquet file (image paths, bytes, HF structs)  ``tables``
hf_disk    a ``save_to_disk`` folder (Dataset or DatasetDict) ``tables``
easy_vqa   the easy-VQA data inside its pip package           ``easyvqa``
digits     arithmetic on composed handwritten-digit images    ``digits``
========== ================================================== ==================

Every source follows :class:`Source`. ``read`` never raises for a bad row; it yields a
:class:`~siqkit.records.Reject` whose ``reason`` is one of :data:`REJECT_REASONS` and
goes on. A source raises :class:`SourceError` only when it cannot be used at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import DEFAULT_FIELDS, Source, SourceError, setting
from .files import BAD_CSV, BAD_JSON, LINE_TOO_LONG, NON_UTF8, TextSource
from .images import NOT_FOUND, NOT_REGULAR, OUTSIDE_ROOT, TOO_LARGE, TRUNCATED, UNREADABLE
from .rows import EMPTY_QUESTION, MISSING, NUL_CHARACTER, WRONG_TYPE

__all__ = ["DEFAULT_FIELDS", "REJECT_REASONS", "SOURCE_TYPES", "Source", "SourceError", "build_source"]

REJECT_REASONS = (
    BAD_JSON,
    BAD_CSV,
    NON_UTF8,
    LINE_TOO_LONG,
    MISSING,
    WRONG_TYPE,
    EMPTY_QUESTION,
    NUL_CHARACTER,
    UNREADABLE,
    TRUNCATED,
    NOT_FOUND,
    OUTSIDE_ROOT,
    NOT_REGULAR,
    TOO_LARGE,
)
"""Every ``Reject.reason`` a source can produce."""

SOURCE_TYPES = ("jsonl", "csv", "parquet", "images", "hf_disk", "easy_vqa", "digits")
_NEEDS_FILE = {"jsonl", "csv", "parquet", "images"}


def build_source(cfg: Any, seed: int) -> Source:
    """The reader for one seeds entry of a recipe.

    ``seed`` drives generated sources (``digits``); readers of existing data ignore
    it. Raises :class:`SourceError` for an unknown type or a missing input, so that
    ``siqkit check`` reports it before anything runs.
    """
    kind = setting(cfg, "type")
    name = setting(cfg, "name", kind)
    if kind not in SOURCE_TYPES:
        raise SourceError(f"seeds '{name}': unknown source type {kind!r} (one of {', '.join(SOURCE_TYPES)})")
    path = setting(cfg, "path")
    if kind in _NEEDS_FILE or kind == "hf_disk":  # fail in `siqkit check`, not mid-run
        if path is None:
            raise SourceError(f"seeds '{name}': type '{kind}' needs a path")
        path = Path(path)
        if kind == "hf_disk" and not path.is_dir():
            raise SourceError(f"{path}: dataset folder not found (seeds '{name}')")
        if kind in _NEEDS_FILE and not path.is_file():
            raise SourceError(f"{path}: source file not found (seeds '{name}')")
        root = setting(cfg, "root")
        if root is not None and not Path(root).is_dir():
            raise SourceError(f"{root}: dataset root folder not found (seeds '{name}')")

    # Heavier readers are imported only when a recipe uses them.
    if kind in ("jsonl", "csv", "images"):
        return TextSource(cfg, kind)
    if kind == "parquet":
        from .tables import ParquetSource

        return ParquetSource(cfg)
    if kind == "hf_disk":
        from .tables import HfDiskSource

        return HfDiskSource(cfg)
    if kind == "easy_vqa":
        from .easyvqa import EasyVqaSource

        return EasyVqaSource(cfg)
    from .digits import DigitsSource

    return DigitsSource(cfg, seed)
