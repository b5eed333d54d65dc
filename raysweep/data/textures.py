"""Procedural textures: ``textures``, the far offline target of the ``shapes`` source.

Ten classes of object-free, image-filling patterns. Each class gives a scalar field
t(x, y) in [0, 1] per image; the image is ``t · c1 + (1 - t) · c2 + noise`` with two random
RGB colours c1, c2 at distance >= 0.45, Gaussian pixel noise σ = 0.03. Angles are measured in
pixel coordinates; frequencies in cycles per 32 pixels.

Unlike ``shapes`` there is no object, no border region and no closed contour: the label
lives in orientation, spatial frequency and periodic structure only (see ``shapes.py`` for
the intended distance order).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from raysweep.data.shapes import IMAGE_SIZE, balanced_labels

TEXTURE_CLASSES = (
    "grating_0",
    "grating_45",
    "grating_90",
    "grating_135",
    "fine_grating",
    "checkerboard",
    "dots",
    "blobs",
    "concentric",
    "speckle",
)
_CHUNK = 1000

Field = Callable[[np.random.Generator, int], np.ndarray]
_PIX = np.arange(IMAGE_SIZE, dtype=np.float64)
_X = _PIX[None, None, :]
_Y = _PIX[None, :, None]


def _col(values: np.ndarray) -> np.ndarray:
    return values[:, None, None]


def _grating(rng: np.random.Generator, n: int, angle: float | None) -> np.ndarray:
    """Sinusoid 0.5 + 0.5 sin(2π f (x cos α + y sin α)/32 + ψ); α = angle ± 10° (or any
    angle with 6-9 cycles when ``angle`` is None), f = 2-4 cycles, random phase ψ."""
    if angle is None:
        alpha, cycles = rng.uniform(0, np.pi, n), rng.uniform(6.0, 9.0, n)
    else:
        alpha = np.deg2rad(angle + rng.uniform(-10.0, 10.0, n))
        cycles = rng.uniform(2.0, 4.0, n)
    proj = _X * _col(np.cos(alpha)) + _Y * _col(np.sin(alpha))
    phase = _col(rng.uniform(0, 2 * np.pi, n))
    return 0.5 + 0.5 * np.sin(2 * np.pi * _col(cycles) * proj / IMAGE_SIZE + phase)


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Axis-aligned squares of side 3-7 px with a random offset: t = (⌊x/s⌋ + ⌊y/s⌋) mod 2."""
    side = _col(rng.integers(3, 8, n).astype(np.float64))
    ox, oy = _col(rng.uniform(0, 8, n)), _col(rng.uniform(0, 8, n))
    return ((np.floor((_X + ox) / side) + np.floor((_Y + oy) / side)) % 2).astype(np.float64)


def _dots(rng: np.random.Generator, n: int) -> np.ndarray:
    """Lattice of discs: period p = 6-9 px, radius 0.2-0.3 p, soft one-pixel edge."""
    period = _col(rng.uniform(6.0, 9.0, n))
    ox, oy = _col(rng.uniform(0, 9, n)), _col(rng.uniform(0, 9, n))
    fx = ((_X + ox) % period) - period / 2
    fy = ((_Y + oy) % period) - period / 2
    radius = period * _col(rng.uniform(0.2, 0.3, n))
    return np.clip(0.5 - (np.hypot(fx, fy) - radius), 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, n: int, cutoff: float) -> np.ndarray:
    """White noise low-passed in Fourier space (keep |k| <= cutoff cycles), rescaled to [0, 1]."""
    noise = rng.normal(size=(n, IMAGE_SIZE, IMAGE_SIZE))
    k = np.fft.fftfreq(IMAGE_SIZE) * IMAGE_SIZE
    keep = np.hypot(k[:, None], k[None, :]) <= cutoff
    field = np.fft.ifft2(np.fft.fft2(noise) * keep).real
    lo = field.min(axis=(1, 2), keepdims=True)
    hi = field.max(axis=(1, 2), keepdims=True)
    return (field - lo) / (hi - lo)


def _blobs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Thresholded low-frequency noise (|k| <= 3 cycles): irregular two-tone blobs."""
    return np.clip((_smooth_noise(rng, n, 3.0) - 0.5) * 6.0 + 0.5, 0.0, 1.0)


def _concentric(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rings 0.5 + 0.5 cos(2π ρ / λ) around a random centre, wavelength λ = 4-7 px."""
    cx, cy = _col(rng.uniform(0, IMAGE_SIZE, n)), _col(rng.uniform(0, IMAGE_SIZE, n))
    wavelength = _col(rng.uniform(4.0, 7.0, n))
    return 0.5 + 0.5 * np.cos(2 * np.pi * np.hypot(_X - cx, _Y - cy) / wavelength)


def _speckle(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-pixel uniform noise: all spatial frequencies at once."""
    return rng.uniform(0.0, 1.0, (n, IMAGE_SIZE, IMAGE_SIZE))


FIELDS: dict[str, Field] = {
    "grating_0": lambda rng, n: _grating(rng, n, 0.0),
    "grating_45": lambda rng, n: _grating(rng, n, 45.0),
    "grating_90": lambda rng, n: _grating(rng, n, 90.0),
    "grating_135": lambda rng, n: _grating(rng, n, 135.0),
    "fine_grating": lambda rng, n: _grating(rng, n, None),
    "checkerboard": _checkerboard,
    "dots": _dots,
    "blobs": _blobs,
    "concentric": _concentric,
    "speckle": _speckle,
}


def _two_colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    c1 = rng.uniform(0.0, 1.0, (n, 3))
    c2 = rng.uniform(0.0, 1.0, (n, 3))
    close = np.linalg.norm(c1 - c2, axis=1) < 0.45
    c2[close] = 1.0 - c1[close]
    return c1, c2


def _draw_chunk(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = labels.shape[0]
    t = np.empty((n, IMAGE_SIZE, IMAGE_SIZE))
    for k, name in enumerate(TEXTURE_CLASSES):
        rows = np.flatnonzero(labels == k)
        if rows.size:
            t[rows] = FIELDS[name](rng, rows.size)
    c1, c2 = _two_colours(rng, n)
    a = t[:, None]
    img = a * c1[:, :, None, None] + (1.0 - a) * c2[:, :, None, None]
    img += rng.normal(0.0, 0.03, img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def draw_textures(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n balanced texture images: uint8 [n, 3, 32, 32] and int64 labels [n] (``TEXTURE_CLASSES``).

    Deterministic in (n, seed): one ``Generator(PCG64(seed))`` drives everything.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    labels = balanced_labels(n, len(TEXTURE_CLASSES), rng)
    images = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop] = _draw_chunk(labels[start:stop], rng)
    return images, labels
