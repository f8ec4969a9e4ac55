"""Translate a Hugging Face byte-level BPE tokenizer into GGUF ``tokenizer.ggml.*`` metadata.

llama.cpp's "gpt2" tokenizer model takes the byte-level vocabulary and merges as they are in
``tokenizer.json``; what it cannot read from them is the pre-tokenizer, which it knows only
by name. We recognise the split regex and name it ("qwen2", "llama-bpe"). Special tokens
become CONTROL tokens, other added tokens (Qwen3's ``<think>``) USER_DEFINED, and the end
of a chat turn (``<|im_end|>`` / ``<|eot_id|>``) is written as both EOS and EOT so that
llama.cpp stops where the Hugging Face model does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from siqkit.errors import SiqkitError
from siqkit.models.tokenizer import LLAMA3_PATTERN, QWEN2_PATTERN, strip_generation_tags

PRE_TYPES = {QWEN2_PATTERN: "qwen2", LLAMA3_PATTERN: "llama-bpe"}
"""Split regex -> llama.cpp pre-tokenizer name."""

TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


class TokenizerExportError(SiqkitError, ValueError):
    """The tokenizer cannot be written as a GGUF BPE vocabulary."""


@dataclass
class GGUFVocab:
    """Everything the GGUF ``tokenizer.ggml.*`` keys hold."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    chat_template: str | None = None
    special: dict[str, int] = field(default_factory=dict)

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for value, add in (
            (self.bos_id, writer.add_bos_token_id),
            (self.eos_id, writer.add_eos_token_id),
            (self.eot_id, writer.add_eot_token_id),
            (self.pad_id, writer.add_pad_token_id),
        ):
            if value is not None:
                add(value)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _pre_type(tok_json: dict) -> str:
    patterns: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Split":
                pat = node.get("pattern", {})
                patterns.append(pat.get("Regex") or pat.get("String") or "")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tok_json.get("pre_tokenizer"))
    for pattern in patterns:
        if pattern in PRE_TYPES:
            return PRE_TYPES[pattern]
    raise TokenizerExportError(
        "unrecognised pre-tokenizer split pattern(s) "
        f"{patterns or '(none)'}; known: {', '.join(sorted(PRE_TYPES.values()))}. "
        "Pass pre=<llama.cpp pre-tokenizer name> if you know the matching one."
    )


def _token_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # serialised AddedToken
        return value.get("content")
    return str(value)


def _bos_from_post_processor(post: dict | None) -> str | None:
    """The special token a TemplateProcessing post-processor puts first, if any (Llama-3's BOS)."""
    if not post:
        return None
    nodes = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for node in nodes:
        if node.get("type") == "TemplateProcessing" and node.get("single"):
            first = node["single"][0]
            if "SpecialToken" in first:
                return first["SpecialToken"]["id"]
    return None


def read_vocab(model_dir: str | Path, vocab_size: int | None = None, pre: str | None = None) -> GGUFVocab:
    """Read ``tokenizer.json`` / ``tokenizer_config.json`` from ``model_dir`` into a :class:`GGUFVocab`.

    ``vocab_size`` (the model's embedding rows) pads the list with unused ``[PADn]`` tokens
    when the checkpoint reserves more rows than the tokenizer has entries.
    """
    folder = Path(model_dir)
    tj_path = folder / "tokenizer.json"
    if not tj_path.is_file():
        raise TokenizerExportError(f"{folder} has no tokenizer.json (a fast byte-level BPE tokenizer is needed)")
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    cfg_path = folder / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise TokenizerExportError(f"tokenizer model is {model.get('type')!r}; only byte-level BPE is supported")

    id_to_text: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    types: dict[int, int] = {i: gguf.TokenType.NORMAL for i in id_to_text}
    for added in tj.get("added_tokens", []):
        i = int(added["id"])
        id_to_text[i] = added["content"]
        types[i] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    n = max(id_to_text) + 1
    if vocab_size is not None:
        if vocab_size < n:
            raise TokenizerExportError(f"tokenizer has {n} tokens but the model only {vocab_size} embedding rows")
        n = vocab_size
    tokens, token_types = [], []
    for i in range(n):
        if i in id_to_text:
            tokens.append(id_to_text[i])
            token_types.append(int(types[i]))
        else:
            tokens.append(f"[PAD{i}]")
            token_types.append(int(gguf.TokenType.UNUSED))

    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    text_to_id = {t: i for i, t in enumerate(tokens)}

    def tid(value) -> int | None:
        text = _token_text(value)
        return text_to_id.get(text) if text else None

    eos_id = tid(tcfg.get("eos_token"))
    eot_id = next((text_to_id[t] for t in TURN_END_TOKENS if t in text_to_id), None)
    post_bos = _bos_from_post_processor(tj.get("post_processor"))
    bos_id = tid(tcfg.get("bos_token")) if tcfg.get("bos_token") else tid(post_bos)
    add_bos = bool(tcfg.get("add_bos_token", post_bos is not None))
    if bos_id is None:
        # llama.cpp otherwise falls back to a fixed id; point it at the document separator as
        # Qwen checkpoints do (never added, since add_bos is false).
        bos_id = text_to_id.get("<|endoftext|>")
        add_bos = False
    template = tcfg.get("chat_template")
    if isinstance(template, list):  # named templates: keep the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja = folder / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    return GGUFVocab(
        tokens=tokens,
        token_types=token_types,
        merges=merges,
        pre=pre or _pre_type(tj),
        bos_id=bos_id,
        eos_id=eos_id if eos_id is not None else eot_id,
        eot_id=eot_id,
        pad_id=tid(tcfg.get("pad_token")),
        add_bos=add_bos,
        chat_template=strip_generation_tags(template) if template else None,
        special={tokens[i]: i for i in range(len(tokens)) if token_types[i] == gguf.TokenType.CONTROL},
    )
