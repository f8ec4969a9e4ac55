"""The recipe's ``student`` and ``train`` sections: which model to train, and how.

Every field has a default, written next to it. The defaults are the design point of the
kit: a 4-bit NF4 base with LoRA adapters (QLoRA), gradient checkpointing and heavy
gradient accumulation on one consumer GPU, in three stages:

``align``
    projector only (vision tower and language model frozen), on caption data;
``instruct``
    LoRA on the language model plus the projector, on short answers (an empty think block);
``reason``
    LoRA on the language model, on the full chain-of-thought targets, easy → hard.

Each stage starts from the previous stage's merged output. ``auto`` values (micro-batch,
accumulation, checkpointing, a stage's ``method``) are chosen by the memory planner
(:mod:`siqkit.train.memory`) for ``train.vram``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from siqkit.section import _Model

PARTS = ("vision", "projector", "language")
DATA_KINDS = ("caption", "answer", "cot")
DIFFICULTIES = ("easy", "medium", "hard")
QWEN_VL = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # vision towers with 2-D rotary embeddings
MAX_SEED = 2**64 - 1  # torch.manual_seed takes no more


class BuildConfig(_Model):
    """A student siqkit builds from scratch, for runs with no checkpoint (the offline quickstart).

    The model is a real Hugging Face architecture class, randomly initialised with these
    sizes; its tokenizer is a byte-level BPE trained on the training dataset's own text
    (captions, questions and targets). It is written like any checkpoint to
    ``RUN_DIR/train/student-init/`` and then trained by the curriculum like one; a
    from-scratch student needs stages that train its language model in full first
    (``method: full``) before LoRA or QLoRA stages make sense.
    """

    arch: str = "qwen2_vl"  # any architecture siqkit builds twins of (see siqkit/models/twins.py)
    hidden_size: int = 256  # a multiple of 256 keeps the k-quants (q4_k_m) exact in GGUF export
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 768
    vocab_size: int = 2048  # BPE entries (256 bytes + merges); special tokens come on top
    vision_width: int = 64  # vision tower (vision-language architectures)
    vision_depth: int = 2
    vision_heads: int = 2
    image_tokens: int = 16  # Qwen-VL: visual tokens per image (small images are scaled up to it)
    # Teach the new vision tower to see before any stage runs: predict each captioned image's
    # caption words from its pooled visual tokens (see siqkit/train/scratch.py). 0: skip.
    vision_pretrain_steps: int = 0
    vision_pretrain_learning_rate: float = Field(1.0e-3, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # weight initialisation; None: the recipe's seed

    @field_validator("arch")
    @classmethod
    def _known(cls, v: str) -> str:
        from siqkit.archs import SUPPORTED_TINY

        if v not in SUPPORTED_TINY:
            raise ValueError(f"unknown architecture '{v}'; expected one of {', '.join(SUPPORTED_TINY)}")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> "BuildConfig":
        for key in ("hidden_size", "layers", "heads", "kv_heads", "intermediate_size", "vision_width",
                    "vision_depth", "vision_heads", "image_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1 (got {getattr(self, key)})")
        if self.vision_pretrain_steps and self.arch in ("smolvlm", "idefics3"):
            raise ValueError(f"vision_pretrain_steps: not supported for {self.arch}, whose processor cuts "
                             "images into tiles; set it to 0")
        if self.vision_pretrain_steps < 0:
            raise ValueError(f"vision_pretrain_steps: must be 0 or more (got {self.vision_pretrain_steps})")
        if self.vision_pretrain_learning_rate <= 0:
            raise ValueError("vision_pretrain_learning_rate: must be greater than 0 "
                             f"(got {self.vision_pretrain_learning_rate})")
        if self.vocab_size <= 256:
            raise ValueError(f"vocab_size: must exceed the 256 byte tokens (got {self.vocab_size})")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size: must divide by heads ({self.heads}) (got {self.hidden_size})")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads: must divide by kv_heads ({self.kv_heads}) (got {self.heads})")
        if (self.hidden_size // self.heads) % 2:  # rotary position embeddings rotate pairs of channels
            raise ValueError(f"hidden_size: hidden_size / heads, the head size, must be even "
                             f"(got {self.hidden_size} / {self.heads} = {self.hidden_size // self.heads})")
        if self.vision_width % self.vision_heads:
            raise ValueError(f"vision_width: must divide by vision_heads ({self.vision_heads}) (got {self.vision_width})")
        if self.arch in QWEN_VL and (self.vision_width // self.vision_heads) % 4:  # pairs, along height and width
            raise ValueError(f"vision_width: vision_width / vision_heads, the vision head size, must be a multiple "
                             f"of 4 for {self.arch} (got {self.vision_width} / {self.vision_heads} = "
                             f"{self.vision_width // self.vision_heads})")
        return self


class StudentConfig(_Model):
    """The student: a local Hugging Face checkpoint (a tiny twin works the same way), or one to build."""

    path: Path | None = None  # local checkpoint folder (required, except with `build` or under --tiny); nothing is downloaded
    build: BuildConfig | None = None  # build the student from scratch instead (see BuildConfig)
    arch: str | None = None  # architecture (e.g. qwen3_vl): what --tiny builds a twin of
    # None: from the checkpoint (a causal LM is text-only). A text-only student sees each
    # image as the caption/OCR text its seed carries, written with `image_text`.
    text_only: bool | None = None
    image_text: str = "[Image: {caption}]"  # {caption} is the seed's caption (or OCR) text
    trust_remote_code: bool = False  # only when you trust the checkpoint's own code

    @model_validator(mode="after")
    def _needs_path(self, info: ValidationInfo) -> "StudentConfig":
        if self.path is not None and self.build is not None:
            raise ValueError("give either path (a checkpoint) or build (a student built from scratch), not both")
        if self.path is None and self.build is None and not (info.context or {}).get("tiny"):
            raise ValueError("path: required: the student's local checkpoint folder (or `build` to build one)")
        return self

    @field_validator("image_text")
    @classmethod
    def _has_caption(cls, v: str) -> str:
        if "{caption}" not in v:
            raise ValueError("must contain {caption}, where the image's text goes")
        return v


class LoraConfig(_Model):
    """LoRA adapters on the language model (never on the vision tower or the LM head)."""

    r: int = 16
    alpha: int = 32
    dropout: float = Field(0.05, ge=0, lt=1, allow_inf_nan=False)  # a probability; 1 would drop everything
    # "all-linear": every linear layer of the language model; or a list of module names
    # (e.g. [q_proj, v_proj]), matched on the last part of each language-model layer name.
    target_modules: Literal["all-linear"] | list[str] = "all-linear"

    @field_validator("r", "alpha")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v


class StageConfig(_Model):
    """One curriculum stage. It starts from the previous stage's merged model."""

    name: str
    # What each training row becomes: "caption" (describe the image -> its caption; rows
    # with a caption only, one per image set), "answer" (question -> short answer, empty
    # think block), "cot" (question -> the teacher's full <think> trace and answer).
    data: Literal["caption", "answer", "cot"] = "cot"
    difficulty: list[Literal["easy", "medium", "hard"]] | None = None  # keep only these; None: all
    labels: list[str] | None = None  # keep rows with any of these task labels; None: all
    order: Literal["shuffle", "easy_to_hard"] = "shuffle"  # easy_to_hard: easy, then medium, then hard
    freeze: list[Literal["vision", "projector", "language"]] = Field(default_factory=lambda: ["vision"])
    # How the language model trains when not frozen: "qlora" (4-bit NF4 base + LoRA),
    # "lora" (bf16/fp32 base + LoRA), "full" (every weight), "auto" (the planner picks
    # qlora or lora for train.vram). With the language model frozen it only sets the
    # base precision (qlora: 4-bit). An unfrozen vision tower or projector always trains
    # in full: they are small.
    method: Literal["auto", "qlora", "lora", "full"] = "qlora"
    epochs: float = Field(1.0, allow_inf_nan=False)  # passes over this stage's data (fractions allowed)
    max_steps: int | None = None  # cap on optimizer steps; None: from epochs
    learning_rate: float | None = Field(None, gt=0, allow_inf_nan=False)  # None: train.learning_rate
    max_examples: int | None = None  # a deterministic sample, for smoke runs
    # A "cot" stage only: also train its answer-only twin for comparison. It starts from the
    # same model and trains on the same rows, in the same order, for the same optimizer
    # steps and batch, with answer-only targets (an empty think block) -- the same number of
    # examples seen, not the same tokens. It is evaluated as "<name>-answer-only" and does
    # not feed later stages.
    answer_only_baseline: bool = False
    # Evaluate the student on the held-out seeds after this stage (and its answer-only twin).
    # Off for a stage whose score nobody reads (a caption stage) saves a pass over them.
    evaluate: bool = True

    @field_validator("freeze")
    @classmethod
    def _unique_parts(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("list each part once")
        return v

    @model_validator(mode="after")
    def _sane(self) -> "StageConfig":
        if set(self.freeze) == set(PARTS):
            raise ValueError("freeze: every part is frozen; this stage would train nothing")
        if self.epochs <= 0:
            raise ValueError(f"epochs: must be greater than 0 (got {self.epochs})")
        for key in ("max_steps", "max_examples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key}: must be at least 1 (got {value})")
        if self.answer_only_baseline and self.data != "cot":
            raise ValueError("answer_only_baseline: only a stage with data 'cot' has an answer-only twin")
        return self


def default_stages() -> list[StageConfig]:
    """align -> instruct -> reason, as in the module docstring."""
    return [
        StageConfig(name="align", data="caption", freeze=["vision", "language"], learning_rate=1e-3),
        StageConfig(name="instruct", data="answer", freeze=["vision"]),
        StageConfig(name="reason", data="cot", freeze=["vision", "projector"], order="easy_to_hard"),
    ]


class TrainConfig(_Model):
    """How the student trains: stages, batch, optimizer, checkpoints, evaluation."""

    dataset: str = "curated"  # the curate stage's export to train on: RUN_DIR/datasets/<dataset>/
    stages: list[StageConfig] = Field(default_factory=default_stages)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on GPUs that have it, else fp16; fp32 on CPU
    device: str | None = None  # default: cuda when available, else cpu
    vram: str | None = None  # memory budget for the planner, e.g. "8GB"; default: the GPU's total memory
    max_seq_len: int = 2048  # longer rows are cut at the end of the answer; rows whose prompt is longer are dropped
    batch_size: int = 16  # sequences per optimizer step (micro_batch x grad_accum)
    # each at most batch_size; when both are given, micro_batch x grad_accum must equal batch_size
    micro_batch: int | Literal["auto"] = "auto"  # sequences per forward pass
    grad_accum: int | Literal["auto"] = "auto"  # micro-batches per optimizer step; auto: batch_size / micro_batch
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    batching: Literal["length_grouped", "random"] = "length_grouped"  # length_grouped cuts padding
    # How the loss meets the LM head (siqkit/train/loss.py): "auto" never builds the full
    # seq x vocab logits (Liger Kernel's fused kernel on CUDA when installed, else chunks);
    # "chunked" forces the chunks; "plain" is the full-logits reference. Same loss either way.
    loss: Literal["auto", "chunked", "plain"] = "auto"
    # Images larger than this many pixels (width x height) are scaled down, aspect kept, before
    # the processor sees them; fewer image tokens, less memory. None: the processor's own limits.
    max_image_pixels: int | None = None
    learning_rate: float = Field(2e-4, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)  # AdamW's decoupled weight decay
    warmup_ratio: float = 0.03  # share of a stage's steps spent warming up
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = Field(1.0, ge=0, allow_inf_nan=False)  # gradient clipping; 0 turns it off
    lora: LoraConfig = Field(default_factory=LoraConfig)
    save_every: int = 50  # optimizer steps between checkpoints (and always at a stage's end)
    keep_checkpoints: int = 2  # newest checkpoints kept per stage
    seed: int = Field(0, ge=0, le=MAX_SEED)  # data order, LoRA initialisation and dropout derive from it
    evaluate_before: bool = True  # evaluate the student before any stage trains (a row "before")
    # A stage's checkpoints written with other data, learning rate, model... (not just another
    # micro-batch split, device or precision, which resume) are refused with the setting named;
    # true: keep the old stage folder aside and train the stage again from step 0.
    restart_changed: bool = False
    # Trackers besides the progress bar and log.jsonl: "tensorboard" (events in each stage
    # folder; needs the tensorboard package) and/or "wandb" (needs wandb; WANDB_MODE=offline
    # keeps it local). See siqkit/train/watch.py.
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    eval_max_new_tokens: int = 512  # evaluation: generation budget per held-out seed
    eval_batch_size: int = 8
    eval_table_rows: int = Field(20, ge=0)  # rows of the side-by-side table

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, v: list[StageConfig]) -> list[StageConfig]:
        if not v:
            raise ValueError("at least one stage is required")
        names = [s.name for s in v]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"[{i}].name: duplicate stage name '{name}'")
        return v

    @field_validator("vram")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None:
            from siqkit.train.memory import parse_size

            if parse_size(v) < 1:
                raise ValueError(f"must be more than 0 bytes (got {v!r})")
        return v

    @model_validator(mode="after")
    def _positive(self) -> "TrainConfig":
        for key in ("max_seq_len", "batch_size", "save_every", "keep_checkpoints", "eval_max_new_tokens",
                    "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1 (got {getattr(self, key)})")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels: must be at least 1 (got {self.max_image_pixels})")
        for key in ("micro_batch", "grad_accum"):
            value = getattr(self, key)
            if value != "auto" and value < 1:
                raise ValueError(f"{key}: must be at least 1 or auto (got {value})")
            # an optimizer step takes micro_batch x grad_accum sequences: neither may exceed batch_size
            if value != "auto" and value > self.batch_size:
                raise ValueError(f"{key}: must not exceed batch_size ({self.batch_size}) (got {value})")
        mb, accum = self.micro_batch, self.grad_accum
        if mb != "auto" and accum != "auto" and mb * accum != self.batch_size:
            raise ValueError(f"grad_accum: micro_batch x grad_accum ({mb} x {accum} = {mb * accum}) must equal "
                             f"batch_size ({self.batch_size}); set grad_accum to auto to derive it")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be greater than 0 (got {self.learning_rate})")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        return self
