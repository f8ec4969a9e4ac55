"""Checkpoints named by Hugging Face repo id, found in the local Hugging Face cache.

A recipe's checkpoint ``path`` (``student.path``, a ``transformers``/``vllm`` teacher's
``path``, ``export.model``) may be written as a repo id, ``owner/name``: it is then resolved
to its snapshot folder in the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``,
else ``~/.cache/huggingface/hub``) through ``huggingface_hub.snapshot_download(...,
local_files_only=True)``, the ``main`` revision. Nothing is downloaded unless the recipe sets
``run.allow_download: true``; then a missing snapshot is fetched with ``snapshot_download``
(which honours ``HF_HUB_OFFLINE`` and ``HF_TOKEN``).

What counts as a repo id: exactly ``owner/name`` (letters, digits, ``-``, ``_``, ``.``), not
starting with ``.``, ``/`` or ``~``, and no folder of that name in the current directory. A
local folder that happens to look like a repo id is written ``./owner/name``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w-]*(?:\.[\w-]+)*/[A-Za-z0-9][\w.-]*$")


class CheckpointNotFound(ValueError):
    """A repo id that is neither cached nor (downloads allowed) downloadable; its message is one line."""


def is_repo_id(value: str | Path | None) -> bool:
    """Whether a checkpoint ``path`` is written as a Hub repo id (see the module docstring)."""
    if value is None:
        return False
    text = str(value)
    return bool(REPO_ID.match(text)) and ".." not in text and not Path(text).exists()


def cache_dir() -> Path:
    """The Hugging Face hub cache folder in use."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_checkpoint(value: str | Path, allow_download: bool = False) -> Path:
    """The local snapshot folder of repo id ``value``; raise :class:`CheckpointNotFound` when
    it is not cached and downloads are off (or the download fails)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo = str(value)
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if not allow_download:
        raise CheckpointNotFound(
            f"{repo}: not in the Hugging Face cache ({cache_dir()}) and downloads are off; fetch it with "
            f"`hf download {repo}`, set run.allow_download: true, or write a local folder as ./{repo}")
    try:
        return Path(snapshot_download(repo))
    except Exception as e:  # noqa: BLE001 -- any hub failure becomes one line naming the repo
        raise CheckpointNotFound(f"{repo}: download failed ({type(e).__name__}: {str(e).splitlines()[0]})") from None
