"""Turning one parsed row (a dict, whatever file it came from) into a RawSeed or a Reject.

Every file reader parses its format into plain Python dicts and hands them to a
:class:`RowValidator`, so that JSONL, CSV, Parquet and Hugging Face rows obey exactly
the same rules:

- question: required, a non-blank string (surrounding whitespace is stripped); a NUL
  character in the question, answer or caption quarantines the row;
- answer: optional; numbers become strings (``3.0`` -> ``"3"``), booleans "yes"/"no",
  an empty string or NaN counts as no answer;
- split: the split column if present and non-empty, else the source's default split;
  rows of splits not asked for are skipped silently (they are not errors);
- caption: optional string, stored as ``metadata["caption"]``;
- image: nothing (text-only seed), one reference or a list of them; a reference is a
  path relative to the dataset root, raw bytes, or an HF Image struct
  ``{"bytes": ..., "path": ...}`` (bytes win when both are present);
- every other column goes into ``metadata``, made JSON-safe.

Reject ``field`` names the column as it is spelled in the data, so the user can find it.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
from typing import Any

from siqkit.records import RawSeed, Reject

from .images import ImageLoader, Problem

# Reject reasons produced here (the full list is in ``siqkit.seeds.sources``).
MISSING = "missing field"
WRONG_TYPE = "wrong type"
EMPTY_QUESTION = "empty question"
NUL_CHARACTER = "NUL character"  # text no tokenizer or terminal handles sanely; usually a binary file

_TYPE_NAMES = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    bytes: "bytes",
    list: "list",
    tuple: "list",
    dict: "object",
}


def type_name(value: Any) -> str:
    """A user-facing name for the type of ``value`` ("string", "int", "object"...)."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def jsonable(value: Any) -> Any:
    """``value`` made JSON-serialisable for ``RawSeed.metadata``.

    Dates become ISO strings, decimals and numpy scalars plain numbers, NaN/inf None
    (JSON has no NaN), and binary cells a "<N bytes>" placeholder: image-sized blobs
    do not belong in metadata, but the user should see that the column was there.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return jsonable(float(value))
    if hasattr(value, "item"):  # numpy scalar
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def answer_text(value: Any) -> str | None | Problem:
    """The answer as a string, None when absent; a wrong-type marker otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal):
        return answer_text(float(value))
    return Problem(WRONG_TYPE, f"expected string or number, got {type_name(value)}")


class RowValidator:
    """Validates rows of one source against its field mapping and split settings.

    ``require_image`` is set for image-folder sources, where a row without an image
    is a mistake rather than a text-only seed.
    """

    def __init__(
        self,
        fields: dict[str, str | None],
        default_split: str,
        splits: frozenset[str] | None,
        images: ImageLoader,
        require_image: bool = False,
    ):
        self.fields = fields
        self.default_split = default_split
        self.splits = splits
        self.images = images
        self.require_image = require_image
        self._mapped = {c for c in fields.values() if c}

    def split_of(self, row: dict, forced: str | None = None) -> str | Reject | None:
        """Split of the row (``forced`` for DatasetDict splits); None = not wanted."""
        column = self.fields.get("split")
        split = forced
        if split is None:
            value = row.get(column) if column else None
            if value is None or value == "":
                split = self.default_split
            elif isinstance(value, str):
                split = value.strip() or self.default_split
            else:
                return Reject("", None, column, WRONG_TYPE, f"expected string, got {type_name(value)}")
        if self.splits is not None and split not in self.splits:
            return None
        return split

    def __call__(self, row: dict, file: str, line: int, forced_split: str | None = None):
        """RawSeed, Reject, or None for a row of an unwanted split."""
        split = self.split_of(row, forced_split)
        if split is None:
            return None
        if isinstance(split, Reject):
            split.file, split.line = file, line
            return split

        qcol = self.fields["question"]
        question = row.get(qcol)
        if question is None:
            return Reject(file, line, qcol, MISSING, "" if qcol not in row else "null")
        if not isinstance(question, str):
            return Reject(file, line, qcol, WRONG_TYPE, f"expected string, got {type_name(question)}")
        question = question.strip()
        if not question:
            return Reject(file, line, qcol, EMPTY_QUESTION)
        if "\0" in question:
            return Reject(file, line, qcol, NUL_CHARACTER, f"at character {question.index(chr(0)) + 1}")

        acol = self.fields.get("answer")
        answer = answer_text(row.get(acol)) if acol else None
        if isinstance(answer, Problem):
            return Reject(file, line, acol, answer.reason, answer.detail)
        if answer is not None and "\0" in answer:
            return Reject(file, line, acol, NUL_CHARACTER, f"at character {answer.index(chr(0)) + 1}")

        metadata = {k: jsonable(v) for k, v in row.items() if k not in self._mapped}
        ccol = self.fields.get("caption")
        caption = row.get(ccol) if ccol else None
        if caption is not None:
            if not isinstance(caption, str):
                return Reject(file, line, ccol, WRONG_TYPE, f"expected string, got {type_name(caption)}")
            if "\0" in caption:
                return Reject(file, line, ccol, NUL_CHARACTER, f"at character {caption.index(chr(0)) + 1}")
            if caption.strip():
                metadata["caption"] = caption.strip()

        images = self._images(row, file, line)
        if isinstance(images, Reject):
            return images
        return RawSeed(
            question=question,
            split=split,
            answer=answer,
            images=images,
            metadata=metadata,
            origin=f"{file}:{line}",
        )

    def _images(self, row: dict, file: str, line: int) -> list[bytes] | Reject:
        icol = self.fields.get("image")
        value = row.get(icol) if icol else None
        refs = value if isinstance(value, (list, tuple)) else ([] if value in (None, "") else [value])
        if not refs and self.require_image:
            return Reject(file, line, icol, MISSING, "" if icol not in row else "no image")
        out = []
        for ref in refs:
            got = self._one(ref)
            if isinstance(got, Problem):
                return Reject(file, line, icol, got.reason, got.detail)
            out.append(got)
        return out

    def _one(self, ref: Any) -> bytes | Problem:
        if isinstance(ref, dict):  # HF Image struct: embedded bytes win over the path
            data, path = ref.get("bytes"), ref.get("path")
            if data:
                return self._one(data)
            if path:
                return self._one(path)
            return Problem(MISSING, "image struct has neither bytes nor path")
        if isinstance(ref, str):
            if not ref.strip():
                return Problem(WRONG_TYPE, "empty image path")
            return self.images.load_path(ref)
        if isinstance(ref, (bytes, bytearray, memoryview)):
            return self.images.load_bytes(bytes(ref))
        return Problem(WRONG_TYPE, f"expected path, bytes or list, got {type_name(ref)}")
