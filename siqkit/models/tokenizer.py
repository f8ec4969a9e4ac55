"""Local byte-level BPE tokenizers for tiny twins, trained on the spot.

A tiny twin needs a tokenizer that behaves like the real one in the ways the kit relies on:
byte-level BPE with the same pre-tokenizer regex (so llama.cpp's matching pre-tokenizer
reproduces it), the special tokens of a Qwen3 thinking chat model (vision ones included),
and a Qwen3-style chat template that renders ``<think>`` blocks and image parts. Training
takes well under a second on the built-in corpus, so no tokenizer files are ever fetched.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Pre-tokenizer split patterns. The Qwen2 pattern splits digits one by one; the Llama-3
# pattern groups up to three digits. llama.cpp knows them as pre-types "qwen2" and "llama-bpe".
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PATTERNS = {"qwen": QWEN2_PATTERN, "llama": LLAMA3_PATTERN}

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
# Control tokens (special=True: skipped when decoding with skip_special_tokens).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen3 marks the think tags as added but not special, so decoded text keeps them.
THINK_TOKENS = ("<think>", "</think>")

QWEN_IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"

# Qwen3-style chat template. Differences from Qwen3's own: no tool calls, and reasoning is
# rendered in every assistant turn that has it (training targets need it), from either a
# ``reasoning_content`` field or a ``<think>…</think>`` prefix of the content.
# ``{% generation %}`` marks assistant text for transformers' assistant-token masks; the GGUF
# exporter strips those tags because other Jinja engines do not know them.
_TEMPLATE = r"""
{%- macro render_content(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is none -%}
{%- else -%}{%- for part in content -%}
{%- if part is string -%}{{ part }}
{%- elif part.type == 'image' or part.type == 'image_url' or 'image' in part -%}@@IMAGE@@
{%- elif part.type == 'video' or 'video' in part -%}@@VIDEO@@
{%- elif 'text' in part -%}{{ part.text }}
{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
{%- if message.role == 'assistant' -%}
{%- set content = render_content(message.content) -%}
{%- set reasoning = message.reasoning_content if message.reasoning_content is defined and message.reasoning_content is not none else '' -%}
{%- if not reasoning and '</think>' in content -%}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}
{%- set content = content.split('</think>')[-1] -%}
{%- endif -%}
{{- '<|im_start|>assistant\n' -}}
{%- generation -%}
{%- if reasoning -%}
{{- '<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') -}}
{%- else -%}
{{- content -}}
{%- endif -%}
{{- '<|im_end|>' -}}
{%- endgeneration -%}
{{- '\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\n' + render_content(message.content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{- '<think>\n\n</think>\n\n' -}}
{%- endif -%}
{%- endif -%}
""".strip()


def chat_template(
    image_placeholder: str = QWEN_IMAGE_PLACEHOLDER, video_placeholder: str = QWEN_VIDEO_PLACEHOLDER
) -> str:
    """The Qwen3-style chat template, with the text an image/video part renders to."""
    return _TEMPLATE.replace("@@IMAGE@@", image_placeholder).replace("@@VIDEO@@", video_placeholder)


def strip_generation_tags(template: str) -> str:
    """Remove transformers-only ``{% generation %}`` markers so plain Jinja can run the template."""
    for tag in ("{%- generation -%}", "{%- endgeneration -%}", "{% generation %}", "{% endgeneration %}"):
        template = template.replace(tag, "")
    return template


def default_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """A few hundred English, arithmetic and colour/shape sentences, generated deterministically."""
    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "pink"]
    shapes = ["circle", "square", "triangle", "rectangle", "star", "hexagon", "diamond", "oval"]
    places = ["left of", "right of", "above", "below", "next to", "inside", "behind"]
    subjects = ["The cat", "A student", "My teacher", "The model", "Our robot", "The chart", "Each answer"]
    verbs = ["reads", "counts", "draws", "explains", "checks", "solves", "describes", "compares"]
    objects = ["the picture", "a question", "the numbers", "every step", "the table", "a short story"]
    lines: list[str] = []
    for _ in range(n // 4):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        val = {"+": a + b, "-": a - b, "*": a * b}[op]
        lines.append(f"What is {a} {op} {b}? Let me think step by step: {a} {op} {b} = {val}. The answer is {val}.")
        c1, c2 = rng.sample(colours, 2)
        s1, s2 = rng.choice(shapes), rng.choice(shapes)
        lines.append(f"The {c1} {s1} is {rng.choice(places)} the {c2} {s2}. What color is the {s1}? It is {c1}.")
        who, first = rng.choice(subjects), f"{rng.choice(verbs)} {rng.choice(objects)}"
        lines.append(f"{who} {first}, then {rng.choice(verbs)} {rng.choice(objects)}.")
        lines.append(
            f"Question: How many {rng.choice(shapes)}s are there? I count {rng.randint(1, 9)}, "
            "so the final answer is that number.\nWe can't be sure, but it's likely; they'll agree."
        )
    return lines


def build_tokenizer(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    style: str = "qwen",
    *,
    extra_special_tokens: Sequence[str] = (),
    image_placeholder: str = QWEN_IMAGE_PLACEHOLDER,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``corpus`` (default: :func:`default_corpus`) and save it.

    ``style`` picks the pre-tokenizer regex: "qwen" (Qwen2) or "llama" (Llama-3).
    ``vocab_size`` counts the BPE vocabulary (256 bytes + merges); the special tokens are
    appended after it, as in Qwen checkpoints. ``extra_special_tokens`` adds control tokens
    some processors need (e.g. SmolVLM's ``<image>``), and ``image_placeholder`` is what the
    chat template writes for an image part.
    """
    if style not in PATTERNS:
        raise ValueError(f"unknown tokenizer style {style!r}; expected one of {sorted(PATTERNS)}")
    if vocab_size <= 256:
        raise ValueError(f"vocab_size must exceed the 256 byte tokens, got {vocab_size}")
    tok = Tokenizer(models.BPE(byte_fallback=False, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERNS[style]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = list(corpus) if corpus is not None else default_corpus()
    # Repeat the corpus so small corpora still yield enough merges to reach vocab_size.
    tok.train_from_iterator(itertools.chain(texts, texts), trainer=trainer)

    specials = list(SPECIAL_TOKENS) + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        add_bos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        padding_side="left",
    )
    hf.chat_template = chat_template(image_placeholder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    return hf
