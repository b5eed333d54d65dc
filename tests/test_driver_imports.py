"""Issues #7 and #13: the driver (validate, plan, schedule, record, report) never imports torch.

The driver-side checks run in a fresh interpreter, since this test process has torch loaded
already. The torch-free name tables are compared with the torch modules that implement them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import raysweep
import raysweep.data as data_pkg
import raysweep.models as models_pkg
import raysweep.train as train_pkg
from raysweep import probes
from raysweep.data import catalog, info, transforms, variants
from raysweep.data.info import channel_stats
from raysweep.models import freeze, names, registry, sources
from raysweep.probes.run import runner
from raysweep.train import attacks, kinds

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "search_spaces").glob("*.yaml"))

DRIVER_SCRIPT = """
import json, pkgutil, sys
import raysweep.driver
driver = [m.name for m in pkgutil.iter_modules(raysweep.driver.__path__, "raysweep.driver.")]
for module in ("raysweep.cli", "raysweep.analysis.report", *driver):
    __import__(module)
from raysweep.data import dataset_info, dataset_names
from raysweep.models import architecture_names
from raysweep.models.sources import published_names
from raysweep.plan import make_plan
from raysweep.probes import probe_names, validate_probe
from raysweep.spec import load_spec
jobs = {path: len(make_plan(load_spec(path)).jobs) for path in sys.argv[1:]}
classes = {name: dataset_info(name).num_classes for name in dataset_names()}
defaults = {name: validate_probe(name, {}).params for name in probe_names()}
print(json.dumps({
    "jobs": jobs, "classes": classes, "archs": architecture_names(), "driver": driver,
    "published": len(published_names()), "probes": sorted(defaults),
    "torch": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")),
}))
"""


def test_driver_plans_every_spec_without_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER_SCRIPT, *map(str, SPECS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["torch"] == []
    assert len(out["driver"]) >= 15  # every module of raysweep.driver was imported
    assert len(out["jobs"]) == len(SPECS) >= 7
    assert all(n >= 1 for n in out["jobs"].values())
    # the same facts the torch-side modules give
    assert out["classes"]["shapes"] == 10 and out["classes"]["digits"] == 10
    assert out["classes"]["caltech101_lowpass"] == 101
    assert out["classes"]["imagenet"] == 1000
    assert out["archs"] == sorted(registry._ARCHITECTURES)
    assert out["published"] == 11
    assert out["probes"] == sorted(probes.PROBES)


def test_name_tables_match_the_torch_modules() -> None:
    assert set(names.ARCHITECTURE_NAMES) == set(registry._ARCHITECTURES)
    assert len(names.ARCHITECTURE_NAMES) == len(set(names.ARCHITECTURE_NAMES)) == 11
    assert set(catalog.VARIANT_BASES) == set(variants.VARIANT_TRANSFORMS)
    assert sorted(train_pkg.TRAINING_KINDS) == kinds.training_kind_names()
    # one home each, imported by the torch modules that implement them
    assert attacks.NORMS is train_pkg.NORMS == ("l2", "linf")
    assert transforms.AUGMENTATIONS is info.AUGMENTATIONS
    assert freeze.FINETUNE_MODES is names.FINETUNE_MODES and freeze.HEAD_INITS is names.HEAD_INITS
    assert all(callable(runner(name)) for name in probes.PROBES)


def test_published_urls_match_torchvision() -> None:
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    tv50 = ResNet50_Weights.IMAGENET1K_V1.url
    assert sources.PUBLISHED["torchvision:resnet50"].url == tv50
    assert sources.PUBLISHED["robustness:imagenet_nat"].url == tv50
    assert sources.PUBLISHED["torchvision:resnet18"].url == ResNet18_Weights.IMAGENET1K_V1.url
    assert sources.PUBLISHED["torchvision:resnet18"].file == "resnet18-f37072fd.pth"


def test_lazy_package_attributes_and_reexports() -> None:
    from raysweep.data.transforms import to_model_input
    from raysweep.driver.launcher import launch
    from raysweep.models.published import PUBLISHED, published_names
    from raysweep.plan import make_plan
    from raysweep.probes.run import run_probe
    from raysweep.train.finetuning import finetune

    assert models_pkg.build_model is registry.build_model
    assert data_pkg.to_model_input is to_model_input
    assert train_pkg.finetune is finetune
    assert probes.run_probe is run_probe
    assert raysweep.launch is launch and raysweep.make_plan is make_plan
    assert "build_model" in dir(models_pkg) and "sample_subset" in dir(data_pkg)
    assert "launch" in dir(raysweep)
    assert PUBLISHED is sources.PUBLISHED and published_names is sources.published_names
    for package in (models_pkg, data_pkg, train_pkg, raysweep):
        with pytest.raises(AttributeError, match="no_such_thing"):
            _ = package.no_such_thing


def test_channel_stats_accepts_tensors_and_arrays() -> None:
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    from_numpy = channel_stats(images)
    from_tensor = channel_stats(torch.from_numpy(images))
    assert from_numpy == from_tensor
    plane0 = images[:, 0].astype(np.float64) / 255.0
    assert from_numpy[0][0] == pytest.approx(plane0.mean())
    assert from_numpy[1][0] == pytest.approx(plane0.std())
