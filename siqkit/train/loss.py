"""The training loss: summed next-token cross-entropy on target tokens, without the full logits.

With a 151k-entry vocabulary the logits of one 2,048-token row are 311M values: in bf16, plus
the fp32 copy and its gradient that the plain loss needs, 2.9 GiB for micro-batch 1 — more
than the 4-bit weights and the activations of a 2B student together. :func:`target_loss`
therefore never builds them whole:

1. the model's body runs without its LM head (``hf_model.<base_model_prefix>``, the module
   that every supported ``*ForCausalLM`` / ``*ForConditionalGeneration`` class calls before
   ``lm_head``), giving the last hidden states;
2. only the positions whose next token is a target (label not ``-100``: the kit's
   assistant-only labels) are kept — the prompt, image tokens and padding never reach the head;
3. the head and the loss run on those hidden states in chunks of :func:`chunk_tokens` rows.
   ``auto``/``chunked``: each chunk is a :func:`torch.utils.checkpoint.checkpoint` of
   ``head -> float -> cross_entropy(reduction="sum")``, so the forward keeps only the chunk's
   input and the backward recomputes one chunk's logits at a time; peak memory carries one
   chunk's ``chunk x vocab`` values instead of ``seq x vocab``. Gradients are exact (the same
   operations, recomputed), also for a trained LM head (``full`` stages; tied embeddings).

On CUDA, ``auto`` uses Liger Kernel's fused linear cross-entropy when the ``liger-kernel``
package is installed (``pip install liger-kernel``), the LM head's weight has the hidden
states' dtype (LoRA/QLoRA stages, where the head is frozen in the compute dtype) and nothing
else applies. Liger was chosen over Apple's cut-cross-entropy because it is the one the
training stacks already ship (TRL, Axolotl, LLaMA-Factory), supports ``reduction="sum"``
and ``ignore_index`` in the same call signature across its releases, and needs only Triton;
it computes the gradient of each chunk during the forward pass, so no logits are
recomputed. Everywhere else (CPU, no Liger, a trained fp32 head) the chunked path runs.

``plain`` is the reference: the whole model's logits, upcast to fp32, one cross-entropy.
Models that post-process logits (``final_logit_softcapping``, ``logit_scale``) or whose LM
head is not a plain linear layer always take it.

Tolerance (tested on CPU in fp32 on tiny twins, ``tests/train/test_loss.py``): the chunked
loss equals the plain one within 1e-5 relative, and every trainable gradient within 1e-4
relative (summation order differs, nothing else). Under bf16 autocast the per-row logits are
computed by matmuls of another shape, so expect agreement to about 1e-2 relative; Liger's own
tests hold its bf16 loss to that order. The GPU paths are still to be measured.
"""

from __future__ import annotations

import logging
from typing import Any

from siqkit.train.data import IGNORE

LOSSES = ("auto", "chunked", "plain")
# One chunk's logits hold at most this many values (64 MiB in fp32): 110 rows for a
# 151,936-entry vocabulary, the whole micro-batch for a tiny twin's 2k vocabulary.
CHUNK_VALUES = 1 << 24
MIN_CHUNK = 16

log = logging.getLogger(__name__)


def chunk_tokens(vocab: int, chunk_values: int = CHUNK_VALUES) -> int:
    """Rows per chunk of the loss for a vocabulary of ``vocab`` entries."""
    return max(MIN_CHUNK, chunk_values // max(1, vocab))


def model_parts(model: Any) -> tuple[Any, Any] | None:
    """``(body, lm_head)`` of a (peft-wrapped) Hugging Face model, or None when the chunked
    loss cannot stand in for its logits (post-processed logits, an unusual head)."""
    import torch

    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    body = getattr(hf, getattr(hf, "base_model_prefix", ""), None)
    if not isinstance(head, torch.nn.Linear) or not isinstance(body, torch.nn.Module) or body is hf:
        return None
    text = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    if getattr(text, "final_logit_softcapping", None) or getattr(text, "logit_scale", None):
        return None
    return body, head


def _chunk_loss(hidden: Any, target: Any, head: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(head(hidden).float(), target, reduction="sum")


def chunked_cross_entropy(hidden: Any, head: Any, target: Any, chunk: int) -> Any:
    """Summed cross-entropy of ``head(hidden)`` against ``target`` (rows, no ignored ones),
    ``chunk`` rows at a time, each chunk recomputed in the backward pass."""
    from torch.utils.checkpoint import checkpoint

    total = None
    for start in range(0, hidden.shape[0], chunk):
        part = checkpoint(_chunk_loss, hidden[start : start + chunk], target[start : start + chunk], head,
                          use_reentrant=False)
        total = part if total is None else total + part
    return total


def _liger(hidden: Any, head: Any) -> Any:
    """Liger's fused linear cross-entropy when it may run here, else None."""
    if hidden.device.type != "cuda" or head.bias is not None or head.weight.dtype != hidden.dtype:
        return None
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")


def plain_loss(model: Any, batch: dict, labels: Any) -> Any:
    """The reference: full logits, fp32, one summed cross-entropy over the shifted labels."""
    import torch.nn.functional as F

    logits = model(**batch).logits
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def target_loss(model: Any, batch: dict, labels: Any, *, loss: str = "auto", chunk: int | None = None) -> Any:
    """Summed next-token cross-entropy of ``model`` on ``batch`` over the non-ignored ``labels``.

    Call it under the loop's autocast. ``loss`` is ``auto`` (Liger on CUDA when it can,
    else chunked), ``chunked`` or ``plain`` (see the module docstring); ``chunk`` overrides
    the rows per chunk.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {', '.join(LOSSES)} (got {loss!r})")
    parts = model_parts(model) if loss != "plain" else None
    if parts is None:
        return plain_loss(model, batch, labels)
    body, head = parts
    hidden = body(**batch)[0][:, :-1]
    target = labels[:, 1:].to(hidden.device)
    keep = target != IGNORE
    hidden, target = hidden[keep], target[keep]
    if hidden.shape[0] == 0:  # nothing to learn here; keep the graph so backward() works
        return hidden.sum().float() * 0.0
    fused = _liger(hidden, head) if loss == "auto" else None
    if fused is not None:
        out = fused(head.weight, hidden, target)
        return out[0] if isinstance(out, tuple) else out
    return chunked_cross_entropy(hidden, head, target, chunk or chunk_tokens(head.out_features))
