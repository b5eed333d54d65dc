"""The device data path (issue #19): only uint8 images cross to the model's device, batches
are prepared and augmented there, and the metrics equal those of the earlier path, which
prepared each batch on the CPU and then copied it (tests/golden/device_path.json)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import device_path_cases as cases
import pytest
import torch

from raysweep.train import common

GOLDEN = Path(__file__).parent / "golden" / "device_path.json"


@pytest.fixture(scope="module")
def source() -> Iterator[tuple[Any, dict[str, float]]]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the golden metrics were recorded on one thread
    yield cases.pretrained_source()
    torch.set_num_threads(old)


def _same(golden: dict[str, float], got: dict[str, float]) -> None:
    # The golden keys only: other metrics may be added to a run's results.
    assert {k: got[k] for k in golden} == pytest.approx(golden, rel=1e-6, abs=1e-9)


def test_metrics_equal_the_cpu_prepared_path(source: tuple[Any, dict[str, float]]) -> None:
    golden = json.loads(GOLDEN.read_text())
    model, metrics = source
    _same(golden["pretrain"], metrics)
    for name in cases.CASES:
        _same(golden[name], cases.finetune_case(model, name))


def test_streamed_batches_give_the_same_metrics(
    source: tuple[Any, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A split too large for the device stays on the host and streams batch by batch."""
    monkeypatch.setattr(common, "DEVICE_SPLIT_BYTES", 0)
    golden = json.loads(GOLDEN.read_text())
    _same(golden["block_augmented"], cases.finetune_case(source[0], "block_augmented"))


def test_only_uint8_images_cross_to_the_device(
    source: tuple[Any, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every image batch handed to ``to_device`` is uint8, and no 4-D float tensor is moved
    with ``Tensor.to(device)`` behind its back (what ``prepare(x).to(device)`` did)."""
    crossed: list[torch.dtype] = []
    float_moves: list[tuple[int, ...]] = []
    real_to_device, real_to = common.to_device, torch.Tensor.to

    def recording_to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
        if x.ndim == 4:
            crossed.append(x.dtype)
        return real_to_device(x, device)

    def recording_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        moves = "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args)
        if moves and self.ndim == 4 and self.is_floating_point():
            float_moves.append(tuple(self.shape))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(common, "to_device", recording_to_device)
    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    cases.pretrained_source()
    for name in cases.CASES:
        cases.finetune_case(source[0], name)
    assert crossed and set(crossed) == {torch.uint8}
    assert float_moves == []


def test_device_generator_is_the_run_generator_on_the_cpu() -> None:
    gen = torch.Generator().manual_seed(3)
    assert common.device_generator(gen, torch.device("cpu")) is gen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_generator_is_reproducible_on_cuda() -> None:
    def draws(seed: int) -> torch.Tensor:
        run = torch.Generator().manual_seed(seed)
        cuda = torch.device("cuda")
        return torch.cat([torch.rand(4, generator=common.device_generator(run, cuda),
                                     device=cuda) for _ in range(3)])  # fmt: skip

    assert torch.equal(draws(0), draws(0))
    assert not torch.equal(draws(0), draws(1))
