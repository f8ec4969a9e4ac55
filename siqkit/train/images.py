"""Image resolution for training: the recipe's pixel cap, and how many tokens images become.

``train.max_image_pixels`` caps the training resolution the same way for every vision
family: an image larger than the cap (width x height) is scaled down, keeping its aspect
ratio, before the student's processor sees it (:func:`cap_image`); the processor then
applies its own limits as usual (Qwen-VL's ``min_pixels``/``max_pixels`` and rounding to
whole merged patches, SmolVLM/Idefics3's tiling, LLaVA's fixed crop). Evaluation is not
affected: it sees images as the processor resizes them.

:func:`image_token_counts` asks the processor itself how many placeholder tokens an image
of a given size becomes (``_get_num_multimodal_tokens``, the count transformers keeps for
vLLM, computed from the resize limits without touching pixels), so the memory planner
counts tokens the way training will produce them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from siqkit.errors import SiqkitError


class ImageCountError(SiqkitError):
    """The student's processor cannot say how many tokens an image becomes."""


def capped_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """``(width, height)`` scaled down to at most ``max_pixels`` pixels, aspect kept; unchanged when it fits."""
    if not max_pixels or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def cap_image(image: Any, max_pixels: int | None) -> Any:
    """A PIL image scaled down to ``max_pixels`` (bicubic), or the image itself when it fits."""
    size = capped_size(*image.size, max_pixels)
    if size == image.size:
        return image
    from PIL import Image

    return image.resize(size, Image.Resampling.BICUBIC)


def image_sizes(paths: Iterable[Path]) -> list[tuple[int, int]]:
    """``(width, height)`` of each image file, read from its header (pixels are not decoded)."""
    from PIL import Image

    sizes = []
    for p in paths:
        with Image.open(p) as im:
            sizes.append(im.size)
    return sizes


def image_token_counts(processor: Any, sizes: list[tuple[int, int]], max_pixels: int | None = None) -> list[int]:
    """Placeholder tokens per image of each ``(width, height)``, after the pixel cap, as the
    processor's own resize rules give them."""
    counter = getattr(processor, "_get_num_multimodal_tokens", None)
    if counter is None:
        raise ImageCountError(f"{type(processor).__name__} cannot count image tokens without images")
    if not sizes:
        return []
    capped = [capped_size(w, h, max_pixels) for w, h in sizes]
    unique = sorted(set(capped))
    counts = counter(image_sizes=[(h, w) for w, h in unique]).num_image_tokens  # (height, width) there
    by_size = dict(zip(unique, counts))
    return [int(by_size[s]) for s in capped]


def patches_per_token(config: Any) -> int:
    """Vision-tower positions per image token: Qwen-VL merges 2x2 patches, Idefics3/SmolVLM
    shuffle ``scale_factor``² of them into one token, LLaVA keeps one per patch."""
    vision = getattr(config, "vision_config", None)
    merge = getattr(vision, "spatial_merge_size", None)
    if merge:
        return int(merge) ** 2
    scale = getattr(config, "scale_factor", None)
    if scale:
        return int(scale) ** 2
    return 1
