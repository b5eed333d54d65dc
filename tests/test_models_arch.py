"""Architecture registry, the TransferNet split, Normalize and head replacement."""

from __future__ import annotations

import pytest
import torch

from raysweep.models import Normalize, architecture_names, build_model, replace_head

REQUIRED = {"small_cnn", "resnet18", "resnet50", "cifar_resnet18", "cifar_resnet50"}


def test_registry_names_and_unknown_name() -> None:
    names = architecture_names()
    assert REQUIRED <= set(names)
    assert names == sorted(names)
    with pytest.raises(ValueError, match="unknown architecture 'resnet51'; valid: .*small_cnn"):
        build_model("resnet51", 10, [0.5], [0.5])


def test_normalize_expands_grey_statistics() -> None:
    norm = Normalize([0.5], [0.25], channels=3)
    x = torch.full((1, 3, 2, 2), 0.75)
    torch.testing.assert_close(norm(x), torch.ones(1, 3, 2, 2))
    rgb = Normalize([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    torch.testing.assert_close(
        rgb(torch.zeros(1, 3, 1, 1)).flatten(), torch.tensor([-0.2, -0.4, -0.6])
    )
    with pytest.raises(ValueError, match="expected 1 or 3"):
        Normalize([0.1, 0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match="positive"):
        Normalize([0.1], [0.0])


def test_small_cnn_shapes_and_split() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, [0.5], [0.25]).eval()
    assert (model.input_size, model.input_channels, len(model.blocks)) == (32, 3, 4)
    h = model.stem(model.normalize(torch.rand(2, 3, 32, 32)))
    sides = []
    for block in model.blocks:
        h = block(h)
        sides.append(h.shape[-1])
    assert sides == [16, 8, 4, 4] and h.shape[1] == 128
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.features(x)
        assert feats.shape == (2, 128)
        torch.testing.assert_close(model(x), model.head(feats))
        torch.testing.assert_close(model(x), model.run_stages(model.run_stages(x, 0, 3), 3))


@pytest.mark.parametrize(
    ("arch", "blocks", "feat"),
    [("cifar_resnet18", 8, 512), ("resnet20", 9, 64), ("vgg13", 5, 512),
     ("vgg13_half_linear", 5, 512)],
)  # fmt: skip
def test_cifar_architectures_forward(arch: str, blocks: int, feat: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 7, [0.5, 0.5, 0.5], [0.2, 0.2, 0.2]).eval()
    assert model.input_size == 32 and len(model.blocks) == blocks
    with torch.no_grad():
        assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, feat)
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_imagenet_and_wide_resnets_block_lists() -> None:
    r50 = build_model("resnet50", 1000, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert len(r50.blocks) == 16 and r50.input_size == 224
    # Utrera's "9 blocks" = layer3 (6 blocks at 1024 ch) + layer4 (3 blocks at 2048 ch).
    assert [b.conv3.out_channels for b in r50.blocks[-9:]] == [1024] * 6 + [2048] * 3
    assert r50.head.in_features == 2048 and hasattr(r50.stem, "maxpool")
    assert len(build_model("resnet18", 10, [0.5], [0.5]).blocks) == 8
    c50 = build_model("cifar_resnet50", 10, [0.5], [0.5])
    assert c50.stem.conv1.kernel_size == (3, 3) and not hasattr(c50.stem, "maxpool")
    for arch, n in (("resnet20x10", 9), ("resnet32x10", 15)):
        wide = build_model(arch, 10, [0.5], [0.5])
        assert len(wide.blocks) == n and wide.head.in_features == 640
    with torch.no_grad():
        assert r50.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_pure_linear_vgg_is_affine_in_eval_mode() -> None:
    torch.manual_seed(0)
    x1, x2 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    relative_gap = {}
    for arch in ("vgg13_pure_linear", "vgg13_half_linear"):
        model = build_model(arch, 10, [0.5], [0.25]).eval()
        with torch.no_grad():
            gap = model(0.3 * x1 + 0.7 * x2) - 0.3 * model(x1) - 0.7 * model(x2)
            relative_gap[arch] = float(gap.abs().max() / model(x1).abs().max())
    assert relative_gap["vgg13_pure_linear"] < 1e-5
    # The half-linear variant is not affine: max pooling is its non-linearity.
    assert relative_gap["vgg13_half_linear"] > 1e-3


def test_replace_head_inits_are_seeded() -> None:
    model = build_model("small_cnn", 10, [0.5], [0.25])
    replace_head(model, 300, init="normal", seed=5)
    w = model.head.weight.detach().clone()
    assert model.head.out_features == 300 and w.shape == (300, 128)
    assert abs(float(w.mean())) < 0.02 and abs(float(w.std()) - 1.0) < 0.02
    assert float(model.head.bias.detach().abs().max()) == 0.0
    replace_head(model, 300, init="normal", seed=5)
    assert torch.equal(model.head.weight, w)
    replace_head(model, 300, init="normal", seed=6)
    assert not torch.equal(model.head.weight, w)
    replace_head(model, 4, init="default", seed=0)
    bound = 1 / 128**0.5
    assert float(model.head.weight.detach().abs().max()) <= bound
    assert float(model.head.bias.detach().abs().max()) <= bound
    with pytest.raises(ValueError, match="normal, default"):
        replace_head(model, 4, init="xavier")
