"""to_model_input and augment_batch on tensors."""

import pytest
import torch

from raysweep.data import augment_batch, to_model_input


def _uint8(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def test_shape_dtype_range_without_resize() -> None:
    images = _uint8((5, 3, 32, 32))
    x = to_model_input(images, 32, 3)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x * 255, images.float())
    assert x.min() >= 0 and x.max() <= 1


def test_gray_to_rgb_repeats_the_plane_and_upscales_8_to_32() -> None:
    images = _uint8((4, 1, 8, 8))
    x = to_model_input(images, 32, 3)
    assert x.shape == (4, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert 0 <= x.min() and x.max() <= 1


def test_upscale_is_bilinear_with_half_pixel_centres() -> None:
    # align_corners=False maps output column j to input coordinate (j + 0.5) / 4 - 0.5, so for
    # 8 -> 32 column 4k + 1 sits at k - 1/8: value 7/8 v[k] + 1/8 v[k - 1].
    row = torch.tensor([0, 40, 80, 200, 10, 90, 255, 30], dtype=torch.uint8)
    images = row.expand(1, 1, 8, 8).contiguous()
    x = to_model_input(images, 32, 1)[0, 0]
    v = row.float() / 255
    for k in range(1, 8):
        expected = 7 / 8 * v[k] + 1 / 8 * v[k - 1]
        assert torch.allclose(x[:, 4 * k + 1], expected.expand(32), atol=1e-6)


def test_constant_image_stays_constant_under_resize() -> None:
    images = torch.full((2, 3, 28, 28), 77, dtype=torch.uint8)
    for size in (32, 224, 14):
        x = to_model_input(images, size, 3)
        assert x.shape == (2, 3, size, size)
        assert torch.allclose(x, torch.full_like(x, 77 / 255), atol=1e-6)


def test_rgb_to_one_channel_uses_luma() -> None:
    images = torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    images[:, 1] = 255
    x = to_model_input(images, 4, 1)
    assert x.shape == (1, 1, 4, 4)
    assert torch.allclose(x, torch.full_like(x, 0.587))


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="channels"):
        to_model_input(_uint8((1, 2, 4, 4)), 4, 3)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        to_model_input(_uint8((3, 4, 4)), 4, 3)


@pytest.mark.parametrize("kind", ["none", "flip_crop", "crop_rotate15", "crop_flip_jitter_rotate2"])
def test_augment_shape_range_and_determinism(kind: str) -> None:
    x = torch.rand((16, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    a = augment_batch(x, kind, torch.Generator().manual_seed(5))
    b = augment_batch(x, kind, torch.Generator().manual_seed(5))
    c = augment_batch(x, kind, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    if kind == "none":
        assert a is x
    else:
        assert not torch.equal(a, c)
        assert not torch.equal(a, x)


def test_flip_crop_is_a_shifted_possibly_mirrored_copy() -> None:
    x = torch.rand((64, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    out = augment_batch(x, "flip_crop", torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(x.shape[0]):
        candidates = [
            p[:, dy : dy + 8, dx : dx + 8]
            for p in (padded[i], padded[i].flip(-1))
            for dy in range(9)
            for dx in range(9)
        ]
        matches = [j for j, c in enumerate(candidates) if torch.equal(c, out[i])]
        assert matches, f"image {i} is not a crop of the padded (flipped) input"
        flips += matches[0] >= 81
    assert 16 <= flips <= 48  # flip probability 1/2 over 64 images


def test_crop_rotate_without_shift_keeps_the_centre() -> None:
    # A constant image rotated by <= 15 degrees and shifted by <= 4 px keeps its centre pixels.
    x = torch.full((8, 3, 32, 32), 0.6)
    out = augment_batch(x, "crop_rotate15", torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, :, 12:20, 12:20], torch.full((8, 3, 8, 8), 0.6), atol=1e-5)
    assert (out < 0.59).any()  # zeros came in from outside


def test_unknown_augmentation_lists_valid() -> None:
    x = torch.rand((1, 3, 4, 4))
    with pytest.raises(ValueError, match="valid: none, flip_crop, crop_rotate15, crop_flip_jitter"):
        augment_batch(x, "mixup", torch.Generator())


def test_utrera_recipe_jitters_brightness_and_rotates_by_at_most_2_degrees() -> None:
    """The authors' recipe on a constant grey image: contrast and saturation leave it alone,
    brightness scales it by f ~ U[0.75, 1.25], and a ±2° rotation with a ≤ 4 px shift leaves
    the centre untouched."""
    x = torch.full((256, 3, 32, 32), 0.5)
    out = augment_batch(x, "crop_flip_jitter_rotate2", torch.Generator().manual_seed(0))
    centre = out[:, :, 8:24, 8:24]
    level = centre.mean(dim=(1, 2, 3))
    assert torch.allclose(centre, level.view(-1, 1, 1, 1).expand_as(centre), atol=1e-5)
    assert 0.5 * 0.75 - 1e-6 <= float(level.min()) and float(level.max()) <= 0.5 * 1.25 + 1e-6
    assert float(level.max() - level.min()) > 0.2  # the brightness really varies
    rotated = augment_batch(
        torch.full((64, 3, 32, 32), 0.5), "crop_rotate15", torch.Generator().manual_seed(0)
    )
    # A 2° rotation moves a corner by < 1 px; 15° by several: fewer zeros come in.
    assert (out[:, 0] == 0).float().mean() < (rotated[:, 0] == 0).float().mean()
