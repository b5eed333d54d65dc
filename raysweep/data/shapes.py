"""Procedural geometric shapes: the offline source dataset ``shapes`` and its near target.

Every class is an approximate signed distance function (SDF) in the shape's own frame,
``d(u, v) < 0`` inside, in units of the shape's radius r (pixels). With pixel coordinates
(x, y), centre (cx, cy), rotation φ:

    u = ((x - cx) cos φ + (y - cy) sin φ) / r,   v = (-(x - cx) sin φ + (y - cy) cos φ) / r

A filled shape covers a pixel by  a = clip(0.5 - r·d, 0, 1)  (one-pixel anti-aliased edge);
an outline of width w by  a = clip(0.5 - (r·|d| - w/2), 0, 1).  The image is
``a · foreground + (1 - a) · background + noise``. Everything is vectorised over the batch.

Distance to ``shapes`` (intended order, nearest first): ``shapes_outline`` (same ten
geometries drawn as outlines, textured backgrounds, a different palette) < ``textures``
(no objects at all, see ``textures.py``) and ``digits`` (real grayscale 8x8 scans).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SHAPE_CLASSES = (
    "disc",
    "square",
    "triangle",
    "plus",
    "ring",
    "bar",
    "star",
    "ellipse",
    "arrow",
    "crescent",
)
IMAGE_SIZE = 32
_CHUNK = 1000  # images per vectorised chunk: bounds temporaries to ~4 MB per [chunk, 32, 32] array

Sdf = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _box(u: np.ndarray, v: np.ndarray, hu: float, hv: float) -> np.ndarray:
    """Exact SDF of the axis-aligned rectangle |u| <= hu, |v| <= hv."""
    qu, qv = np.abs(u) - hu, np.abs(v) - hv
    outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
    return outside + np.minimum(np.maximum(qu, qv), 0.0)


def _polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """SDF of a convex counter-clockwise polygon as the max over edges of the signed
    distance to the edge's line (exact inside and near the edges, which is all we sample)."""
    d = np.full(u.shape, -np.inf)
    for a, b in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        edge = b - a
        normal = np.array([edge[1], -edge[0]]) / np.hypot(*edge)  # outward for CCW order
        d = np.maximum(d, (u - a[0]) * normal[0] + (v - a[1]) * normal[1])
    return d


def _regular(sides: int, radius: float, start: float) -> np.ndarray:
    angles = start + 2 * np.pi * np.arange(sides) / sides
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


_TRIANGLE = _regular(3, 1.1, np.pi / 2)
_ARROW_HEAD = np.array([[1.0, 0.0], [0.25, 0.6], [0.25, -0.6]])  # counter-clockwise


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Five-pointed star in polar form: ρ <= f(φ), f zig-zagging between 0.45 and 1.05.
    ρ - f is not a true distance; scaling by 0.6 keeps the edge about one pixel wide."""
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    t = np.abs(((phi / (2 * np.pi / 5)) % 1.0) - 0.5) * 2  # 1 at a point, 0 between points
    return 0.6 * (rho - (0.45 + 0.6 * t))


SDFS: dict[str, Sdf] = {
    "disc": lambda u, v: np.hypot(u, v) - 1.0,
    "square": lambda u, v: _box(u, v, 0.8, 0.8),
    "triangle": lambda u, v: _polygon(u, v, _TRIANGLE),
    "plus": lambda u, v: np.minimum(_box(u, v, 1.0, 0.28), _box(u, v, 0.28, 1.0)),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.72) - 0.28,
    "bar": lambda u, v: _box(u, v, 1.05, 0.25),
    "star": _star,
    # Scaled implicit ellipse, semi-axes 1.0 x 0.55: close to the true distance near the edge.
    "ellipse": lambda u, v: (np.hypot(u, v / 0.55) - 1.0) * 0.55,
    "arrow": lambda u, v: np.minimum(_box(u + 0.35, v, 0.6, 0.18), _polygon(u, v, _ARROW_HEAD)),
    "crescent": lambda u, v: np.maximum(np.hypot(u, v) - 1.0, 0.8 - np.hypot(u - 0.5, v)),
}


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n labels with class counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _frame(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image shape coordinates (u, v) [n, 32, 32]: random centre, radius, rotation."""
    radius = rng.uniform(7.0, 12.0, n)
    # Keep the centre far enough from the border that most of the shape stays visible.
    cx = rng.uniform(radius * 0.7, IMAGE_SIZE - radius * 0.7)
    cy = rng.uniform(radius * 0.7, IMAGE_SIZE - radius * 0.7)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    pix = np.arange(IMAGE_SIZE, dtype=np.float64) + 0.5
    dx = pix[None, None, :] - cx[:, None, None]
    dy = pix[None, :, None] - cy[:, None, None]
    c, s = np.cos(phi)[:, None, None], np.sin(phi)[:, None, None]
    r = radius[:, None, None]
    return (dx * c + dy * s) / r, (-dx * s + dy * c) / r, radius


def _signed_distance(labels: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    d = np.empty_like(u)
    for k, name in enumerate(SHAPE_CLASSES):
        rows = labels == k
        if rows.any():
            d[rows] = SDFS[name](u[rows], v[rows])
    return d


def _contrasting(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random RGB foreground and background; a pair closer than 0.45 (Euclidean, [0, 1]^3)
    takes the background's complement as foreground, so every shape stays visible."""
    bg = rng.uniform(0.0, 1.0, (n, 3))
    fg = rng.uniform(0.0, 1.0, (n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < 0.45
    fg[close] = 1.0 - bg[close]
    return fg, bg


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape [n]; returns [n, 3]."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _textured_background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pastel base colour modulated by a random low-frequency grating, [n, 3, 32, 32]."""
    base = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.15, 0.45, n), rng.uniform(0.6, 0.9, n))
    angle = rng.uniform(0.0, np.pi, n)[:, None, None]
    freq = rng.uniform(1.0, 3.0, n)[:, None, None] * 2 * np.pi / IMAGE_SIZE
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
    pix = np.arange(IMAGE_SIZE, dtype=np.float64)
    proj = pix[None, None, :] * np.cos(angle) + pix[None, :, None] * np.sin(angle)
    wave = 0.12 * np.sin(freq * proj + phase)
    return base[:, :, None, None] + wave[:, None]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _draw_chunk(labels: np.ndarray, rng: np.random.Generator, outline: bool) -> np.ndarray:
    n = labels.shape[0]
    u, v, radius = _frame(rng, n)
    d = _signed_distance(labels, u, v) * radius[:, None, None]  # in pixels
    if outline:
        width = rng.uniform(1.5, 2.5, n)[:, None, None]
        alpha = np.clip(0.5 - (np.abs(d) - width / 2), 0.0, 1.0)
        bg = _textured_background(rng, n)
        fg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.7, 1.0, n), rng.uniform(0.1, 0.4, n))
    else:
        alpha = np.clip(0.5 - d, 0.0, 1.0)
        fg, bg = _contrasting(rng, n)
        bg = np.broadcast_to(bg[:, :, None, None], (n, 3, IMAGE_SIZE, IMAGE_SIZE))
    a = alpha[:, None]
    img = a * fg[:, :, None, None] + (1.0 - a) * bg
    img += rng.normal(0.0, 0.03, img.shape)
    return _to_uint8(img)


def draw_shapes(n: int, seed: int, outline: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """n balanced images of the ten ``SHAPE_CLASSES``: uint8 [n, 3, 32, 32], int64 [n].

    Filled (``outline=False``, the ``shapes`` source): random RGB foreground/background with
    contrast >= 0.45, Gaussian pixel noise σ = 0.03. Outlined (``shapes_outline``): dark
    saturated strokes 1.5-2.5 px wide on pastel backgrounds carrying a low-frequency grating.
    Deterministic in (n, seed, outline): one ``Generator(PCG64(seed))`` drives everything.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    labels = balanced_labels(n, len(SHAPE_CLASSES), rng)
    images = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop] = _draw_chunk(labels[start:stop], rng, outline)
    return images, labels
