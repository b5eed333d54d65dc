"""Batch transforms on tensors: uint8 storage -> model input, and train-time augmentation.

Normalisation (x - mean) / std is deliberately absent: it lives in the model's first layer,
in exactly one place, so attacks and measures always work on [0, 1] pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from raysweep.data.info import AUGMENTATIONS

# Standard CIFAR augmentation pads 4 pixels of zeros before the random 32x32 crop.
CROP_PADDING = 4
#: The ±15° rotation raysweep used for Utrera et al.'s "random cropping and rotation" before
#: their code was read; kept as the named recipe ``crop_rotate15``.
WIDE_ROTATION_DEGREES = 15.0
#: Utrera et al.'s code (tools/transforms.py of utrerf/robust_transfer_learning):
#: RandomCrop(padding=4), RandomHorizontalFlip, ColorJitter(.25, .25, .25), RandomRotation(2).
JITTER = 0.25
SMALL_ROTATION_DEGREES = 2.0

# ITU-R BT.601 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = (0.299, 0.587, 0.114)


def to_model_input(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 [N, C, h, w] -> float32 [N, channels, size, size] in [0, 1].

    x = images / 255, then, if (h, w) != (size, size), bilinear resampling with
    ``antialias=False, align_corners=False`` (Utrera et al. 2021, A.3: "we up-scale our images
    with bi-linear interpolation"), then channel matching: a grayscale image becomes RGB by
    repeating its plane (as the papers feed MNIST-family data to ImageNet ResNets); an RGB image
    for a one-channel model becomes Y = 0.299 R + 0.587 G + 0.114 B. Float input is taken as
    already in [0, 1]. Resizing comes before channel repetition because it is 3x cheaper.

    Call this per batch: a whole upscaled split (e.g. 50,000 x 3 x 224 x 224 float32) is 30 GB.
    """
    if images.ndim != 4:
        raise ValueError(f"to_model_input expects [N, C, H, W], got shape {tuple(images.shape)}")
    if channels not in (1, 3) or images.shape[1] not in (1, 3):
        raise ValueError(
            f"channels must be 1 or 3 (images have {images.shape[1]}, asked for {channels})"
        )
    if images.dtype == torch.uint8:
        x = images.to(torch.float32).div_(255.0)
    elif images.is_floating_point():
        x = images.to(torch.float32)
    else:
        raise ValueError(f"to_model_input expects uint8 or float images, got {images.dtype}")
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        # Bilinear weights are convex, so only rounding can leave [0, 1].
        x = x.clamp_(0.0, 1.0)
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    elif x.shape[1] == 3 and channels == 1:
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * luma).sum(dim=1, keepdim=True)
    return x


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random augmentation of a float batch [N, C, H, W] in [0, 1], one draw per image.

    - ``"none"``: returns ``x`` itself.
    - ``"flip_crop"``: the standard CIFAR recipe: horizontal flip with probability 1/2, then a
      random H x W crop of the image zero-padded by 4 pixels, i.e. out[i, j] = x[i + dy, j + dx]
      with integer dy, dx ~ U{-4..4} and zeros outside.
    - ``"crop_rotate15"``: random crop (the same integer shift) and rotation by θ ~ U[-15°, 15°],
      composed into one affine map per image and applied with ``affine_grid``/``grid_sample``
      (bilinear, zeros outside). A reading of Utrera et al. 2021, A.3 ("random cropping and
      rotation") that their code does not follow; kept for sweeps that used it.
    - ``"crop_flip_jitter_rotate2"``: Utrera et al.'s code: the crop above, a horizontal flip
      with probability 1/2, colour jitter (brightness, contrast and saturation factors each
      ~ U[0.75, 1.25], applied in that order; torchvision draws the order at random) and a
      rotation θ ~ U[-2°, 2°] composed with the crop. Their code applies it to RGB targets only
      (MNIST-family targets get none): ``finetune.augment`` can say so per target.

    All randomness comes from ``generator`` (which must live on ``x.device``), so the same
    generator state gives the same batch. Output stays in [0, 1].
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; valid: {', '.join(AUGMENTATIONS)}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(
            f"augment_batch expects float [N, C, H, W], got {x.dtype} {tuple(x.shape)}"
        )
    if kind == "none" or x.shape[0] == 0:
        return x
    if kind == "flip_crop":
        return _random_crop(_random_flip(x, generator), CROP_PADDING, generator)
    if kind == "crop_rotate15":
        return _crop_rotate(x, CROP_PADDING, WIDE_ROTATION_DEGREES, generator)
    jittered = _colour_jitter(_random_flip(x, generator), JITTER, generator)
    return _crop_rotate(jittered, CROP_PADDING, SMALL_ROTATION_DEGREES, generator)


def _colour_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(b, c, s) with b = c = s = ``strength``, per image:

    brightness x·f_b; contrast (x − m)·f_c + m with m the mean grey level of the image;
    saturation g + (x − g)·f_s with g the grey image (BT.601 luma); each f ~ U[1 − s, 1 + s],
    clamped to [0, 1] after each step as torchvision does. Saturation leaves grey images as
    they are."""
    n = x.shape[0]
    draws = torch.rand(3, n, 1, 1, 1, generator=generator, device=x.device)
    factors = 1 + (draws * 2 - 1) * strength
    out = (x * factors[0]).clamp_(0.0, 1.0)
    mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * factors[1] + mean).clamp_(0.0, 1.0)
    if out.shape[1] == 3:
        grey = _grey(out)
        out = (grey + (out - grey) * factors[2]).clamp_(0.0, 1.0)
    return out


def _grey(x: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] BT.601 luma of an RGB batch (the batch itself if grey)."""
    if x.shape[1] == 1:
        return x
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * luma).sum(dim=1, keepdim=True)


def _random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random H x W window of the zero-padded batch, gathered for all images at once."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [N, H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: result is [N, H, W, C].
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def _crop_rotate(
    x: torch.Tensor, pad: int, max_degrees: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotation about the centre plus an integer-pixel shift, one bilinear resampling.

    In normalised coordinates (u = 2x/W, v = 2y/H) a pixel-space rotation by θ reads
    [[cos θ, -sin θ · H/W], [sin θ · W/H, cos θ]], and a shift of d pixels is 2d/W (or 2d/H).
    """
    n, _, h, w = x.shape
    opts = {"generator": generator, "device": x.device}
    theta = (torch.rand(n, **opts) * 2 - 1) * math.radians(max_degrees)
    dy = torch.randint(-pad, pad + 1, (n,), **opts).to(x.dtype)
    dx = torch.randint(-pad, pad + 1, (n,), **opts).to(x.dtype)
    cos, sin = torch.cos(theta).to(x.dtype), torch.sin(theta).to(x.dtype)
    affine = torch.stack(
        [
            torch.stack([cos, -sin * h / w, 2 * dx / w], dim=1),
            torch.stack([sin * w / h, cos, 2 * dy / h], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)
