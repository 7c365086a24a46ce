"""Procedural EM-like images with exact masks, for tests and fast experiments without data.

Each image is a textured grey background with non-overlapping myelinated fibres: a light
axon (ellipse) inside a dark myelin ring ~0.3x the axon radius thick, then blur and noise.
Difficulty (density, contrast, noise, blur) varies per image so acquisition functions have
something to tell apart.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from axal.domain import AXON, MYELIN

from .io import DataError, Sample

PIXEL_SIZE = 0.1  # um per pixel; axon radii of ~0.4-1.2 um, as in rodent white matter


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _place_fibres(rng: np.random.Generator, size: int, difficulty: float) -> list[tuple]:
    """Rejection-sample non-overlapping fibres: (cy, cx, a, b, theta, thickness)."""
    r_min, r_max = size * 0.03, size * (0.09 - 0.03 * difficulty)
    r_min = max(r_min, 2.5)
    r_max = max(r_max, r_min + 1.0)
    target = round(size * size * (0.35 + 0.35 * difficulty) / (math.pi * (1.3 * r_max) ** 2) * 2)
    fibres: list[tuple] = []
    for _ in range(target * 15):
        if len(fibres) >= target:
            break
        a = rng.uniform(r_min, r_max)
        b = a * rng.uniform(0.7, 1.0)
        t = max(1.5, a * rng.uniform(0.25, 0.35))  # >= 1.5 px so the ring stays closed
        outer = a + t
        cy, cx = rng.uniform(-0.3 * outer, size + 0.3 * outer, size=2)
        if all(math.hypot(cy - f[0], cx - f[1]) >= outer + f[2] + f[5] + 1.0 for f in fibres):
            fibres.append((cy, cx, a, b, rng.uniform(0, math.pi), t))
    return fibres


def _render(
    rng: np.random.Generator, size: int, difficulty: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and its exact mask (the mask comes from geometry, before blur/noise)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    # background: mid grey with blotchy low-frequency texture, like EM neuropil/extracellular space
    texture = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma=size / 24)
    texture /= texture.std() + 1e-6
    image = 0.55 + 0.06 * texture
    contrast = 1.0 - 0.5 * difficulty  # harder images: myelin and axon closer to background
    myelin_val = 0.55 - contrast * rng.uniform(0.35, 0.45)
    for cy, cx, a, b, theta, t in _place_fibres(rng, size, difficulty):
        r = math.ceil(a + t) + 1
        y0, y1 = max(0, int(cy) - r), min(size, int(cy) + r + 2)
        x0, x1 = max(0, int(cx) - r), min(size, int(cx) + r + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        u = dx * math.cos(theta) + dy * math.sin(theta)
        v = -dx * math.sin(theta) + dy * math.cos(theta)
        inner = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        outer = (u / (a + t)) ** 2 + (v / (b + t)) ** 2 <= 1.0
        axon_val = 0.55 + contrast * rng.uniform(0.1, 0.25)
        mask[y0:y1, x0:x1][outer] = MYELIN
        mask[y0:y1, x0:x1][inner] = AXON
        image[y0:y1, x0:x1][outer] = myelin_val + rng.uniform(-0.03, 0.03)
        image[y0:y1, x0:x1][inner] = axon_val
    # fine speckle inside axons (microtubules/organelles) then optics blur and detector noise
    image += (mask == AXON) * 0.04 * rng.standard_normal((size, size)).astype(np.float32)
    image = gaussian_filter(image, sigma=0.5 + 0.7 * difficulty)
    image += rng.normal(0.0, 0.02 + 0.06 * difficulty, size=(size, size)).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


def make_synthetic(
    n_images: int = 12, size: int = 128, n_subjects: int = 6, seed: int = 0
) -> list[Sample]:
    """Generate `n_images` deterministic EM-like samples, subjects assigned round-robin.

    Image i depends only on (seed, i), so growing `n_images` keeps earlier images unchanged.
    """
    n_images = _check_int(n_images, "dataset.n_images", 1)
    size = _check_int(size, "dataset.size", 16)
    n_subjects = _check_int(n_subjects, "dataset.n_subjects", 1)
    seed = _check_int(seed, "seed", 0)
    offset = np.random.default_rng(seed).uniform()
    width = max(3, len(str(n_images - 1)))  # ids sort in generation order
    samples = []
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        difficulty = (offset + i * 0.6180339887) % 1.0  # spread evenly over easy..hard
        image, mask = _render(rng, size, difficulty)
        samples.append(
            Sample(
                id=f"syn-{i:0{width}d}",
                subject=f"sub-syn{i % n_subjects:02d}",
                image=image,
                mask=mask,
                pixel_size=PIXEL_SIZE,
                path="",
            )
        )
    return samples
