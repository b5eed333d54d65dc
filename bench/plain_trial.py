"""One fine-tuning trial written the plain way: torchvision transforms, a DataLoader, no caching.

This is the baseline of bench/ (a) and (b): what the reference code did per process, and what
Ray's PyTorch example does per trial. Each call loads the source checkpoint from disk, builds a
per-image transform pipeline (ConvertImageDtype → Resize → 3 channels), iterates a shuffled
DataLoader, runs the whole network every batch, and evaluates with a second DataLoader.

The protocol is raysweep's (same subset, same head init, frozen BatchNorms in eval mode, SGD
with step decay), so the accuracies must agree with raysweep's on average; only the data path
and batch order differ.

Run as a script it is the naive runner's per-trial process:
    python bench/plain_trial.py JOB.json CHECKPOINT.pt OUT.json
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def train_one(job: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """Fine-tune one job; returns {"acc": final test accuracy %, "evals": {epoch: acc}, ...}."""
    import torch
    from torch.utils.data import DataLoader, Dataset, Sampler
    from torchvision import transforms

    from raysweep.data import load_dataset, sample_subset
    from raysweep.models import load_checkpoint
    from raysweep.models.freeze import configure_trainable, set_finetune_mode
    from raysweep.worker.finetune import prepare_target_model

    started = time.perf_counter()
    source, _ = load_checkpoint(Path(checkpoint))
    model = prepare_target_model(source, job, job["target"])
    train = load_dataset(job["target"], "train")
    test = load_dataset(job["target"], "test")
    # Per image, as torchvision's examples do; on tensors (not PIL, whose uint8 resize would
    # round every pixel) so that the inputs equal raysweep's batched ones.
    pipeline = transforms.Compose(
        [
            transforms.ConvertImageDtype(torch.float32),
            transforms.Resize((model.input_size, model.input_size), antialias=False),
            transforms.Lambda(lambda x: x.expand(3, -1, -1) if x.shape[0] == 1 else x),
        ]
    )

    class Images(Dataset):
        def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
            self.images, self.labels = images, labels

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return pipeline(self.images[i]), int(self.labels[i])

    index = torch.as_tensor(
        sample_subset(train.labels, job["subset_size"], job["seed"], train.info.num_classes)
    )
    opt_cfg = job["optimizer"]

    class Shuffle(Sampler):
        """One ``randperm`` per epoch from a generator seeded with the job's seed.

        torch's RandomSampler draws a second (empty) permutation per epoch and the loader
        draws a base seed, so with it the batch order would differ from raysweep's, and
        accuracies could only be compared on average, not trial by trial.
        """

        def __init__(self, n: int, seed: int) -> None:
            self.n, self.generator = n, torch.Generator().manual_seed(seed)

        def __len__(self) -> int:
            return self.n

        def __iter__(self) -> Iterator[int]:
            return iter(torch.randperm(self.n, generator=self.generator).tolist())

    loader = DataLoader(
        Images(train.images[index], train.labels[index]),
        batch_size=opt_cfg["batch_size"],
        sampler=Shuffle(len(index), job["seed"]),
    )
    test_loader = DataLoader(Images(test.images, test.labels), batch_size=512)
    params = configure_trainable(model, job["blocks"])
    opt = torch.optim.SGD(
        params,
        lr=opt_cfg["lr"],
        momentum=opt_cfg["momentum"],
        weight_decay=opt_cfg["weight_decay"],
        nesterov=opt_cfg["nesterov"],
    )
    decay = torch.optim.lr_scheduler.MultiStepLR(opt, job["lr_milestones"], job["lr_decay"])
    evals: dict[int, float] = {}
    for epoch in range(1, job["epochs"] + 1):
        set_finetune_mode(model, job["blocks"], job["update_frozen_bn_stats"])
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        decay.step()
        if epoch in job["eval_epochs"] or epoch == job["epochs"]:
            evals[epoch] = accuracy(model, test_loader)
    acc = evals[job["epochs"]]
    return {"key": job["key"], "acc": acc, "evals": evals, "seconds": time.perf_counter() - started}


def accuracy(model: Any, loader: Any) -> float:
    import torch

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


def main(argv: list[str]) -> int:
    job_path, checkpoint, out = argv
    result = train_one(json.loads(Path(job_path).read_text()), checkpoint)
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
