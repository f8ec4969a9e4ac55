"""Near-identical images: re-encoded and resized copies match; other pictures do not."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from siqkit.curate.images import fingerprint, hamming, image_clusters


def jpeg(im: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).resize((320, 240), Image.Resampling.BICUBIC)
    return im.filter(ImageFilter.GaussianBlur(2))


def shape(kind: str, color: str, size: int = 64, at: int = 16) -> Image.Image:
    im = Image.new("RGB", (size, size), (240, 240, 250))
    d = ImageDraw.Draw(im)
    box = (at, at, at + size // 2, at + size // 2)
    (d.ellipse if kind == "circle" else d.rectangle)(box, fill=color)
    return im


def cluster(images: list[Image.Image], distance: int = 4) -> list[int]:
    fps = [fingerprint(im) for im in images]
    thumbs = np.frombuffer(b"".join(t for _, t in fps), dtype=np.uint8).reshape(len(fps), -1)
    return image_clusters(np.array([h for h, _ in fps], dtype=np.uint64), distance, thumbs).tolist()


def test_copies_match():
    p = photo(0)
    labels = cluster([p, jpeg(p), p.resize((280, 210)), jpeg(p.resize((200, 150)), 60), photo(1)])
    assert labels[:4] == [labels[0]] * 4 and labels[4] != labels[0]
    s = shape("circle", "red")
    labels = cluster([s, jpeg(s), s.resize((56, 56))])
    assert len(set(labels)) == 1


def test_different_pictures_do_not_match_even_when_their_hashes_do():
    images = [shape("circle", "red"), shape("square", "red"), shape("circle", "blue"), shape("circle", "brown"),
              shape("circle", "red", at=4)]
    hashes = np.array([fingerprint(im)[0] for im in images], dtype=np.uint64)
    assert hamming(hashes[:1].repeat(4), hashes[1:]).min() <= 4  # the hash alone would merge some
    assert len(set(cluster(images))) == len(images)


def test_hash_only_clustering_is_transitive():
    h = np.array([0b0, 0b1, 0b11, 0b111111111111], dtype=np.uint64)
    assert image_clusters(h, 1).tolist()[:3] == [0, 0, 0]
    assert image_clusters(h, 1)[3] != 0
    assert len(set(image_clusters(h, 0).tolist())) == 4
