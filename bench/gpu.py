"""GPU trials: raysweep's fine-tune trial against the plain way, alone and packed per GPU.

    python bench/gpu.py            # ResNet-50, 224 px, blocks 0 1 3 9, 1/2/4/8 trials per GPU
    python bench/gpu.py --tiny     # small_cnn, 32 px, a few images: runs on a CPU in seconds

A trial fine-tunes on ``--images`` training images (uint8, 32×32 RGB like CIFAR; synthetic:
class-coloured noise, so no data set is needed on the GPU machine) for ``--epochs`` epochs
with the ``flip_crop`` augmentation, then evaluates on ``--test`` images. Two ways:

- raysweep: :func:`raysweep.train.finetune` with the worker's own settings
  (:func:`raysweep.worker.finetune.speed_settings`: bf16 autocast and channels_last on a GPU,
  :func:`raysweep.worker.inputs.make_prepare` / ``make_augment``): uint8 splits on the
  device, up-scaling and augmentation there, the frozen prefix without autograd.
- plain: the reference code's loop: per-image torchvision transforms (resize, random crop
  with 4 px padding, flip) in ``DataLoader`` workers on the CPU, float32 batches copied to
  the device, the whole network run every batch; the same bf16 autocast and channels_last,
  so that only the data path and the loop differ.

Figures: per blocks, images/s (training image-steps plus evaluated images, per second of
trial wall) and trials/hour of each way; then raysweep trials at 1, 2, 4, 8 per GPU (one
process each, started together after a warm-up trial): trials/hour of the GPU and the
fraction of time it was busy (``nvidia-smi`` utilisation sampled every 0.2 s). The last line:

    gpu: device=… arch=… size=… images=… raysweep_h=b0:…,… plain_h=b0:…,… speedup=b0:…x,…
         img_s=b0:…,… packed_h=1:…,2:…,… busy=1:…,2:…     (one line)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setup:
    """One bench trial's shape."""

    arch: str
    images: int
    test: int
    epochs: int
    batch: int
    device: str
    loader_workers: int


def synthetic(n: int, seed: int, classes: int = 10) -> tuple[Any, Any]:
    """``n`` uint8 32×32 RGB images of ``classes`` colours plus noise, and their labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    colours = torch.rand(classes, 3, 1, 1, generator=torch.Generator().manual_seed(99))
    img = 0.5 + 0.5 * (colours[y] - 0.5) + 0.15 * torch.randn(n, 3, 32, 32, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), y


def target_model(setup: Setup) -> tuple[Any, Any]:
    """A fresh model placed and sped up as a trial's worker does; (model, autocast)."""
    from raysweep.models import build_model
    from raysweep.protocol import WorkerContext
    from raysweep.worker.finetune import speed_settings

    model = build_model(setup.arch, 10, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    gpu = setup.device == "cuda"
    ctx = WorkerContext("", None, False, 1, "", gpu=gpu, bf16=gpu, channels_last=gpu)
    return speed_settings(model, ctx)


def raysweep_trial(setup: Setup, blocks: int, seed: int = 0) -> float:
    """Seconds of one trial through :func:`raysweep.train.finetune`."""
    from raysweep.train import OptimConfig, ScheduleConfig, finetune
    from raysweep.worker.inputs import make_augment, make_prepare

    model, autocast = target_model(setup)
    (x, y), (tx, ty) = synthetic(setup.images, seed), synthetic(setup.test, seed + 1)
    started = _synchronised(setup.device)
    with autocast:
        finetune(
            model, x, y, tx, ty, blocks=blocks, update_frozen_bn_stats=False,
            optim=OptimConfig(lr=0.01, batch_size=setup.batch),
            schedule=ScheduleConfig(epochs=setup.epochs), eval_epochs=[setup.epochs],
            prepare=make_prepare(model, channels_last=setup.device == "cuda"),
            augment=make_augment("flip_crop"), seed=seed,
        )  # fmt: skip
    return _synchronised(setup.device) - started


def plain_trial(setup: Setup, blocks: int, seed: int = 0) -> float:
    """Seconds of one trial the reference code's way (module docstring)."""
    import torch

    from raysweep.models.freeze import configure_trainable, set_finetune_mode

    model, autocast = target_model(setup)
    train_loader, test_loader = _plain_loaders(setup, model.input_size, seed)
    opt = torch.optim.SGD(configure_trainable(model, blocks), lr=0.01, momentum=0.9)
    fmt = torch.channels_last if setup.device == "cuda" else torch.preserve_format
    started = _synchronised(setup.device)
    with autocast:
        for _ in range(setup.epochs):
            set_finetune_mode(model, blocks, False)
            for xb, yb in train_loader:
                xb = xb.to(setup.device, non_blocking=True).to(memory_format=fmt)
                loss = torch.nn.functional.cross_entropy(model(xb), yb.to(setup.device))
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(xb.to(setup.device).to(memory_format=fmt)).argmax(1).cpu() == yb).sum())
                for xb, yb in test_loader
            )
    assert 0 <= correct <= setup.test
    return _synchronised(setup.device) - started


def _plain_loaders(setup: Setup, size: int, seed: int) -> tuple[Any, Any]:
    """Per-image torchvision pipelines in DataLoader workers, as the reference code ran."""
    import torch
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    resize = [transforms.ConvertImageDtype(torch.float32), transforms.Resize((size, size))]
    augment = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()]

    class Images(Dataset):
        def __init__(self, data: tuple[Any, Any], pipeline: Any) -> None:
            self.data, self.pipeline = data, transforms.Compose(pipeline)

        def __len__(self) -> int:
            return len(self.data[1])

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return self.pipeline(self.data[0][i]), int(self.data[1][i])

    common = {"num_workers": setup.loader_workers, "pin_memory": setup.device == "cuda"}
    train = Images(synthetic(setup.images, seed), resize + augment)
    test = Images(synthetic(setup.test, seed + 1), resize)
    return (
        DataLoader(train, batch_size=setup.batch, shuffle=True, **common),
        DataLoader(test, batch_size=512, **common),
    )


def _synchronised(device: str) -> float:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def images_per_trial(setup: Setup) -> int:
    return setup.epochs * setup.images + setup.test


class BusySampler:
    """Mean GPU utilisation (``nvidia-smi``, GPU 0, every 0.2 s) while in the ``with``; None
    without nvidia-smi."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = ["nvidia-smi", "-i", "0", "--query-gpu=utilization.gpu", "--format=csv,noheader"]
        while not self.stop.wait(0.2):
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.split()[0]) / 100)
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return

    def __enter__(self) -> BusySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def busy(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def packed(setup: Setup, blocks: int, per_gpu: int, repeats: int) -> tuple[float, float | None]:
    """Trials/hour of ``per_gpu`` processes each running ``repeats`` raysweep trials at once
    on one device, and the GPU's busy fraction meanwhile."""
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = Path(tmp)
        config = json.dumps({"setup": asdict(setup), "blocks": blocks, "repeats": repeats})
        workers = [
            subprocess.Popen([sys.executable, __file__, "--worker", config, str(folder / str(i))])
            for i in range(per_gpu)
        ]
        while sum((folder / f"{i}.ready").exists() for i in range(per_gpu)) < per_gpu:
            if any(w.poll() not in (None, 0) for w in workers):
                raise RuntimeError("a bench worker failed during its warm-up trial")
            time.sleep(0.05)
        with BusySampler() as sampler:
            (folder / "go").touch()
            if any(w.wait() != 0 for w in workers):
                raise RuntimeError("a bench worker failed")
        spans = [json.loads((folder / f"{i}.json").read_text()) for i in range(per_gpu)]
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    return 3600.0 * per_gpu * repeats / wall, sampler.busy


def worker(config: str, prefix: str) -> int:
    """One packed process: a warm-up trial, then ``repeats`` timed ones after the go signal."""
    spec = json.loads(config)
    setup, blocks = Setup(**spec["setup"]), spec["blocks"]
    _limit_threads(setup)
    raysweep_trial(setup, blocks)
    Path(prefix + ".ready").touch()
    go = Path(prefix).parent / "go"
    while not go.exists():
        time.sleep(0.01)
    start = time.time()
    for seed in range(spec["repeats"]):
        raysweep_trial(setup, blocks, seed)
    Path(prefix + ".json").write_text(json.dumps({"start": start, "end": time.time()}))
    return 0


def _limit_threads(setup: Setup) -> None:
    """One thread per CPU process (the packed processes share the cores)."""
    if setup.device == "cpu":
        import torch

        torch.set_num_threads(1)


def single(setup: Setup, blocks: list[int]) -> dict[str, dict[int, float]]:
    """Seconds per trial of each way, per blocks, after one untimed warm-up of each."""
    raysweep_trial(setup, blocks[0])
    plain_trial(setup, blocks[0])
    return {
        "raysweep": {b: raysweep_trial(setup, b) for b in blocks},
        "plain": {b: plain_trial(setup, b) for b in blocks},
    }


def summary(setup: Setup, seconds: dict[str, dict[int, float]], pack: dict[int, Any]) -> str:
    """The bench's last line (module docstring)."""
    size = target_model(setup)[0].input_size

    def per(values: dict[Any, Any], fmt: str) -> str:
        return ",".join(f"{k}:{fmt.format(v)}" for k, v in values.items())

    hourly = {way: {f"b{b}": 3600 / s for b, s in t.items()} for way, t in seconds.items()}
    ours, plain = seconds["raysweep"], seconds["plain"]
    speedup = {f"b{b}": plain[b] / ours[b] for b in ours}
    img_s = {f"b{b}": images_per_trial(setup) / s for b, s in ours.items()}
    busy = {k: "n/a" if v is None else f"{100 * v:.0f}%" for k, (_, v) in pack.items()}
    return (
        f"gpu: device={_device_name(setup.device)} arch={setup.arch} size={size} "
        f"images={setup.images} "
        f"raysweep_h={per(hourly['raysweep'], '{:.0f}')} plain_h={per(hourly['plain'], '{:.0f}')} "
        f"speedup={per(speedup, '{:.2f}x')} img_s={per(img_s, '{:.0f}')} "
        f"packed_h={per({k: h for k, (h, _) in pack.items()}, '{:.0f}')} busy={per(busy, '{}')}"
    )


def _device_name(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return name.replace(" ", "_")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="small_cnn, 32 px, few images (CPU)")
    p.add_argument("--images", type=int, help="training images per trial (default 1600)")
    p.add_argument("--test", type=int, help="evaluated images per trial (default 2000)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default 2)")
    p.add_argument("--blocks", help="comma-separated blocks (default 0,1,3,9)")
    p.add_argument("--per-gpu", help="comma-separated trials per GPU (default 1,2,4,8)")
    p.add_argument("--repeats", type=int, default=2, help="trials per packed process")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def setup_of(args: argparse.Namespace) -> tuple[Setup, list[int], list[int]]:
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    tiny = args.tiny
    setup = Setup(
        arch="small_cnn" if tiny else "resnet50",
        images=args.images or (64 if tiny else 1600),
        test=args.test or (64 if tiny else 2000),
        epochs=args.epochs or (1 if tiny else 2),
        batch=32 if tiny else 128,
        device=device,
        loader_workers=0 if tiny else min(8, os.cpu_count() or 1),
    )
    blocks = [int(b) for b in (args.blocks or ("0,1,3" if tiny else "0,1,3,9")).split(",")]
    per_gpu = [int(k) for k in (args.per_gpu or ("1,2" if tiny else "1,2,4,8")).split(",")]
    return setup, blocks, per_gpu


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.worker:
        return worker(*args.worker)
    setup, blocks, per_gpu = setup_of(args)
    _limit_threads(setup)
    print(f"[gpu] {setup}", flush=True)
    seconds = single(setup, blocks)
    for way, times in seconds.items():
        print(f"[gpu] {way}: " + ", ".join(f"blocks {b} {s:.2f} s" for b, s in times.items()))
    pack = {k: packed(setup, 1 if 1 in blocks else blocks[0], k, args.repeats) for k in per_gpu}
    for k, (hourly, busy) in pack.items():
        shown = "n/a" if busy is None else f"{100 * busy:.0f} %"
        print(f"[gpu] {k} per GPU: {hourly:.0f} trials/h, GPU busy {shown}", flush=True)
    print(summary(setup, seconds, pack))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
