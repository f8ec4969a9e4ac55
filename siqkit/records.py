"""The records that flow between stages.

A source yields :class:`RawSeed` (a validated row, image bytes still in hand) or
:class:`Reject` (a row that could not be used, with where and why). The seeds stage
turns a RawSeed into a :class:`Seed` by storing its images content-addressed and
hashing its content into a stable id. The store's ``seeds`` table has exactly the
columns of :class:`Seed`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass
class RawSeed:
    """A validated row from a source, before its images are stored."""

    question: str
    split: str
    answer: str | None = None
    images: list[bytes] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    origin: str = ""  # "file:line" (1-based line or row), for lineage and error messages


@dataclass
class Reject:
    """A row quarantined by a source: which file, which line or row, which field, why."""

    file: str
    line: int | None
    field: str | None
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = f" field '{self.field}'" if self.field else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{where}:{what} {self.reason}{extra}".replace(": ", ": ", 1)


@dataclass(frozen=True)
class Seed:
    """A seed in the pool: one question (with images) that teachers will answer."""

    id: str
    source: str
    split: str
    question: str
    answer: str | None
    images: tuple[str, ...]  # media hashes, in order of appearance
    metadata: dict
    origin: str


def seed_id(question: str, image_hashes: list[str] | tuple[str, ...]) -> str:
    """Stable content id: the same question on the same images always gets the same id."""
    payload = json.dumps([question, list(image_hashes)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]
