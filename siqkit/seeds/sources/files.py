"""Readers for line-oriented question files: JSONL, CSV, and image folders.

- ``jsonl``: one JSON object per line; blank lines are skipped.
- ``csv``: a header row naming the columns, then one row per record (RFC 4180
  quoting, so a quoted cell may span lines). Every record has exactly as many cells as
  the header (fewer or more is ``bad CSV``: a short row is more often a broken quote or a
  lost separator than a meant blank; a record that spans several lines says so, since an
  unterminated quote swallows the rows after it). Every cell is a string; an empty cell
  means "no value". The image cell holds one path or a JSON array of paths
  (``["a.png", "b.png"]``).
- ``images``: a folder of images plus a questions file (``.jsonl`` or ``.csv``,
  chosen by its suffix) whose image column names files under the root. Same rules as
  the two above, except that every row must have an image.

Files are read as bytes and decoded line by line, so one line of Latin-1 in a UTF-8
file costs that line only. A line longer than ``max_line_kb`` (default 1024) is
quarantined (``line too long``) without ever being held whole, and the questions file
must be a regular file (a FIFO would block the stage). Reject and origin line numbers are physical 1-based line
numbers in the file (for CSV the header is line 1 and a record is numbered by the
line it starts on), i.e. what an editor shows.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from siqkit.records import RawSeed, Reject

from .base import (
    SourceError,
    base_fingerprint,
    digest,
    field_map,
    file_stat,
    setting,
    splits_filter,
    tree_stat,
)
from .images import image_loader
from .rows import WRONG_TYPE, RowValidator, type_name

# Reject reasons produced here (the full list is in ``siqkit.seeds.sources``).
BAD_JSON = "bad JSON"
BAD_CSV = "bad CSV"
NON_UTF8 = "non-UTF-8 text"
LINE_TOO_LONG = "line too long"

MAX_LINE_KB = 1024  # default cap on one physical line of a JSONL/CSV file

_SUFFIX_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
# A JSON escape such as "\udc80" decodes to a lone surrogate: valid JSON, but text
# that cannot be stored as UTF-8. Only lines containing one are checked closely.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _decode_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"


def label_for(path: Path, root: Path) -> str:
    """The file name as rejects and origins show it: relative to root when inside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


class TextSource:
    """A JSONL or CSV questions file, optionally an image folder's (``kind="images"``)."""

    def __init__(self, cfg: Any, kind: str):
        self.name: str = cfg.name
        self.kind = kind
        self.path = Path(cfg.path)
        if kind == "images":
            fmt = _SUFFIX_FORMAT.get(self.path.suffix.lower())
            if fmt is None:
                raise SourceError(
                    f"{self.path}: an image-folder questions file must be .jsonl or .csv"
                )
            self.fmt = fmt
        else:
            self.fmt = kind
        self.root = Path(setting(cfg, "root", self.path.parent))
        self.fields = field_map(cfg)
        self.default_split: str = setting(cfg, "split", "train")
        self.splits = splits_filter(cfg)
        self.label = label_for(self.path, self.root)
        self.max_line = int(setting(cfg, "max_line_kb", MAX_LINE_KB) * 1024)
        self._cfg = cfg

    # -- Source protocol -------------------------------------------------------------

    def describe(self) -> dict:
        rows = self._count_jsonl() if self.fmt == "jsonl" else sum(1 for _ in self._csv_rows())
        return {
            "type": self.kind,
            "path": str(self.path),
            "size_bytes": self._stat().st_size,
            "rows": rows,
            "splits": sorted(self.splits) if self.splits is not None else None,
        }

    def fingerprint(self) -> str:
        self._stat()
        return digest(
            [
                base_fingerprint(self._cfg, self.kind),
                file_stat(self.path),
                str(self.root),
                tree_stat(self.root),
            ]
        )

    def read(self) -> Iterator[RawSeed | Reject]:
        validator = RowValidator(
            self.fields,
            self.default_split,
            self.splits,
            image_loader(self._cfg, self.root),
            require_image=self.kind == "images",
        )
        rows = self._jsonl_rows() if self.fmt == "jsonl" else self._csv_rows()
        for item in rows:
            if isinstance(item, Reject):
                yield item
                continue
            line, row = item
            out = validator(row, self.label, line)
            if out is not None:
                yield out

    # -- parsing ---------------------------------------------------------------------

    def _stat(self):
        try:
            return self.path.stat()
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read source file ({exc.strerror})") from None

    def _open(self):
        if not stat.S_ISREG(self._stat().st_mode):  # checked before opening: a FIFO would block
            raise SourceError(f"{self.path}: not a regular file (a FIFO, device or socket); give the questions file itself")
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read source file ({exc.strerror})") from None

    def _lines(self, f) -> Iterator[tuple[int, bytes | None]]:
        """(line number, bytes) per physical line; None instead of the bytes of a line over
        ``max_line_kb``, which is skipped in bounded reads, never held whole."""
        lineno = 0
        while raw := f.readline(self.max_line + 1):
            lineno += 1
            if len(raw) > self.max_line and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = f.readline(1 << 20)
                yield lineno, None
                continue
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]  # editors on Windows add one
            yield lineno, raw

    def _too_long(self) -> str:
        return f"over max_line_kb={self.max_line // 1024}"

    def _count_jsonl(self) -> int:
        with self._open() as f:
            return sum(1 for _, raw in self._lines(f) if raw is None or raw.strip())

    def _jsonl_rows(self) -> Iterator[tuple[int, dict] | Reject]:
        with self._open() as f:
            for lineno, raw in self._lines(f):
                if raw is None:
                    yield Reject(self.label, lineno, None, LINE_TOO_LONG, self._too_long())
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield Reject(self.label, lineno, None, NON_UTF8, _decode_problem(raw, exc))
                    continue
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except (ValueError, RecursionError) as exc:
                    detail = f"{exc.msg} at column {exc.colno}" if hasattr(exc, "msg") else str(exc)
                    yield Reject(self.label, lineno, None, BAD_JSON, detail)
                    continue
                if not isinstance(row, dict):
                    yield Reject(
                        self.label, lineno, None, BAD_JSON, f"expected a JSON object, got {type_name(row)}"
                    )
                    continue
                if _SURROGATE_ESCAPE.search(raw):
                    try:
                        json.dumps(row, ensure_ascii=False).encode("utf-8")
                    except UnicodeEncodeError:
                        yield Reject(self.label, lineno, None, NON_UTF8, "unpaired surrogate escape")
                        continue
                yield lineno, row

    def _csv_rows(self) -> Iterator[tuple[int, dict] | Reject]:
        bad: dict[int, tuple[str, str]] = {}  # line number -> (reason, detail), filled as lines are read

        def decoded(f) -> Iterator[str]:
            for lineno, raw in self._lines(f):
                if raw is None:
                    bad[lineno] = (LINE_TOO_LONG, self._too_long())
                    yield "\n"  # an empty line keeps the parser in step; its record is rejected
                    continue
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad[lineno] = (NON_UTF8, _decode_problem(raw, exc))
                    # Keep the line (replacement chars) so the CSV parser stays in step
                    # with the file; the record it lands in is rejected below.
                    yield raw.decode("utf-8", "replace")

        with self._open() as f:
            reader = csv.reader(decoded(f))
            header = self._header(reader, bad)
            prev = reader.line_num
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    yield Reject(self.label, prev + 1, None, BAD_CSV, str(exc))
                    prev = reader.line_num
                    continue
                start, prev = prev + 1, reader.line_num
                hit = next((n for n in range(start, prev + 1) if n in bad), None)
                if hit is not None:
                    yield Reject(self.label, hit, None, *bad[hit])
                    continue
                if not any(c.strip() for c in cells):
                    continue  # blank line
                if len(cells) != len(header):
                    span = f"; the record spans lines {start}-{prev}: an unterminated quote?" if prev > start else ""
                    yield Reject(
                        self.label, start, None, BAD_CSV, f"{len(cells)} cells, header has {len(header)}{span}"
                    )
                    continue
                row = dict(zip(header, cells))
                problem = self._image_cell(row)
                if problem is not None:
                    yield Reject(self.label, start, self.fields.get("image"), *problem)
                    continue
                yield start, row

    def _header(self, reader, bad: dict[int, str]) -> list[str]:
        try:
            header = next(reader)
            while not any(c.strip() for c in header):
                header = next(reader)
        except StopIteration:
            raise SourceError(f"{self.path}: empty CSV file, no header row") from None
        except csv.Error as exc:
            raise SourceError(f"{self.path}: unreadable CSV header ({exc})") from None
        if bad:
            reason, detail = next(iter(bad.values()))
            what = "is not UTF-8 text" if reason == NON_UTF8 else f"line is too long ({detail})"
            raise SourceError(f"{self.path}: CSV header {what}")
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise SourceError(f"{self.path}: duplicate CSV column(s) {', '.join(dupes)}")
        # A whole file without its question column is a mapping mistake, not bad rows.
        needed = [self.fields["question"]] + ([self.fields["image"]] if self.kind == "images" else [])
        for column in needed:
            if column not in header:
                raise SourceError(
                    f"{self.path}: no column '{column}' (columns: {', '.join(header)})"
                )
        return header

    def _image_cell(self, row: dict) -> tuple[str, str] | None:
        """Parse a JSON-array image cell in place; return (reason, detail) if it is bad."""
        column = self.fields.get("image")
        cell = row.get(column) if column else None
        if not cell or not cell.lstrip().startswith("["):
            return None
        try:
            value = json.loads(cell)
        except ValueError as exc:
            return BAD_JSON, f"image list: {exc}"
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return WRONG_TYPE, "expected a JSON array of paths"
        row[column] = value
        return None
