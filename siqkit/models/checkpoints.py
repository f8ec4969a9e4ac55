"""What a local checkpoint folder is: an image-text model or not, and its identity.

:func:`is_vision_checkpoint` reads the folder's ``config.json`` (nothing is downloaded) and
says whether ``AutoModelForImageTextToText`` loads it. :func:`model_identity` names a
checkpoint by its folder and its weight files' names, sizes and times, so a stage can tell
whether a model it already trained or evaluated is still the same one.
"""

from __future__ import annotations

from pathlib import Path

from siqkit.hashing import digest


def is_vision_checkpoint(path: str | Path, trust_remote_code: bool = False) -> bool:
    """True when the checkpoint is an image-text model (``AutoModelForImageTextToText``)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    return cfg.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def model_identity(path: str | Path) -> str:
    """A checkpoint's identity: its folder and its weight files' names, sizes and times."""
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(path).glob("*.safetensors"))
    return digest([str(Path(path).resolve()), files], 16)
