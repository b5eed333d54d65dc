"""Low-resolution / low-pass variants (Utrera et al. Table 2), checked with the FFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor

from raysweep.data import dataset_info, dataset_names, load_dataset
from raysweep.data.variants import (
    low_pass,
    low_pass_float,
    low_pass_mask,
    low_resolution,
    low_resolution_float,
)


def _radius2(height: int, width: int) -> Tensor:
    """Squared radial frequency in cycles per pixel, in torch.fft.fft2 order."""
    ku = torch.fft.fftfreq(height, dtype=torch.float64)
    kv = torch.fft.fftfreq(width, dtype=torch.float64)
    return ku[:, None] ** 2 + kv[None, :] ** 2


def _conjugate(mask: Tensor) -> Tensor:
    """mask[-u, -v] (indices mod H, W)."""
    return torch.roll(mask.flip(0, 1), shifts=(1, 1), dims=(0, 1))


def _noise(n: int, size: int, seed: int) -> Tensor:
    """uint8 noise in [64, 192]: filtering it never reaches the clamp at 0 or 255."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(64, 193, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_mask_hand_checked_on_a_4x4_grid() -> None:
    # fft2 frequencies per axis: index 0, 1, 2, 3 -> 0, 1, -2, -1.
    assert low_pass_mask(4, 4, 1).nonzero().tolist() == [[2, 2]]  # (-2, -2) is self-conjugate
    # Next radius² 5: (1, -2)/(-1, -2) (indices 6, 14) and (-2, 1)/(-2, -1) (9, 11); the pair
    # with the lower index comes first and the cut after index 6 brings its conjugate 14 along.
    assert low_pass_mask(4, 4, 2).flatten().nonzero().flatten().tolist() == [6, 10, 14]
    assert int(low_pass_mask(4, 4, 5).sum()) == 5
    with pytest.raises(ValueError, match=r"drop must be in 0\.\.15, got 16"):
        low_pass_mask(4, 4, 16)


@pytest.mark.parametrize(
    ("height", "width", "drop", "zeroed"),
    [(224, 224, 1024, 1025), (30, 20, 56, 57), (30, 20, 57, 57), (31, 21, 40, 40)],
)
def test_mask_is_the_highest_radial_frequencies(
    height: int, width: int, drop: int, zeroed: int
) -> None:
    mask = low_pass_mask(height, width, drop)
    assert int(mask.sum()) == zeroed
    assert torch.equal(mask, _conjugate(mask))  # keeps the filtered image real
    r2 = _radius2(height, width)
    assert r2[mask].min() >= r2[~mask].max()
    assert not mask[0, 0]
    assert torch.equal(mask, low_pass_mask(height, width, drop))


def test_low_pass_float_zeroes_exactly_the_masked_coefficients() -> None:
    x = _noise(2, 224, 0).double()
    before, after = torch.fft.fft2(x), torch.fft.fft2(low_pass_float(x))
    mask = low_pass_mask(224, 224)
    scale = before.abs().max()
    assert after[..., mask].abs().max() < 1e-12 * scale
    torch.testing.assert_close(after[..., ~mask], before[..., ~mask], rtol=0, atol=1e-9 * scale)
    assert before[..., mask].abs().mean() > 1e3  # there was something to remove


def test_low_pass_uint8_is_the_float_result_up_to_rounding() -> None:
    x = _noise(2, 224, 1)
    exact = low_pass_float(x.double())
    out = low_pass(x)
    residual = out.double() - exact
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert residual.abs().max() <= 0.5 + 1e-4  # low_pass computes in float32: ~1e-5 off
    mask = low_pass_mask(224, 224)
    spectrum, rounding = torch.fft.fft2(out.double()), torch.fft.fft2(residual)
    original = torch.fft.fft2(x.double())
    # What is left in the dropped band is exactly the rounding residual's spectrum, and the
    # kept band is the original's plus that same residual.
    torch.testing.assert_close(spectrum[..., mask], rounding[..., mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(
        spectrum[..., ~mask] - rounding[..., ~mask], original[..., ~mask], rtol=0, atol=1e-6
    )
    # Uniform rounding error has E|D_k|² = H·W/12 per coefficient (Parseval): measured 0.083.
    per_coefficient = (rounding.abs() ** 2).mean() / (224 * 224)
    assert 0.07 < per_coefficient < 0.09
    band = (original[..., mask].abs() ** 2).sum()
    assert (spectrum[..., mask].abs() ** 2).sum() < 1e-3 * band  # measured 6e-5


def test_low_resolution_reads_block_centres_and_is_a_projection() -> None:
    g = torch.Generator().manual_seed(2)
    blocks = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    image = blocks.repeat_interleave(7, dim=2).repeat_interleave(7, dim=3)  # constant 7x7 blocks
    centres = slice(3, 224, 7)
    exact = low_resolution_float(image.double())
    torch.testing.assert_close(exact[..., centres, centres], blocks.double(), rtol=0, atol=1e-9)
    out = low_resolution(image)
    assert torch.equal(out[..., centres, centres], blocks)
    assert (out.double() - exact).abs().max() <= 0.5 + 1e-9
    # Between centres the output is bilinear, not blocky: 96 % of pixels change here.
    assert (out != image).double().mean() > 0.9
    noise = _noise(1, 224, 3).double()
    once = low_resolution_float(noise)
    torch.testing.assert_close(low_resolution_float(once), once, rtol=0, atol=1e-9)
    assert (once - noise).abs().mean() > 20  # noise at 224 px does not survive 32 px


def test_constant_images_are_unchanged() -> None:
    for value in (0, 137, 255):
        image = torch.full((2, 3, 224, 224), value, dtype=torch.uint8)
        assert torch.equal(low_pass(image), image)
        assert torch.equal(low_resolution(image), image)
    with pytest.raises(ValueError, match=r"expected uint8 images \[N, C, H, W\], got torch.float"):
        low_pass(torch.zeros(1, 3, 8, 8))


def test_registered_caltech101_variants(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(4)
    for i, label in enumerate(["accordion", "zebra", "zebra"]):
        path = tmp_path / "caltech101" / "train" / label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (224, 224, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(path)
    base = load_dataset("caltech101", "train", data_root=tmp_path)
    variants = [("caltech101_lowres", low_resolution), ("caltech101_lowpass", low_pass)]
    for name, transform in variants:
        assert name in dataset_names()
        ds = load_dataset(name, "train", data_root=tmp_path)
        assert torch.equal(ds.images, transform(base.images))
        assert not torch.equal(ds.images, base.images)
        assert ds.labels.tolist() == [0, 1, 1]
        assert ds.info == dataset_info(name)
        assert (ds.info.name, ds.info.num_classes, ds.info.image_size) == (name, 101, 224)
        assert ds.info.mean == dataset_info("caltech101").mean
    with pytest.raises(FileNotFoundError, match="dataset 'caltech101' not found"):
        load_dataset("caltech101_lowpass", "test", data_root=tmp_path)
    with pytest.raises(ValueError, match="caltech101_lowres, caltech101_lowpass"):
        dataset_info("caltech101_blurry")
