"""How sources are named in figures and tables (raysweep.analysis.labels): from the runs'
params, by their training, unique within a frame, natural first."""

from __future__ import annotations

import math

import pandas as pd

from raysweep.analysis.labels import (
    pair_column,
    relabel,
    source_label,
    source_labels,
    source_order,
)


def source(name: str, training: str, norm: str = "", eps: float = 0.0, arch: str = "resnet50",
           dataset: str = "imagenet") -> dict:  # fmt: skip
    return {
        "source": name,
        "source_training": training,
        "source_norm": norm,
        "source_eps": eps,
        "source_architecture": arch,
        "source_dataset": dataset,
    }


def test_label_is_kind_norm_and_eps() -> None:
    assert source_label(source("nat", "natural")) == "natural"
    assert source_label(source("linf_2", "pgd", "linf", 2 / 255)) == "ℓ∞ ε=2/255"
    assert source_label(source("l2_025", "pgd", "l2", 0.25)) == "ℓ₂ ε=0.25"
    assert source_label(source("t", "trades", "linf", 8 / 255)) == "TRADES ℓ∞ ε=8/255"
    assert source_label(source("g", "gaussian", "", 0.0)) == "Gaussian noise"
    # A run that does not say how its source was trained keeps the name; ε logged as text
    # (a params frame before typing) reads the same as a float.
    assert source_label({"source": "mystery"}) == "mystery"
    assert source_label(source("x", "pgd", "linf", "0.0313725")) == "ℓ∞ ε=8/255"  # type: ignore[arg-type]
    assert source_label(source("x", "pgd", "linf", math.nan)) == "pgd"


def test_labels_are_unique_within_a_frame() -> None:
    df = pd.DataFrame(
        [
            source("nat_r50", "natural"),
            source("nat_r18", "natural", arch="resnet18"),
            source("linf_8", "pgd", "linf", 8 / 255),
            source("cnn_linf", "pgd", "linf", 8 / 255, arch="small_cnn", dataset="cifar10"),
            source("twin_a", "pgd", "l2", 3.0),
            source("twin_b", "pgd", "l2", 3.0),
        ]
    )
    labels = source_labels(df)
    assert labels["nat_r50"] == "natural (resnet50)" and labels["nat_r18"] == "natural (resnet18)"
    # What differs is added: here both the architecture and the source dataset.
    assert labels["cnn_linf"] == "ℓ∞ ε=8/255 (small_cnn, cifar10)"
    assert labels["linf_8"] == "ℓ∞ ε=8/255 (resnet50, imagenet)"
    # Nothing in the params tells these apart: the spec names do, as a last resort.
    assert labels["twin_a"] == "ℓ₂ ε=3 [twin_a]" and labels["twin_b"] == "ℓ₂ ε=3 [twin_b]"
    assert len(set(labels.values())) == len(labels)
    # Natural sources first, then by kind, norm and ε.
    assert source_order(df)[:2] == ["nat_r18", "nat_r50"] and list(labels) == source_order(df)


def test_table_columns_follow_source_order() -> None:
    df = pd.DataFrame([source("z_nat", "natural"), source("a_rob", "pgd", "l2", 3.0)])
    labels = source_labels(df)
    summary = pd.DataFrame({"source": ["a_rob", "z_nat"], "mean": [1.0, 2.0]})
    shown, columns = relabel(summary, "source", labels)
    assert columns == ["natural", "ℓ₂ ε=3"]  # natural first, though its name sorts last
    assert shown["source"].tolist() == ["ℓ₂ ε=3", "natural"]
    gaps = pd.DataFrame({"robust": ["a_rob"], "natural": ["z_nat"]})
    pair, order = pair_column(gaps, "robust", "natural", labels)
    assert pair.tolist() == order == ["ℓ₂ ε=3 − natural"]
