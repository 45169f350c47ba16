"""Make VOC-sized sample images (synthetic scenes) so the job runs with no data to download."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw


def draw_scene(rng: np.random.Generator,
               size: tuple[int, int] = (500, 375)) -> tuple[Image.Image, np.ndarray]:
    """One scene (gradient sky, ground, a few solid shapes) and its shapes' boxes (x1, y1, x2, y2)."""
    width, height = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).astype(np.uint8).repeat(width, axis=1)
    noise = rng.integers(-12, 13, pixels.shape)
    img = Image.fromarray(np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    boxes = []
    for _ in range(int(rng.integers(2, 6))):
        x1, y1 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        x2, y2 = x1 + int(rng.integers(40, width // 2)), y1 + int(rng.integers(40, height // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x1, y1, x2, y2), fill=color)
        boxes.append((x1, y1, min(x2, width - 1), min(y2, height - 1)))
    return img, np.asarray(boxes, dtype=np.float32)


def make_samples(out_dir: str, n: int = 8, size: tuple[int, int] = (500, 375), seed: int = 0) -> list[str]:
    """Write ``n`` JPEG scenes (:func:`draw_scene`) to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img, _ = draw_scene(rng, size)
        path = os.path.join(out_dir, f"sample_{i:04d}.jpg")
        img.save(path, quality=90)
        paths.append(path)
    return paths
