"""What every seed source shares: the :class:`Source` protocol, :class:`SourceError`,
reading the source config, and the helpers behind ``describe`` and ``fingerprint``.

A source config is any object with the documented attributes (the recipe's pydantic
model, or a ``SimpleNamespace`` in tests); attributes a source does not need are never
read, and missing optional ones take the defaults below.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import siqkit
from siqkit.errors import SourceError  # noqa: F401  (re-exported for the readers)
from siqkit.records import RawSeed, Reject
from siqkit.store import STORE_FILE

DEFAULT_FIELDS: dict[str, str] = {
    "question": "question",
    "answer": "answer",
    "image": "image",
    "split": "split",
    "caption": "caption",
}
"""Our field name -> column name in the data, unless the recipe's ``fields`` says otherwise."""


@runtime_checkable
class Source(Protocol):
    """A reader of seed rows. ``read`` never raises for a bad row: it yields a Reject."""

    name: str

    def describe(self) -> dict:
        """Cheap summary for the plan table: type, path, size_bytes, rows, splits."""
        ...

    def fingerprint(self) -> str:
        """A digest that changes when the config or the input files change."""
        ...

    def read(self) -> Iterator[RawSeed | Reject]:
        """Every row of the source, validated, in file order."""
        ...


def setting(cfg: Any, name: str, default: Any = None) -> Any:
    """``cfg.name``, or ``default`` when the attribute is absent or None."""
    value = getattr(cfg, name, None)
    return default if value is None else value


def field_map(cfg: Any) -> dict[str, str | None]:
    """The recipe's ``fields`` laid over the defaults; a field mapped to None is off."""
    fields: dict[str, str | None] = dict(DEFAULT_FIELDS)
    fields.update(dict(setting(cfg, "fields", {})))
    return fields


def splits_filter(cfg: Any) -> frozenset[str] | None:
    """The splits to keep, or None for all."""
    splits = setting(cfg, "splits")
    return None if splits is None else frozenset(splits)


def digest(parts: Any) -> str:
    """A short stable digest of JSON-able ``parts`` (sorted keys, so dict order is moot)."""
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def file_stat(path: Path) -> list:
    """[name, size, mtime_ns] of a file: enough to notice it was replaced or edited."""
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def tree_stat(root: Path) -> str:
    """A digest over (relative path, size, mtime_ns) of every file under ``root``.

    Hidden entries (``.git``, ``.cache``...) are skipped: they are not data; so are siqkit
    run folders (a folder holding a ``store.duckdb``), which change on every run. This is
    what lets a rerun notice an image replaced in place without the questions file
    changing; it costs one ``stat`` per file, no reads.
    """
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        if STORE_FILE in filenames and dirpath != str(root):
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:  # dangling symlink: rows pointing at it are rejected anyway
                continue
            rel = os.path.relpath(full, root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def tree_size(root: Path) -> int:
    """Total bytes of the files under ``root`` (for ``describe``)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def base_fingerprint(cfg: Any, kind: str) -> dict:
    """The config part of a fingerprint, common to every source type."""
    return {
        "siqkit": siqkit.__version__,
        "type": kind,
        "fields": field_map(cfg),
        "split": setting(cfg, "split", "train"),
        "splits": sorted(splits_filter(cfg) or []) or None,
        # the caps decide which rows are quarantined, so changing one re-reads the source
        "limits": [getattr(cfg, k, None) for k in ("max_line_kb", "max_image_mb", "max_image_pixels")],
    }
