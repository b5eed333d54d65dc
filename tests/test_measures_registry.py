"""The measure registry: names, descriptions, lookups, errors."""

from __future__ import annotations

import pytest

from raysweep.measures import fisher, input_fisher
from raysweep.measures.registry import describe_measures, get_measure, measure_names


def test_names_are_sorted_and_cover_the_papers() -> None:
    names = measure_names()
    assert names == sorted(names)
    assert {
        "dataset_distance",
        "weight_fisher",
        "input_fisher",
        "cckl",
        "g1_g2",
        "inversion",
        "effective_images",
        "influence",
        "tsne",
        "feature_visualization",
    } <= set(names)


def test_lookup_returns_the_function() -> None:
    assert get_measure("weight_fisher") is fisher.weight_fisher_logvar
    assert get_measure("cckl") is input_fisher.cckl_pairs


def test_descriptions_are_one_line() -> None:
    desc = describe_measures()
    assert list(desc) == measure_names()
    assert all(d and "\n" not in d and len(d) < 100 for d in desc.values())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        get_measure("fischer")
    msg = str(err.value)
    assert "fischer" in msg and ", ".join(measure_names()) in msg and "\n" not in msg
