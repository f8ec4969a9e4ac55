"""The records that flow between stages, and the run store's tables they define.

A source yields :class:`RawSeed` (a validated row, image bytes still in hand) or
:class:`Reject` (a row that could not be used, with where and why). Everything after that
is a *table record*: a dataclass whose fields, in order, are its table's columns, each with
its DuckDB type (:func:`column`). A record class is the single definition of its table —
the store's DDL (:data:`TABLES`, applied by :mod:`siqkit.store`), its inserts
(:meth:`Record.row`, :meth:`siqkit.store.Store.write`), its reads (:meth:`Record.select`,
:meth:`siqkit.store.Store.read`) and ``siqkit inspect --trace`` all derive from it, so a new
column is one new field (plus, since the store's schema changed, a version bump and a
migration in :mod:`siqkit.store`; a test says when one is missing).

The records at the stage boundaries:

=======================  ==============  =================================================
record                   table           written by
=======================  ==============  =================================================
:class:`Seed`            ``seeds``       the seeds stage (one question, its images)
:class:`Generation`      ``generations`` the generate stage (one teacher sample)
:class:`Annotation`      ``annotations`` the annotate stage (checks, labels, difficulty)
:class:`Curation`        ``curation``    the curate stage (kept, or dropped and why)
:class:`EvalOutput`      ``eval_outputs`` evaluation (the student's answer to a held-out seed)
=======================  ==============  =================================================

The curated export's row (the training contract) is :class:`siqkit.curate.datasets.ExportRow`,
a record of the same kind whose fields name the store columns they come from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Sequence, TypeVar

R = TypeVar("R", bound="Record")


# -- before the store: a source's rows --------------------------------------------------


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


def seed_id(question: str, image_hashes: list[str] | tuple[str, ...]) -> str:
    """Stable content id: the same question on the same images always gets the same id."""
    payload = json.dumps([question, list(image_hashes)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


# -- table records ------------------------------------------------------------------------


def column(sql: str, default: Any = None, **kw: Any) -> Any:
    """A record field that is a table column of DuckDB type ``sql`` (with its constraints,
    e.g. ``"VARCHAR NOT NULL"``); ``default`` when the writer leaves it out. A ``JSON``
    column holds any JSON-able value: it is serialised on write and parsed on read."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"sql": sql, **kw})
    return field(default=default, metadata={"sql": sql, **kw})


class Record:
    """A dataclass whose fields are the columns of table :attr:`TABLE`, in order."""

    TABLE: ClassVar[str]
    CONSTRAINTS: ClassVar[tuple[str, ...]] = ()  # table constraints, e.g. a composite primary key
    COMMENT: ClassVar[str] = ""  # the ``--`` line above the table in the DDL

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)  # type: ignore[arg-type]

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in cls.fields()]

    @classmethod
    def ddl(cls) -> str:
        parts = [f"{f.name} {f.metadata['sql']}" for f in cls.fields()] + list(cls.CONSTRAINTS)
        comment = "".join(f"-- {line}\n" for line in cls.COMMENT.splitlines())
        return f"{comment}CREATE TABLE IF NOT EXISTS {cls.TABLE} ({', '.join(parts)});"

    @classmethod
    def _json(cls) -> list[bool]:
        return [f.metadata["sql"].split()[0] == "JSON" for f in cls.fields()]

    def row(self) -> tuple:
        """The column values, in order, as DuckDB takes them (JSON columns serialised)."""
        return tuple(json.dumps(v, ensure_ascii=False, default=str) if j and v is not None and not isinstance(v, str)
                     else v for v, j in zip((getattr(self, c) for c in self.columns()), self._json()))

    @classmethod
    def select(cls, alias: str = "") -> str:
        """The SELECT list of every column (``alias.col``), in order, for :meth:`from_row`."""
        return ", ".join(f"{alias}.{c}" if alias else c for c in cls.columns())

    @classmethod
    def from_row(cls: type[R], row: Sequence) -> R:
        """A record from the values of :meth:`select` (JSON columns parsed)."""
        values = [json.loads(v) if j and isinstance(v, str) else v for v, j in zip(row, cls._json())]
        return cls(*values)

    @classmethod
    def from_rows(cls: type[R], rows: Iterable[Sequence]) -> list[R]:
        return [cls.from_row(r) for r in rows]


# bookkeeping ------------------------------------------------------------------------------


@dataclass
class Meta(Record):
    TABLE = "meta"
    key: str = column("VARCHAR PRIMARY KEY")
    value: str | None = column("VARCHAR")


@dataclass
class StageRun(Record):
    TABLE = "stage_runs"
    COMMENT = "one row per stage execution: its resolved settings and its counts"
    id: int | None = column("BIGINT PRIMARY KEY DEFAULT nextval('stage_run_id')")
    stage: str = column("VARCHAR NOT NULL")
    status: str = column("VARCHAR NOT NULL")  # running | done | failed | interrupted
    started_at: Any = column("TIMESTAMP NOT NULL")
    finished_at: Any = column("TIMESTAMP")
    settings: Any = column("JSON")
    counts: Any = column("JSON")
    siqkit_version: str | None = column("VARCHAR")
    error: str | None = column("VARCHAR")


@dataclass
class Media(Record):
    TABLE = "media"
    COMMENT = "images, stored once under media/ by the sha256 of their bytes"
    hash: str = column("VARCHAR PRIMARY KEY")
    format: str | None = column("VARCHAR")
    width: int | None = column("INTEGER")
    height: int | None = column("INTEGER")
    size_bytes: int | None = column("BIGINT")


# seeds ------------------------------------------------------------------------------------


@dataclass
class Seed(Record):
    """A seed in the pool: one question (with images) that teachers will answer."""

    TABLE = "seeds"
    COMMENT = "the seed pool, and the pool selection flag"
    id: str = column("VARCHAR PRIMARY KEY")
    source: str = column("VARCHAR NOT NULL")
    split: str = column("VARCHAR NOT NULL")
    question: str = column("VARCHAR NOT NULL")
    answer: str | None = column("VARCHAR")
    images: list[str] = column("VARCHAR[]", [])  # media hashes, in order of appearance
    metadata: dict = column("JSON", {})
    origin: str | None = column("VARCHAR")
    selected: bool = column("BOOLEAN NOT NULL DEFAULT TRUE", True)


@dataclass
class SourceRun(Record):
    TABLE = "source_runs"
    COMMENT = "which version of each seed source is fully ingested (for skipping on rerun)"
    source: str = column("VARCHAR PRIMARY KEY")
    fingerprint: str | None = column("VARCHAR")
    finished_at: Any = column("TIMESTAMP")
    counts: Any = column("JSON")


@dataclass
class Quarantine(Record):
    TABLE = "quarantine"
    COMMENT = "malformed input rows, with where and why"
    stage: str = column("VARCHAR NOT NULL")
    source: str | None = column("VARCHAR")
    file: str | None = column("VARCHAR")
    line: int | None = column("INTEGER")
    field: str | None = column("VARCHAR")
    reason: str = column("VARCHAR NOT NULL")
    detail: str | None = column("VARCHAR")


@dataclass
class Drop(Record):
    TABLE = "drops"
    COMMENT = "items a stage removed on purpose, with why"
    stage: str = column("VARCHAR NOT NULL")
    item: str | None = column("VARCHAR")
    source: str | None = column("VARCHAR")
    reason: str = column("VARCHAR NOT NULL")
    detail: str | None = column("VARCHAR")


# generate ---------------------------------------------------------------------------------


@dataclass
class Generation(Record):
    """One teacher sample: the raw text, what was parsed from it, and what it cost."""

    TABLE = "generations"
    COMMENT = "teacher outputs: one row per work key (seed, teacher, prompt, sampling, sample index)"
    key: str = column("VARCHAR PRIMARY KEY")
    seed_id: str = column("VARCHAR NOT NULL")
    teacher: str = column("VARCHAR NOT NULL")
    teacher_identity: Any = column("JSON")
    prompt: Any = column("JSON")
    sampling: Any = column("JSON")
    sample_index: int | None = column("INTEGER")
    raw: str | None = column("VARCHAR")
    reasoning: str | None = column("VARCHAR")
    answer: str | None = column("VARCHAR")
    parse_status: str | None = column("VARCHAR")
    parse_reason: str | None = column("VARCHAR")
    finish_reason: str | None = column("VARCHAR")
    error: str | None = column("VARCHAR")
    prompt_tokens: int | None = column("INTEGER")
    completion_tokens: int | None = column("INTEGER")
    seconds: float | None = column("DOUBLE")
    created_at: Any = column("TIMESTAMP")


@dataclass
class TeacherRun(Record):
    TABLE = "teacher_runs"
    COMMENT = "throughput of each teacher in each generate run"
    stage_run: int | None = column("BIGINT")
    teacher: str | None = column("VARCHAR")
    samples: int | None = column("INTEGER")
    errors: int | None = column("INTEGER")
    seconds: float | None = column("DOUBLE")
    completion_tokens: int | None = column("BIGINT")
    samples_per_s: float | None = column("DOUBLE")
    tokens_per_s: float | None = column("DOUBLE")


# annotate ---------------------------------------------------------------------------------


@dataclass
class Annotation(Record):
    """What the annotate stage found about one generation; the difficulty columns are filled
    per (seed, teacher) once every sample is annotated."""

    TABLE = "annotations"
    COMMENT = "one row per generation: answer check, judge, labels, difficulty, reasoning statistics"
    key: str = column("VARCHAR PRIMARY KEY")
    seed_id: str = column("VARCHAR NOT NULL")
    teacher: str = column("VARCHAR NOT NULL")
    settings: str | None = column("VARCHAR")
    correct: bool | None = column("BOOLEAN")
    correct_detail: str | None = column("VARCHAR")
    answer_kind: str | None = column("VARCHAR")
    judge_difficulty: int | None = column("INTEGER")
    judge_quality: int | None = column("INTEGER")
    judge_tags: list[str] | None = column("VARCHAR[]")
    judge_error: str | None = column("VARCHAR")
    labels: list[str] | None = column("VARCHAR[]")
    reasoning_tokens: int | None = column("INTEGER")
    answer_tokens: int | None = column("INTEGER")
    steps: int | None = column("INTEGER")
    step_rule: str | None = column("VARCHAR")
    pass_rate: float | None = column("DOUBLE")
    samples_judged: int | None = column("INTEGER")
    difficulty: int | None = column("INTEGER")
    difficulty_bucket: str | None = column("VARCHAR")
    difficulty_source: str | None = column("VARCHAR")


# curate -----------------------------------------------------------------------------------


@dataclass
class Curation(Record):
    """The curate stage's decision on one trace."""

    TABLE = "curation"
    COMMENT = ("the curate stage's decision on every trace it considered: kept, or dropped by which layer\n"
               "(rules | dedup | selection) and why; duplicate clusters are named by their kept member")
    key: str = column("VARCHAR PRIMARY KEY")
    seed_id: str = column("VARCHAR NOT NULL")
    teacher: str = column("VARCHAR NOT NULL")
    split: str | None = column("VARCHAR")
    kept: bool = column("BOOLEAN NOT NULL", False)
    layer: str | None = column("VARCHAR")
    reason: str | None = column("VARCHAR")
    detail: str | None = column("VARCHAR")
    question_cluster: str | None = column("VARCHAR")
    reasoning_cluster: str | None = column("VARCHAR")
    difficulty_bucket: str | None = column("VARCHAR")
    labels: list[str] | None = column("VARCHAR[]")
    rank: int | None = column("INTEGER")
    settings: str | None = column("VARCHAR")


@dataclass
class CurationSubset(Record):
    TABLE = "curation_subsets"
    COMMENT = "membership of the curated set ('curated') and of each named subset, with its export folder"
    CONSTRAINTS = ("PRIMARY KEY (subset, key)",)
    subset: str = column("VARCHAR NOT NULL")
    key: str = column("VARCHAR NOT NULL")
    path: str | None = column("VARCHAR")


@dataclass
class MediaPhash(Record):
    TABLE = "media_phash"
    COMMENT = "perceptual fingerprint of stored images (64-bit DCT hash, 8x8 RGB thumbnail; NULL: unreadable)"
    hash: str = column("VARCHAR PRIMARY KEY")
    phash: int | None = column("UBIGINT")
    thumb: bytes | None = column("BLOB")


# train and evaluate -----------------------------------------------------------------------


@dataclass
class TrainStage(Record):
    TABLE = "train_stages"
    COMMENT = "one row per curriculum stage (align, instruct, reason, ...) of a train run"
    stage_run: int | None = column("BIGINT")
    position: int = column("INTEGER NOT NULL", 0)
    stage: str = column("VARCHAR NOT NULL", "")
    status: str = column("VARCHAR NOT NULL", "")  # done | skipped (and why)
    reason: str | None = column("VARCHAR")
    data: str | None = column("VARCHAR")
    method: str | None = column("VARCHAR")
    frozen: list[str] | None = column("VARCHAR[]")
    quantization: str | None = column("VARCHAR")
    precision: str | None = column("VARCHAR")
    micro_batch: int | None = column("INTEGER")
    grad_accum: int | None = column("INTEGER")
    gradient_checkpointing: bool | None = column("BOOLEAN")
    plan_source: str | None = column("VARCHAR")
    examples: int | None = column("INTEGER")
    dropped: Any = column("JSON")
    steps: int | None = column("INTEGER")
    tokens: int | None = column("BIGINT")
    tokens_per_s: float | None = column("DOUBLE")
    peak_memory_bytes: int | None = column("BIGINT")
    first_loss: float | None = column("DOUBLE")
    final_loss: float | None = column("DOUBLE")
    resumed_from: str | None = column("VARCHAR")
    input_model: str | None = column("VARCHAR")
    adapter_dir: str | None = column("VARCHAR")
    merged_dir: str | None = column("VARCHAR")
    fingerprint: str | None = column("VARCHAR")


@dataclass
class TrainStep(Record):
    TABLE = "train_steps"
    COMMENT = "one row per optimizer step"
    stage_run: int | None = column("BIGINT")
    stage: str = column("VARCHAR NOT NULL", "")
    step: int = column("INTEGER NOT NULL", 0)
    loss: float | None = column("DOUBLE")
    lr: float | None = column("DOUBLE")
    grad_norm: float | None = column("DOUBLE")
    tokens: int | None = column("INTEGER")
    target_tokens: int | None = column("INTEGER")
    seconds: float | None = column("DOUBLE")


@dataclass
class EvalRun(Record):
    TABLE = "eval_runs"
    COMMENT = "one row per evaluation of the student: before training, after each stage, each exported file"
    stage_run: int | None = column("BIGINT")
    after_stage: str = column("VARCHAR NOT NULL", "")
    model_dir: str | None = column("VARCHAR")
    seeds: int | None = column("INTEGER")
    judged: int | None = column("INTEGER")
    correct: int | None = column("INTEGER")
    accuracy: float | None = column("DOUBLE")
    format_ok: float | None = column("DOUBLE")
    mean_reasoning_tokens: float | None = column("DOUBLE")
    parse_status: Any = column("JSON")


@dataclass
class EvalOutput(Record):
    """The student's output for one held-out seed in one evaluation."""

    TABLE = "eval_outputs"
    COMMENT = "the student's output for each held-out seed in each evaluation"
    stage_run: int | None = column("BIGINT")
    after_stage: str = column("VARCHAR NOT NULL", "")
    seed_id: str = column("VARCHAR NOT NULL", "")
    output: str | None = column("VARCHAR")
    reasoning: str | None = column("VARCHAR")
    answer: str | None = column("VARCHAR")
    parse_status: str | None = column("VARCHAR")
    correct: bool | None = column("BOOLEAN")
    correct_detail: str | None = column("VARCHAR")
    reasoning_tokens: int | None = column("INTEGER")
    task: str | None = column("VARCHAR")


TABLES: tuple[type[Record], ...] = (
    Meta, StageRun, Media, Seed, SourceRun, Quarantine, Generation, TeacherRun, Annotation, Drop, Curation,
    CurationSubset, MediaPhash, TrainStage, TrainStep, EvalRun, EvalOutput,
)
"""Every table of the run store, in the order the DDL creates them."""

SEQUENCES = ("stage_run_id",)


def schema_ddl() -> str:
    """The DDL of the whole store, derived from :data:`TABLES`."""
    return "\n".join([*(f"CREATE SEQUENCE IF NOT EXISTS {s};" for s in SEQUENCES), *(t.ddl() for t in TABLES)])


def make(cls: type[R], values: dict) -> R:
    """A record from a mapping that may hold other keys too (those are ignored)."""
    return cls(**{c: values[c] for c in cls.columns() if c in values})
