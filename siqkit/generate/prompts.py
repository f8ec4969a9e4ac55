"""Prompts and work keys for the generate stage.

A seed becomes chat messages: an optional system message, then one user message whose
content is one ``{"type": "image"}`` part per image (in order) followed by the text of
the teacher's template. The work key of a sample hashes everything that makes it what it
is — seed, teacher identity, rendered prompt, sampling settings, sample index — so
changing any of them is new work and nothing else is.
"""

from __future__ import annotations

from typing import Any

from siqkit.hashing import digest

DEFAULT_SYSTEM = (
    "You are a careful teacher. Look at the image(s) and the question. Reason step by step "
    "inside <think> and </think>, checking what you see before you conclude. Then give only "
    "the final, short answer inside <answer> and </answer>."
)


def render_messages(teacher: Any, question: str, source: str, split: str, n_images: int) -> list[dict]:
    """The chat messages for one seed under one teacher's prompt settings."""
    prompt = teacher.prompt
    text = prompt.template.format(question=question, source=source, split=split)
    content: list[dict] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": text})
    system = DEFAULT_SYSTEM if prompt.system is None else prompt.system
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return messages


def sampling_dict(teacher: Any, seed: int) -> dict:
    s = teacher.sampling
    return {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p, "seed": seed}


def work_key(seed_id: str, identity: dict, messages: list[dict], sampling: dict, sample_index: int) -> str:
    """The key of one sample: (seed, teacher, prompt, sampling, sample index)."""
    return digest([seed_id, identity, messages, sampling, sample_index])
