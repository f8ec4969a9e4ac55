"""The recipe's ``curate`` section: rules, dedup, selection, subsets and export, with defaults.

Every key has a default, so ``curate: {}`` (or no section at all) curates the ``train``
traces with the rules below, removes duplicates, keeps every survivor (no difficulty mix, no
label cap) and exports ``RUN_DIR/datasets/curated/``. Example::

    curate:
      rules: {max_reasoning_tokens: 2048, refusal_patterns: ["as an ai"]}
      dedup: {threshold: 0.8}
      selection:
        difficulty: {mix: {easy: 30, medium: 40, hard: 30}}
        labels: {max_per_label: 500}
      subsets:
        - {name: hard-counting, difficulty: [hard], labels: [counting], max: 1000}
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from siqkit.section import _Model

BUCKETS = ("easy", "medium", "hard")
REFUSALS = (
    r"\bI(?: am|'m) (?:sorry|afraid),? (?:but )?I (?:can(?:not|'t)|am unable|won't)",
    r"\bI (?:cannot|can't|am unable to|won't) (?:help|assist|answer|comply|provide|see|view)",
    r"\bas an AI(?: language)? model\b",
    r"\bI (?:do not|don't) have (?:the ability|access) to (?:see|view)",
)


class RulesConfig(_Model):
    """Rule-based filters; each drop is stored with its reason. A limit set to null is off."""

    drop_truncated: bool = True  # drop outputs that hit the token limit
    require_reasoning: bool = True  # drop an answer that comes without reasoning
    drop_incorrect: bool = True  # drop traces whose answer disagrees with the gold answer
    require_gold: bool = False  # also drop traces that could not be checked (seed without gold)
    min_reasoning_tokens: int | None = 3  # whitespace tokens, as the annotate stage counts them
    max_reasoning_tokens: int | None = 4096
    max_answer_tokens: int | None = 256  # at least 1: every kept trace has an answer
    repetition_ngram: int = 4  # word n-grams for the repetition rule
    max_repeated_ngram_fraction: float | None = 0.5  # share of n-grams that repeat an earlier one
    max_line_repeats: int | None = 4  # loops: the same non-trivial line more often than this (at least 1)
    refusal_patterns: list[str] = Field(default_factory=lambda: list(REFUSALS))  # case-insensitive regexes
    scripts: list[str] | None = Field(default_factory=lambda: ["Latin", "Greek"])  # Unicode scripts of letters
    min_script_fraction: float = 0.9  # share of letters in reasoning + answer that must be in `scripts`

    @field_validator("refusal_patterns")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"[{i}]: invalid regular expression: {e}") from None
        return v

    @field_validator("scripts")
    @classmethod
    def _scripts(cls, v: list[str] | None) -> list[str] | None:
        for i, name in enumerate(v or []):
            if not re.fullmatch(r"[A-Z][A-Za-z_]+", name):
                raise ValueError(f"[{i}]: expected a Unicode script name such as Latin, Greek, Cyrillic, Han")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> "RulesConfig":
        for key in ("min_reasoning_tokens", "max_reasoning_tokens"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{key}: must be 0 or more (got {value})")
        # 0 would drop every trace: an empty answer is dropped anyway, and a line counts once at least
        for key in ("max_answer_tokens", "max_line_repeats"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key}: must be at least 1 (got {value}); null turns the rule off")
        if self.require_reasoning and self.max_reasoning_tokens == 0:
            raise ValueError("max_reasoning_tokens: 0 drops every trace that require_reasoning keeps; "
                             "null turns the rule off")
        if (self.min_reasoning_tokens or 0) > (self.max_reasoning_tokens if self.max_reasoning_tokens is not None
                                               else float("inf")):
            raise ValueError(f"min_reasoning_tokens: must not exceed max_reasoning_tokens "
                             f"({self.min_reasoning_tokens} > {self.max_reasoning_tokens})")
        f = self.max_repeated_ngram_fraction
        if f is not None and not 0 < f <= 1:
            raise ValueError(f"max_repeated_ngram_fraction: must be in (0, 1] (got {f})")
        if not 0 <= self.min_script_fraction <= 1:
            raise ValueError(f"min_script_fraction: must be in [0, 1] (got {self.min_script_fraction})")
        if self.repetition_ngram < 1:
            raise ValueError(f"repetition_ngram: must be at least 1 (got {self.repetition_ngram})")
        return self


class DedupConfig(_Model):
    """Exact and near-duplicate removal (MinHash + LSH, candidates checked exactly)."""

    enabled: bool = True
    question: bool = True  # one problem per near-duplicate question on near-identical images
    reasoning: bool = True  # one trace per near-duplicate reasoning for the same problem
    threshold: float = 0.8  # Jaccard of word n-gram sets at or above which texts are duplicates
    num_perm: int = 128  # MinHash permutations, 2 to 1024 (candidates are checked exactly; more only costs memory)
    ngram: int = 5  # word n-grams, 1 to 64
    image_distance: int | None = 4  # near-identical images: perceptual hashes this many bits apart; null: same bytes only

    @model_validator(mode="after")
    def _ranges(self) -> "DedupConfig":
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold: must be in (0, 1] (got {self.threshold})")
        if not 2 <= self.num_perm <= 1024:
            raise ValueError(f"num_perm: must be between 2 and 1024 (got {self.num_perm})")
        if not 1 <= self.ngram <= 64:
            raise ValueError(f"ngram: must be between 1 and 64 (got {self.ngram})")
        if self.image_distance is not None and not 0 <= self.image_distance <= 16:
            raise ValueError(f"image_distance: must be between 0 and 16 (got {self.image_distance})")
        return self


Share = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # a difficulty bucket's relative share


class DifficultyConfig(_Model):
    """Difficulty-aware selection: a target mix over easy/medium/hard."""

    # relative shares, each 0 or more (not all 0), e.g. {easy: 30, medium: 40, hard: 30}
    mix: dict[Literal["easy", "medium", "hard"], Share] | None = None
    total: int | None = None  # samples to select under the mix; null: as many as the supply allows
    on_shortfall: Literal["shrink", "fill"] = "shrink"  # keep the mix with fewer samples, or fill `total`
    unknown: Literal["keep", "drop"] = "keep"  # traces without a difficulty: outside the mix, or dropped
    # reported as met when every bucket is within this share (0 to 1) of its target
    tolerance: float = Field(0.02, ge=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> "DifficultyConfig":
        if self.mix is not None:  # each share is finite and 0 or more (Share)
            total = sum(self.mix.values())
            if total <= 0:
                raise ValueError("mix: the shares must not all be 0")
            if not math.isfinite(total):
                raise ValueError("mix: the shares are too large to add up; use smaller numbers (e.g. percentages)")
        if self.total is not None and self.total < 1:
            raise ValueError(f"total: must be at least 1 (got {self.total})")
        return self

    def targets(self) -> dict[str, float] | None:
        """The mix as shares that sum to 1, over all three buckets."""
        if self.mix is None:
            return None
        s = sum(self.mix.values())
        return {b: self.mix.get(b, 0.0) / s for b in BUCKETS}  # type: ignore[call-overload]


class LabelsConfig(_Model):
    """Label-diversity sampling: caps per label, rare labels first."""

    max_per_label: int | None = None  # no label in more than this many selected samples
    ignore: list[str] = Field(default_factory=lambda: ["visual-perception", "text-only", "general-qa"])  # never capped or counted
    favour_rare: bool = True  # sample so that rare labels are covered first
    judge_tags: bool = False  # also use the judge's tags as labels

    @field_validator("max_per_label")
    @classmethod
    def _cap(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be at least 1 (got {v}); remove it for no cap")
        return v


LENGTH_CHOICES = ("shortest", "median", "longest", "all")


class ReasoningLengthConfig(_Model):
    """Reasoning length matched to difficulty: of a question's traces that survived the rules
    and dedup (k samples, or several teachers), which one trains, per difficulty bucket of
    the question. ``median`` is the upper median (the longer of two); ``all`` keeps them
    all. Easy questions on short reasoning, hard ones on the full steps: small students
    learn little from long traces of what they can see at a glance."""

    easy: Literal[LENGTH_CHOICES] = "shortest"  # type: ignore[valid-type]
    medium: Literal[LENGTH_CHOICES] = "median"  # type: ignore[valid-type]
    hard: Literal[LENGTH_CHOICES] = "longest"  # type: ignore[valid-type]
    unknown: Literal[LENGTH_CHOICES] = "all"  # questions without a difficulty  # type: ignore[valid-type]


class SelectionConfig(_Model):
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    reasoning_length: ReasoningLengthConfig | None = None  # off unless given


class SubsetConfig(_Model):
    """A named view of the curated samples, exported beside the main set; conditions AND."""

    name: str
    difficulty: list[Literal["easy", "medium", "hard"]] | None = None
    labels: list[str] | None = None  # any of these labels
    teachers: list[str] | None = None
    splits: list[str] | None = None
    max: int | None = None  # at most this many, in selection order (rare labels first)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"'{v}': use letters, digits, '.', '_' and '-' (it names a folder)")
        return v

    @field_validator("max")
    @classmethod
    def _max(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v


class ExportConfig(_Model):
    # data.jsonl, data.parquet (images embedded), llamafactory.jsonl + dataset_info.json
    formats: list[Literal["jsonl", "parquet", "llamafactory"]] = Field(
        default_factory=lambda: ["jsonl", "parquet", "llamafactory"])
    license: str | list[str] | None = None  # the card's license id(s); default: from the seed sources
    language: list[str] = Field(default_factory=lambda: ["en"])  # the card's languages
    link_images: bool = True  # hard-link images into DIR/images/ (copied where linking fails)


class CurateConfig(_Model):
    """The curate stage: rules, dedup, difficulty-aware and label-diverse selection, subsets."""

    splits: list[str] = Field(default_factory=lambda: ["train"])  # traces of these seed splits
    rules: RulesConfig = Field(default_factory=RulesConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    subsets: list[SubsetConfig] = Field(default_factory=list)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @field_validator("subsets")
    @classmethod
    def _unique(cls, v: list[SubsetConfig]) -> list[SubsetConfig]:
        seen = {"curated"}
        for i, s in enumerate(v):
            if s.name in seen:
                raise ValueError(f"[{i}].name: '{s.name}' is already used (the main set is 'curated')")
            seen.add(s.name)
        return v
