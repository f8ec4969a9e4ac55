"""The recipe schema: one pydantic model per section, each field with its default and meaning.

Unknown keys are refused everywhere (``extra="forbid"``). Validators raise ``ValueError``
with a message that may start with a sub-key (``"path: required for …"``); the loader
(:mod:`siqkit.recipe.load`) turns that into one line naming the full key path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from siqkit.curate.config import CurateConfig
from siqkit.section import _Model
from siqkit.seeds.sources import SOURCE_TYPES
from siqkit.train.config import MAX_SEED, StudentConfig, TrainConfig

FILE_SOURCES = ("jsonl", "csv", "parquet", "images", "hf_disk")
BACKENDS = ("transformers", "vllm", "llama_cpp", "openai", "python")
DIGIT_OPERATIONS = ("add", "subtract", "multiply", "add_add", "add_multiply", "multiply_add")  # the last two: two steps, three numbers
INTERNAL_KEYS = ("is_tiny", "path")  # Recipe fields set by load_recipe, not by the YAML
FIELD_DEFAULTS = {"question": "question", "answer": "answer", "image": "image",
                  "split": "split", "caption": "caption"}  # our field name -> column name


class RunConfig(_Model):
    """Where the run folder lives."""

    name: str | None = None  # default: the recipe file's stem
    dir: Path | None = None  # default: runs/<name>, relative to the current directory
    # a checkpoint path written as a Hub repo id (owner/name) is found in the local Hugging
    # Face cache; true: one missing there is downloaded (siqkit/hub.py)
    allow_download: bool = False


class SourceConfig(_Model):
    """One seed source. Fields not used by a source type are ignored by it."""

    name: str
    type: Literal[SOURCE_TYPES]  # type: ignore[valid-type]
    path: Path | None = None  # file (jsonl/csv/parquet), questions file (images), folder (hf_disk)
    root: Path | None = None  # dataset root for image paths; default: the folder of `path`
    fields: dict[str, str] = Field(default_factory=lambda: dict(FIELD_DEFAULTS))  # ours -> column
    split: str = "train"  # split for rows that carry none
    splits: list[str] | None = None  # keep only these splits; None keeps all
    max: int | None = None  # cap per split (deterministic sample under the recipe seed)
    weight: float = Field(1.0, allow_inf_nan=False)  # share of seeds.max_total, relative to the other sources
    # Bounds on what one row may cost; a row over one is quarantined with the reason.
    max_line_kb: int = Field(1024, ge=1)  # one physical line of a JSONL/CSV file
    max_image_mb: float = Field(64.0, gt=0, allow_inf_nan=False)  # one image file (or inline image)
    max_image_pixels: int = Field(64_000_000, ge=1)  # width x height, read from the header before decoding
    # digits only
    num_images: dict[str, int] = Field(default_factory=lambda: {"train": 3000, "test": 600})
    max_digits: int = 2
    operations: list[Literal[DIGIT_OPERATIONS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(DIGIT_OPERATIONS[:3])
    )
    test_fraction: float = 0.25

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key not in FIELD_DEFAULTS:
                raise ValueError(f"unknown field '{key}'; expected one of {', '.join(FIELD_DEFAULTS)}")
        return {**FIELD_DEFAULTS, **v}

    @field_validator("max")
    @classmethod
    def _positive_max(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be at least 1 (got {v}); remove it for no cap")
        return v

    @field_validator("weight")
    @classmethod
    def _positive_weight(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"must be greater than 0 (got {v})")
        return v

    @field_validator("num_images")
    @classmethod
    def _counts(cls, v: dict[str, int]) -> dict[str, int]:
        for split, n in v.items():
            if n < 0:
                raise ValueError(f"{split}: must be 0 or more (got {n})")
        return v

    @field_validator("max_digits")
    @classmethod
    def _digits(cls, v: int) -> int:
        if not 1 <= v <= 4:
            raise ValueError(f"must be between 1 and 4 (got {v})")
        return v

    @field_validator("test_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"must be between 0 and 1, exclusive (got {v})")
        return v

    @model_validator(mode="after")
    def _paths(self) -> "SourceConfig":
        if self.type in FILE_SOURCES and self.path is None:
            raise ValueError(f"path: required for a '{self.type}' source")
        return self


class SeedsConfig(_Model):
    """The seed pool: its sources, and how many seeds to keep per split."""

    sources: list[SourceConfig]
    # Per split ({"train": 20000}) or for every split (an int). Sources share it by weight.
    max_total: int | dict[str, int] | None = None

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        if not v:
            raise ValueError("at least one source is required")
        seen: set[str] = set()
        for i, src in enumerate(v):
            if src.name in seen:
                raise ValueError(f"[{i}].name: duplicate source name '{src.name}'")
            seen.add(src.name)
        return v

    @field_validator("max_total")
    @classmethod
    def _total(cls, v: int | dict[str, int] | None) -> int | dict[str, int] | None:
        values = v.values() if isinstance(v, dict) else [] if v is None else [v]
        for n in values:
            if n < 1:
                raise ValueError(f"must be at least 1 (got {n})")
        return v


class Endpoint(_Model):
    url: str | None = None  # required, except under --tiny (which needs no server)
    concurrency: int = Field(4, ge=1, le=1024)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {v!r})")
        return v


class SamplingConfig(_Model):
    max_new_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1)


class PromptConfig(_Model):
    """How a seed becomes a prompt. Placeholders: {question}, {source}, {split}."""

    system: str | None = None  # None: siqkit's default, asking for <think>…</think> then <answer>…</answer>
    template: str = "{question}"

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        """Known placeholders only, no format spec wider than 1000, and the template renders
        once against a sample seed: a broken template fails ``check``, not generate."""
        import string

        try:
            fields = list(string.Formatter().parse(v))
        except ValueError as e:
            raise ValueError(f"cannot parse the template: {e} (write a literal brace as {{{{ or }}}})") from None
        for _, name, spec, _ in fields:
            if name is not None and name not in ("question", "source", "split"):
                raise ValueError(f"unknown placeholder {{{name}}}; use {{question}}, {{source}} or {{split}}")
            widths = [int(n) for n in re.findall(r"\d+", spec or "")]
            if "{" in (spec or "") or any(n > 1000 for n in widths):
                raise ValueError(f"placeholder {{{name}:{spec}}}: a format spec may not be nested or wider than 1000")
        try:
            v.format(question="What is 2 + 2?", source="sample", split="train")
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ValueError(f"the template does not render on a sample seed: {e}") from None
        return v


class RouteConfig(_Model):
    """Which seeds a teacher takes; every condition given must hold. Empty: every seed."""

    sources: list[str] | None = None
    splits: list[str] | None = None
    labels: list[str] | None = None  # any of these task labels (siqkit.annotate.labels rules)
    question_regex: str | None = None  # searched, case-insensitive
    images: bool | None = None  # true: only seeds with images; false: only text-only seeds

    @field_validator("question_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e}") from None
        return v


class TeacherConfig(_Model):
    """One teacher. Each backend module's docstring lists the fields it reads."""

    name: str
    backend: Literal["transformers", "vllm", "llama_cpp", "openai", "python"]
    arch: str | None = None  # architecture (e.g. qwen3_vl): what --tiny builds a twin of
    path: Path | None = None  # transformers, vllm: checkpoint folder; llama_cpp: .gguf file
    mmproj: Path | None = None  # llama_cpp: vision projector .gguf
    callable: str | None = None  # python: "module:function" or "module:Class"
    options: dict[str, Any] = Field(default_factory=dict)  # python: keyword arguments to it
    model: str | None = None  # openai: model name sent to the server (default: name)
    endpoints: list[Endpoint] = Field(default_factory=list)  # openai
    api_key_env: str | None = None  # openai: NAME of the environment variable holding the key
    max_retries: int = Field(5, ge=0, le=100)  # openai: on 429/5xx/timeouts/garbage, with exponential backoff
    # openai: deadline of one attempt, from connecting to the reply's last byte
    timeout_s: float = Field(120.0, gt=0, allow_inf_nan=False)
    max_reply_mb: float = Field(8.0, gt=0, allow_inf_nan=False)  # openai: a larger reply body is a failed sample
    backoff_s: float = Field(1.0, ge=0, allow_inf_nan=False)  # openai: first backoff; doubles each retry, with jitter
    max_backoff_s: float = Field(60.0, ge=0, allow_inf_nan=False)  # openai
    extra_body: dict[str, Any] = Field(default_factory=dict)  # openai: extra request fields
    # transformers: bitsandbytes NF4/LLM.int8 or a dtype. vllm: a pre-quantized checkpoint
    # (AWQ, GPTQ, compressed-tensors, FP8) loads as stored whatever this says; on an
    # unquantized one, 8bit and fp8 quantize in flight (see siqkit/teachers/backends/vllm_engine.py).
    quantization: Literal["4bit", "8bit", "fp8", "bf16", "fp16", "fp32"] = "4bit"
    device: str | None = None  # transformers: default cuda when available, else cpu
    quantize_vision: bool = False  # transformers: also quantize a VLM's vision tower
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)  # transformers, vllm
    # Requests per backend call: the generate batch of transformers (static batching), the
    # requests of python/openai/llama_cpp teachers. None: 8, or on a CUDA GPU the transformers
    # backend sizes its batches from the memory left for the KV cache. Commits are separate
    # (generate.commit_rows).
    batch_size: int | None = None
    batching: Literal["static", "continuous"] = "static"  # transformers: continuous = its paged engine
    # vllm, transformers continuous: requests in the engine at once [512]; transformers static:
    # requests per generate call, sorted by length inside it [4 x batch_size, or 512 when sized]
    window: int | None = None
    max_pixels: int | None = None  # every backend: larger images are downscaled to this many pixels
    gpu_memory_utilization: float = 0.90  # vllm: share of GPU memory for weights, activations and KV cache
    max_model_len: int | None = None  # vllm: prompt + output tokens; default the checkpoint's own
    tensor_parallel_size: int = 1  # vllm: GPUs of this node to split the model over
    enforce_eager: bool | None = None  # vllm: no CUDA graphs / compilation; default: true on CPU only
    kv_cache_gb: float | None = None  # vllm: KV cache size; default: from gpu_memory_utilization (CPU: 4)
    n_ctx: int = Field(4096, ge=1)  # llama_cpp
    n_gpu_layers: int = -1  # llama_cpp: -1 offloads every layer when built with GPU support
    n_threads: int | None = Field(None, ge=1)  # llama_cpp
    trust_remote_code: bool = False  # transformers, vllm: only if you trust the checkpoint's code
    samples: int = 1  # samples per seed (k); pass rates over k give difficulty
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    route: RouteConfig = Field(default_factory=RouteConfig)

    @model_validator(mode="after")
    def _backend_needs(self, info: ValidationInfo) -> "TeacherConfig":
        tiny = bool((info.context or {}).get("tiny"))  # --tiny builds twins: no checkpoint needed
        need = {"transformers": "path", "vllm": "path", "llama_cpp": "path", "python": "callable"}.get(self.backend)
        if need and getattr(self, need) is None and not (tiny and need == "path"):
            raise ValueError(f"{need}: required for the '{self.backend}' backend")
        if self.backend == "openai" and not tiny:
            if not self.endpoints:
                raise ValueError("endpoints: the 'openai' backend needs at least one endpoint")
            for j, e in enumerate(self.endpoints):
                if not e.url:
                    raise ValueError(f"endpoints[{j}].url: required, e.g. http://127.0.0.1:8000")
        if self.samples < 1:
            raise ValueError(f"samples: must be at least 1 (got {self.samples})")
        for key in ("batch_size", "window", "max_pixels", "max_model_len"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key}: must be at least 1 (got {value})")
        if self.max_pixels is not None and self.max_pixels < 28 * 28:
            raise ValueError(f"max_pixels: must be at least 784 (28x28; got {self.max_pixels})")
        if self.kv_cache_gb is not None and not self.kv_cache_gb > 0:
            raise ValueError(f"kv_cache_gb: must be greater than 0 (got {self.kv_cache_gb})")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: must be in (0, 1] (got {self.gpu_memory_utilization})")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size: must be at least 1 (got {self.tensor_parallel_size})")
        if self.quantization == "fp8" and self.backend != "vllm":
            raise ValueError("quantization: 'fp8' is a vllm quantization; the transformers backend "
                             "offers 4bit, 8bit, bf16, fp16 and fp32")
        if self.batching == "continuous" and self.backend != "transformers":
            raise ValueError("batching: 'continuous' is an option of the transformers backend "
                             "(vllm always batches continuously)")
        return self


class GenerateConfig(_Model):
    """The generate stage: which seeds go to which teachers."""

    routing: Literal["first", "all"] = "first"  # first matching teacher per seed, or every match
    splits: list[str] | None = None  # None: every split (test traces measure teacher accuracy)
    max_seeds: dict[str, int] | None = None  # per split, each >= 1; a deterministic sample, for smoke tests
    # Finished samples are committed to the store in small transactions, apart from how many
    # requests the engine holds: at least every commit_rows samples or commit_seconds seconds,
    # so a kill -9 loses only the requests in flight and those few seconds.
    commit_rows: int = Field(64, ge=1)
    commit_seconds: float = Field(2.0, gt=0, allow_inf_nan=False)

    @field_validator("max_seeds")
    @classmethod
    def _seed_caps(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        for split, n in (v or {}).items():
            if n < 1:
                raise ValueError(f"{split}: must be at least 1 (got {n}); leave the split out of generate.splits instead")
        return v


class AnnotateConfig(_Model):
    """The annotate stage: answer checking, judge, labels, difficulty."""

    answer_kind: Literal["auto", "yesno", "number", "choice", "text"] = "auto"
    tolerance: float = Field(1e-6, ge=0, allow_inf_nan=False)  # numbers: absolute and relative tolerance
    judge: str | None = None  # a teacher name: judges traces whose seed has no gold answer
    judge_all: bool = False  # judge every trace, gold or not (difficulty/quality/tags for all)
    judge_retries: int = Field(2, ge=0, le=100)  # re-asks after malformed judge JSON, then the error is recorded
    judge_max_new_tokens: int = Field(256, ge=16)  # the verdict is a short JSON object; --tiny caps it


class EvalConfig(_Model):
    """Held-out evaluation of the student (before training and after every stage), per task.

    The held-out seeds are drawn per task, a deterministic sample of ``per_task`` of each, so
    a task with few questions is not drowned by one with many: every score is shown per task
    and overall (the pooled questions).
    """

    splits: list[str] = Field(default_factory=lambda: ["test"])  # seeds of these splits, never trained on
    # A seed's task: its source's name, or a metadata field of the seed ("metadata.operation";
    # seeds without the field fall back to their source's name).
    task_by: str = "source"
    tasks: list[str] | None = None  # only these tasks; None: every task among the held-out seeds
    per_task: int = Field(100, ge=1)  # held-out seeds per task (all of a task's, when it has fewer)
    max_seeds: int | None = Field(None, ge=1)  # a cap on the total, shared equally by the tasks

    @field_validator("task_by")
    @classmethod
    def _task_by(cls, v: str) -> str:
        if v != "source" and not re.fullmatch(r"metadata\.[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"'{v}': use 'source' or 'metadata.<field>' (e.g. metadata.operation)")
        return v


QUANT = Literal["f16", "bf16", "f32", "q8_0", "q4_k_m", "q5_k_m", "q6_k"]


class ExportConfig(_Model):
    """The export stage: the trained student to GGUF (the same code as `siqkit export`)."""

    quant: QUANT = "q4_k_m"  # the file that ships (Modelfile, model card)
    # More quants written and evaluated beside it, so the table shows what each costs
    compare: list[QUANT] = Field(default_factory=list)
    mmproj: bool = True  # also write the vision tower (f16) when the architecture has one
    verify: bool = True  # compare with the Hugging Face model in llama-cpp-python; f16 must match
    evaluate: bool = True  # held-out accuracy of the exported file in llama-cpp-python (the student's eval seeds)
    # The shipped file may answer at most this share of the held-out questions worse than the
    # student it came from, overall and on every task (0.01: one point); needs `evaluate`.
    max_accuracy_drop: float = Field(default=0.01, ge=0.0, le=1.0)
    # The shipped quant's verdict (its agreement bars in siqkit/export/verify.py, top-1 and
    # greedy, and max_accuracy_drop) fails the stage when missed; false logs it as a warning
    # and keeps the files (f16 must still match exactly).
    require_quant_agreement: bool = True
    name: str | None = None  # file name stem; default: run.name
    model: Path | None = None  # export this model folder instead of the train stage's final model


class TinyConfig(_Model):
    """What ``--tiny`` caps (see siqkit/recipe/shrink.py)."""

    max_seeds: int = Field(40, ge=1)  # per source and split
    max_new_tokens: int = Field(48, ge=1)  # per teacher sample and per evaluation answer
    max_train_steps: int = Field(4, ge=1)  # per training stage


class Recipe(_Model):
    """A whole recipe. Stages whose section is absent are not run."""

    run: RunConfig = Field(default_factory=RunConfig)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # one seed for every sampling decision in the run
    seeds: SeedsConfig
    teachers: list[TeacherConfig] = Field(default_factory=list)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    tiny: TinyConfig = Field(default_factory=TinyConfig)
    student: StudentConfig | None = None  # the model to train; absent: no train/eval stages
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    # set by load_recipe, never by the YAML (INTERNAL_KEYS are refused there)
    is_tiny: bool = Field(default=False, exclude=True)
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("teachers")
    @classmethod
    def _unique_teachers(cls, v: list[TeacherConfig]) -> list[TeacherConfig]:
        names = [t.name for t in v]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"[{i}].name: duplicate teacher name '{name}'")
        return v

    @model_validator(mode="after")
    def _hub_checkpoints(self, info: ValidationInfo) -> "Recipe":
        """Checkpoint paths written as repo ids -> their snapshot folders in the HF cache."""
        from siqkit.hub import CheckpointNotFound, is_repo_id, resolve_checkpoint

        slots = [(f"teachers[{i}].path", t) for i, t in enumerate(self.teachers) if t.backend in ("transformers", "vllm")]
        slots += [("student.path", self.student)] if self.student is not None else []
        for where, owner in slots + [("export.model", self.export)]:
            key = "model" if owner is self.export else "path"
            value = getattr(owner, key)
            if not is_repo_id(value):
                continue
            try:
                setattr(owner, key, resolve_checkpoint(value, self.run.allow_download))
            except CheckpointNotFound as e:
                if not (info.context or {}).get("tiny"):  # --tiny builds a twin of `arch` instead
                    raise ValueError(f"{where}: {e}") from None
        return self

    @model_validator(mode="after")
    def _references(self) -> "Recipe":
        sources = {s.name for s in self.seeds.sources}
        for i, t in enumerate(self.teachers):
            for j, name in enumerate(t.route.sources or []):
                if name not in sources:
                    raise ValueError(f"teachers[{i}].route.sources[{j}]: no seed source named '{name}'")
        teachers = [t.name for t in self.teachers]
        if self.annotate.judge is not None and self.annotate.judge not in teachers:
            raise ValueError(f"annotate.judge: no teacher named '{self.annotate.judge}'")
        for i, sub in enumerate(self.curate.subsets):
            for j, name in enumerate(sub.teachers or []):
                if name not in teachers:
                    raise ValueError(f"curate.subsets[{i}].teachers[{j}]: no teacher named '{name}'")
        return self

    @property
    def run_dir(self) -> Path:
        return self.run.dir if self.run.dir is not None else Path("runs") / (self.run.name or "run")
