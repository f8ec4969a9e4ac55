"""Load and save multimodal processors, with or without torchvision.

transformers builds Qwen-VL and SmolVLM processors with a video processor, and its video
processors need torchvision; without it even an image-only processor cannot be built. Many
CPU-only installs (and phones' build hosts) have no torchvision, and siqkit never feeds
videos, so :func:`load_processor` falls back to a processor whose video part is a
:class:`NoVideoProcessor` placeholder: images and text work exactly as usual, videos raise.
With torchvision installed it is just
``AutoProcessor.from_pretrained``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

PROCESSOR_CONFIG = "processor_config.json"


class NoVideoProcessor:
    """Stands in for a video processor when torchvision is missing; processing a video raises.

    Keeps the saved video settings as attributes, because some processors read defaults
    such as ``num_frames`` and ``fps`` from their video processor even for image inputs.
    """

    num_frames = None
    fps = None

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = dict(settings or {})
        for key, value in self.settings.items():
            if key.isidentifier():
                setattr(self, key, value)

    def __call__(self, *args: Any, **kwargs: Any):
        raise ImportError("processing videos needs torchvision, which is not installed")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.settings)


@contextlib.contextmanager
def _allow_missing_parts() -> Iterator[None]:
    """Let ProcessorMixin accept a :class:`NoVideoProcessor` while constructing a processor."""
    original = ProcessorMixin.check_argument_for_proper_class

    def check(self, argument_name, argument):
        if isinstance(argument, NoVideoProcessor):
            return None
        return original(self, argument_name, argument)

    ProcessorMixin.check_argument_for_proper_class = check
    try:
        yield
    finally:
        ProcessorMixin.check_argument_for_proper_class = original


def _needs_video(processor_class: type) -> bool:
    return "video_processor" in inspect.signature(processor_class.__init__).parameters


def build_processor(processor_class: type, **parts: Any) -> ProcessorMixin:
    """Construct ``processor_class(**parts)``; a missing or ``None`` video part becomes a placeholder."""
    if _needs_video(processor_class):
        video = parts.get("video_processor")
        if video is None or isinstance(video, dict):
            parts["video_processor"] = NoVideoProcessor(video)
        if isinstance(parts["video_processor"], NoVideoProcessor):
            with _allow_missing_parts():
                return processor_class(**parts)
    return processor_class(**parts)


def save_processor(
    processor: ProcessorMixin, out_dir: str | Path, *, video_processor: dict[str, Any] | None = None
) -> None:
    """Save a processor; one built with a placeholder video part gets ``video_processor`` as its config.

    The written folder is the standard layout (``processor_config.json`` with the nested
    image/video processor settings, tokenizer files, ``chat_template.jinja``), so a machine
    with torchvision loads it with ``AutoProcessor`` and gets the real video processor.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    placeholder = getattr(processor, "video_processor", None)
    if not isinstance(placeholder, NoVideoProcessor):
        processor.save_pretrained(out)
        return
    video_processor = video_processor if video_processor is not None else placeholder.to_dict() or None
    processor.tokenizer.save_pretrained(out)
    config: dict[str, Any] = {"processor_class": type(processor).__name__}
    image_cfg = processor.image_processor.to_dict()
    # Store the canonical class name, as save_pretrained does, so either backend can load it.
    image_cfg["image_processor_type"] = image_cfg.get("image_processor_type", "").removesuffix("Pil")
    image_cfg.pop("_processor_class", None)
    config["image_processor"] = image_cfg
    if video_processor is not None:
        config["video_processor"] = video_processor
    sig = inspect.signature(type(processor).__init__).parameters
    for name in sig:
        if name in ("self", "image_processor", "tokenizer", "video_processor", "chat_template", "kwargs"):
            continue
        if hasattr(processor, name):
            config[name] = getattr(processor, name)
    (out / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if processor.chat_template:
        (out / "chat_template.jinja").write_text(processor.chat_template)


def load_processor(path: str | Path, **kwargs: Any) -> ProcessorMixin:
    """``AutoProcessor.from_pretrained(path)``, falling back to an image-only build without torchvision."""
    try:
        return AutoProcessor.from_pretrained(path, **kwargs)
    except (ImportError, AttributeError, ValueError, TypeError) as err:
        if is_torchvision_available():
            raise
        cfg_file = Path(path) / PROCESSOR_CONFIG
        if not cfg_file.is_file():
            raise
        config = json.loads(cfg_file.read_text())
        processor_class = getattr(transformers, config.get("processor_class", ""), None)
        if processor_class is None or not _needs_video(processor_class):
            raise
        parts: dict[str, Any] = {
            "image_processor": AutoImageProcessor.from_pretrained(path, **kwargs),
            "tokenizer": AutoTokenizer.from_pretrained(path, **kwargs),
            "video_processor": NoVideoProcessor(config.get("video_processor")),
        }
        template = Path(path) / "chat_template.jinja"
        if template.is_file():
            parts["chat_template"] = template.read_text()
        sig = inspect.signature(processor_class.__init__).parameters
        for name, value in config.items():
            if name in sig and name not in parts:
                parts[name] = value
        try:
            return build_processor(processor_class, **parts)
        except Exception:
            raise err from None
