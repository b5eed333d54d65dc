"""How sources are named and ordered in figures and tables: by their training, from the params.

Sources are spec names (``linf_2``, ``l2_3``) that mean nothing to a reader of the report, so
every legend, panel title and Markdown table names a source by how it was trained, read from
the runs' params (``source_training``, ``source_norm``, ``source_eps``):

* ``natural``; ``ℓ∞ ε=2/255``, ``ℓ₂ ε=0.25`` for PGD (the papers' default adversarial training,
  written as its constraint alone); ``TRADES ℓ∞ ε=8/255``; ``Gaussian noise``;
* when two sources of one frame would read the same (two architectures or source datasets),
  what differs is added, ``natural (resnet50)``, and the source name as a last resort.

CSV files keep the source names: they are the keys a user filters on. This module owns the
labels, the ε notation and the source order (natural first, then kind, norm, ε); the Markdown
module and every family read them from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

MISSING = "–"
#: After a table cell some of whose runs did not converge (raysweep.analysis.convergence).
MARK = "†"
NATURAL = "natural"
NORM_SYMBOLS = {"l2": "ℓ₂", "linf": "ℓ∞", "l1": "ℓ₁"}
# PGD is the adversarial training both papers mean by "robust": its label is the constraint.
KIND_NAMES = {NATURAL: NATURAL, "pgd": "", "trades": "TRADES", "gaussian": "Gaussian noise"}
# What tells two sources with the same training apart, in the order it is added to a label.
DISTINGUISHING = ("source_architecture", "source_dataset")
MINUS = " − "


def _text(value: object) -> str:
    """``value`` as text; None, NaN and pandas' missing values as ``""``."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


def _number(value: object) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def norm_symbol(norm: object) -> str:
    """``l2`` -> ``ℓ₂``, ``linf`` -> ``ℓ∞``; unknown norms pass through, missing ones are ``""``."""
    text = _text(norm)
    return NORM_SYMBOLS.get(text, text)


def eps_text(eps: object, norm: object) -> str:
    """ε as the papers write it: ``2/255`` for ℓ∞ budgets on the 0-255 grid, ``0.25`` for ℓ₂,
    ``0`` for natural sources, :data:`MISSING` when unknown."""
    value = _number(eps)
    if math.isnan(value):
        return MISSING
    scaled = value * 255.0
    if _text(norm) == "linf" and value > 0 and abs(scaled - round(scaled)) < 1e-4:
        return f"{round(scaled)}/255"
    return f"{value:g}"


def source_label(row: Mapping[str, object] | pd.Series) -> str:
    """One source's label from its params: ``natural``, ``ℓ∞ ε=2/255``, ``TRADES ℓ₂ ε=0.5``,
    ``Gaussian noise``; the source name when the run does not say how it was trained."""
    kind = _text(row.get("source_training"))
    if not kind:
        return _text(row.get("source")) or MISSING
    if kind == NATURAL:
        return NATURAL
    norm, eps = row.get("source_norm"), _number(row.get("source_eps"))
    constraint = ""
    if _text(norm) and eps > 0:
        constraint = f"{norm_symbol(norm)} ε={eps_text(eps, norm)}"
    words = [KIND_NAMES.get(kind, kind), constraint]
    return " ".join(w for w in words if w) or kind


def is_natural(df: pd.DataFrame) -> pd.Series:
    """Rows whose source trained naturally (the ε = 0 point of every ε axis)."""
    training = df["source_training"] if "source_training" in df else pd.Series("", df.index)
    return training.fillna("").astype(str).eq(NATURAL)


def sort_sources(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted natural sources first, then by training kind, norm, ε and source name."""

    def column(name: str, default: object) -> pd.Series:
        return df[name] if name in df else pd.Series(default, df.index)

    keys = df.assign(
        _natural=~is_natural(df),
        _kind=column("source_training", "").fillna("").astype(str),
        _norm=column("source_norm", "").fillna("").astype(str),
        _eps=pd.to_numeric(column("source_eps", 0.0), errors="coerce"),
    )
    order = ["_natural", "_kind", "_norm", "_eps", "source"]
    return keys.sort_values(order, kind="stable").drop(columns=order[:-1]).reset_index(drop=True)


def source_order(df: pd.DataFrame) -> list[str]:
    """The sources of ``df`` in :func:`sort_sources` order, each once."""
    if "source" not in df or df.empty:
        return []
    sources = df.dropna(subset=["source"]).drop_duplicates("source")
    return [str(s) for s in sort_sources(sources)["source"]]


def _disambiguate(rows: pd.DataFrame, label: str) -> dict[str, str]:
    """Labels for sources that share ``label``: what differs among them appended, then names."""
    differs = [c for c in DISTINGUISHING if c in rows and rows[c].nunique(dropna=False) > 1]
    out = {}
    for r in rows.to_dict("records"):
        extra = ", ".join(_text(r.get(c)) for c in differs)
        out[str(r["source"])] = f"{label} ({extra})" if extra else label
    if len(set(out.values())) < len(out):  # same training, architecture and dataset
        out = {name: f"{text} [{name}]" for name, text in out.items()}
    return out


def source_labels(df: pd.DataFrame) -> dict[str, str]:
    """Source name -> label for every source of ``df``, unique within ``df``, in source order."""
    if "source" not in df or df.empty:
        return {}
    rows = sort_sources(df.dropna(subset=["source"]).drop_duplicates("source"))
    rows = rows.assign(_label=[source_label(r) for r in rows.to_dict("records")])
    labels: dict[str, str] = {}
    for label, same in rows.groupby("_label", sort=False):
        if len(same) == 1:
            labels[str(same["source"].iloc[0])] = str(label)
        else:
            labels.update(_disambiguate(same, str(label)))
    return {str(s): labels[str(s)] for s in rows["source"]}


def label_of(labels: Mapping[str, str], source: object) -> str:
    """``labels[source]``, or the name itself for a source the mapping does not know."""
    return labels.get(str(source), str(source))


def pair_label(labels: Mapping[str, str], first: object, second: object) -> str:
    """``ℓ₂ ε=3 − natural``: the label of a difference ``first − second``."""
    return f"{label_of(labels, first)}{MINUS}{label_of(labels, second)}"


def relabel(
    frame: pd.DataFrame, column: str, labels: Mapping[str, str]
) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` with the source names of ``column`` replaced by their labels, and the labels
    present in ``labels``' order: the columns of a Markdown table, one per source (or pair)."""
    shown = frame[column].map(lambda s: label_of(labels, s))
    order = {text: i for i, text in enumerate(labels.values())}
    present = sorted(set(shown), key=lambda t: (order.get(t, len(order)), t))
    return frame.assign(**{column: shown}), present


def pair_labels(
    frame: pd.DataFrame, first: str, second: str, labels: Mapping[str, str]
) -> dict[tuple[str, str], str]:
    """``(first, second) -> "label − label"`` for every pair of the two columns of ``frame``,
    ordered as ``labels`` orders the first source, then the second."""
    rank = {name: i for i, name in enumerate(labels)}
    pairs = {(str(a), str(b)) for a, b in zip(frame[first], frame[second], strict=True)}
    ordered = sorted(pairs, key=lambda p: (rank.get(p[0], len(rank)), rank.get(p[1], 0), p))
    return {p: pair_label(labels, *p) for p in ordered}


def pair_column(
    frame: pd.DataFrame, first: str, second: str, labels: Mapping[str, str]
) -> tuple[pd.Series, list[str]]:
    """The ``"label − label"`` of each row of ``frame`` and the pairs' labels in order (see
    :func:`pair_labels`): a Markdown column or a legend entry per pair."""
    names = pair_labels(frame, first, second, labels)
    pairs = zip(frame[first].astype(str), frame[second].astype(str), strict=True)
    return pd.Series([names[p] for p in pairs], index=frame.index, dtype=object), list(
        names.values()
    )
