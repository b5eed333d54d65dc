"""Low-resolution and low-pass dataset variants (Utrera et al., ICLR 2021, §5 and Table 2).

"We lowered the resolution to 32x32 and zeroed out the top 1,024 (~14%) frequencies,
respectively", on Caltech101 at 224 px. Both are pure functions of uint8 ``[N, C, H, W]``
images returning uint8 images of the same shape; each has a float variant (same maths, no
rounding) so tests can separate the transform from uint8 rounding.

Low resolution: bilinear down to ``size x size`` then bilinear back up to ``H x W``
(``align_corners=False``, no antialiasing). For 224 -> 32 the downsampling then reads exactly
the centre pixel (7i + 3) of each 7 x 7 block, and upsampling puts those values back exactly at
the block centres, so the float transform is a projection: applying it twice changes nothing.

Low pass. The paper does not say which 1,024 coefficients are "the top frequencies", nor on what
grid its ~14 % is measured (1,024 is 2 % of a 224 x 224 spectrum). We take per image and
channel the 2-D DFT ``X[u, v]`` with integer frequencies ``(k_u, k_v)`` in ``[-H/2, H/2) x
[-W/2, W/2)`` (the centred spectrum), rank coefficients by radial frequency
``r² = (k_u / H)² + (k_v / W)²`` (cycles per pixel), highest first, ties broken by
``(min(i, i*), i)`` where ``i`` is the row-major index and ``i*`` that of the conjugate
coefficient ``X[-u, -v]``, and zero the first ``drop``. A real image needs a conjugate-symmetric
spectrum for its filtered version to stay real, so when the cut falls between a coefficient and
its conjugate (which has the same radius), the conjugate is zeroed too: exactly ``drop`` or
``drop + 1`` coefficients are zeroed (1,025 for 224 x 224 and ``drop = 1024``: the top one, the
corner (-112, -112), is its own conjugate). The DC term is never dropped, so a constant image
is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from raysweep.data.catalog import VARIANT_BASES

LOW_RES_SIZE = 32
LOW_PASS_DROP = 1024
_CHUNK = 64  # images per FFT batch: bounds the complex temporaries to ~100 MB at 224 px


def _check_uint8(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )


def _to_uint8(x: Tensor) -> Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def low_resolution_float(images: Tensor, size: int = LOW_RES_SIZE) -> Tensor:
    """Float ``[N, C, H, W]`` -> bilinear down to ``size x size``, bilinear back to ``H x W``."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


def low_resolution(images: Tensor, size: int = LOW_RES_SIZE) -> Tensor:
    """uint8 ``[N, C, H, W]`` at ``size x size`` resolution, same shape (see module docstring)."""
    _check_uint8(images)
    out = torch.empty_like(images)
    for i in range(0, len(images), _CHUNK):
        out[i : i + _CHUNK] = _to_uint8(low_resolution_float(images[i : i + _CHUNK].float(), size))
    return out


@lru_cache(maxsize=16)
def _mask(height: int, width: int, drop: int) -> np.ndarray:
    ku = np.fft.fftfreq(height, d=1.0 / height).round().astype(np.int64)
    kv = np.fft.fftfreq(width, d=1.0 / width).round().astype(np.int64)
    # r² scaled by (H W)² so ties are exact integer comparisons.
    r2 = ((ku[:, None] * width) ** 2 + (kv[None, :] * height) ** 2).ravel()
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    index = np.arange(height * width)
    conjugate = (((-rows) % height) * width + (-cols) % width).ravel()
    pair = np.minimum(index, conjugate)
    order = np.lexsort((index, pair, -r2))  # last key is the primary one
    mask = np.zeros(height * width, dtype=bool)
    mask[order[:drop]] = True
    mask |= mask[conjugate]
    mask.flags.writeable = False
    return mask.reshape(height, width)


def low_pass_mask(height: int, width: int, drop: int = LOW_PASS_DROP) -> Tensor:
    """Boolean ``[H, W]`` mask (``torch.fft.fft2`` order) of the coefficients ``low_pass`` zeroes.

    Raises:
        ValueError: ``drop`` outside ``0 .. H*W - 1`` (the DC term always stays).
    """
    if not 0 <= drop < height * width:
        raise ValueError(f"drop must be in 0..{height * width - 1}, got {drop}")
    return torch.from_numpy(_mask(height, width, drop).copy())


def low_pass_float(images: Tensor, drop: int = LOW_PASS_DROP) -> Tensor:
    """Float ``[N, C, H, W]`` with the ``drop`` highest-frequency DFT coefficients of each
    channel zeroed: ``x' = IDFT(DFT(x) · (1 - mask))``.

    As the mask is conjugate-symmetric, ``x'`` is real and the half spectrum of ``rfft2``
    (columns ``0 .. W/2``) determines it, which halves the work.
    """
    height, width = images.shape[-2:]
    keep = ~low_pass_mask(height, width, drop)[:, : width // 2 + 1].to(images.device)
    return torch.fft.irfft2(torch.fft.rfft2(images) * keep, s=(height, width))


def low_pass(images: Tensor, drop: int = LOW_PASS_DROP) -> Tensor:
    """uint8 ``[N, C, H, W]`` low-pass filtered (see module docstring), rounded and clamped."""
    _check_uint8(images)
    out = torch.empty_like(images)
    for i in range(0, len(images), _CHUNK):
        out[i : i + _CHUNK] = _to_uint8(low_pass_float(images[i : i + _CHUNK].float(), drop))
    return out


# Registered dataset variants: name -> transform of its base's uint8 images. The bases live
# in the torch-free ``catalog.VARIANT_BASES``, which the driver plans with; both must agree.
VARIANT_TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "caltech101_lowres": low_resolution,
    "caltech101_lowpass": low_pass,
}
if set(VARIANT_TRANSFORMS) != set(VARIANT_BASES):
    raise ImportError(
        "raysweep.data.catalog.VARIANT_BASES and VARIANT_TRANSFORMS disagree: "
        f"{sorted(set(VARIANT_TRANSFORMS) ^ set(VARIANT_BASES))}"
    )
