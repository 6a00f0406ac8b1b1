"""Data profiles and drift: what a dataset looks like, and how far new data moved.

A profile keeps, per feature and for the target, the share of missing values and the
distribution: for numbers the shares of rows in ten bins cut at the data's deciles,
for categories (and booleans) the share of each value. validate profiles every
upload; register keeps the champion's training profile with its version; validate
then compares new data with it by the Population Stability Index,

    PSI = sum over bins of (new share - baseline share) * ln(new share / baseline share),

the standard measure of a distribution's shift in credit scoring and model monitoring
(missing values are a bin of their own; empty bins count as 0.0001 so the logarithm is
defined). Rules of thumb, and the defaults of ``[drift]`` in pipeline.toml: below 0.1
the data is stable; 0.1 to 0.25 a shift worth a warning; above 0.25 a shift that
fails the run, naming the columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from modelrail.dataset.checks import ParsedDataset
from modelrail.dataset.contract import DatasetContract

BINS = 10
_FLOOR = 1e-4
_MISSING = "(missing)"


def profile(parsed: ParsedDataset, contract: DatasetContract) -> dict[str, Any]:
    """The distribution of every feature and of the target in ``parsed``."""
    columns = {}
    for column in (*contract.features, contract.target_column):
        values = parsed.columns[column.name]
        if column.type in ("number", "integer"):
            columns[column.name] = _numeric(values)
        else:
            columns[column.name] = _categorical(values)
    return {"rows": parsed.rows, "columns": columns}


def _numeric(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    rows = max(len(values), 1)
    if len(present) == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "missing": 1.0}
    inner = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
    return {
        "kind": "numeric",
        "edges": [float(edge) for edge in inner],
        "shares": [float(count) / rows for count in counts],
        "missing": float(len(values) - len(present)) / rows,
    }


def _categorical(values: np.ndarray) -> dict[str, Any]:
    rows = max(len(values), 1)
    if values.dtype != object:  # booleans parsed to 0/1 with NaN for missing
        labels = np.where(values == 1.0, "true", "false").astype(object)
        labels[np.isnan(values)] = None
        values = labels
    counts = pd.Series(values, dtype=object).value_counts(dropna=True)
    shares = {str(k): float(c) / rows for k, c in counts.items()}
    missing = float(len(values) - counts.sum()) / rows
    return {"kind": "categorical", "shares": dict(sorted(shares.items())), "missing": missing}


def psi(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> float:
    """The Population Stability Index of ``current`` against ``baseline`` (profiles of
    one column; ``current`` binned as the baseline was)."""
    if baseline["kind"] == "numeric":
        expected = [*baseline["shares"], baseline["missing"]]
        actual = [*current["shares"], current["missing"]]
    else:
        keys = sorted(set(baseline["shares"]) | set(current["shares"]))
        expected = [baseline["shares"].get(k, 0.0) for k in keys] + [baseline["missing"]]
        actual = [current["shares"].get(k, 0.0) for k in keys] + [current["missing"]]
    total = 0.0
    for before, after in zip(expected, actual, strict=True):
        e, a = max(before, _FLOOR), max(after, _FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def rebin(values: np.ndarray, baseline: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` of a numeric column profiled with the baseline's bins."""
    present = values[~np.isnan(values)]
    rows = max(len(values), 1)
    edges = np.asarray(baseline["edges"], dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "edges": baseline["edges"],
        "shares": [float(count) / rows for count in counts],
        "missing": float(len(values) - len(present)) / rows,
    }


def drift(
    baseline: Mapping[str, Any],
    parsed: ParsedDataset,
    contract: DatasetContract,
    limits: Mapping[str, tuple[float, float]],
    default: tuple[float, float],
) -> list[dict[str, Any]]:
    """Per column of the baseline that the new data has: its PSI and whether it is
    ``ok``, ``warn`` or ``fail`` under its (warn, fail) limits."""
    kinds = {
        column.name: "numeric" if column.type in ("number", "integer") else "categorical"
        for column in (*contract.features, contract.target_column)
    }
    table = []
    for name, before in baseline["columns"].items():
        if kinds.get(name) != before["kind"]:
            continue  # the contract changed under the champion: nothing to compare
        values = parsed.columns[name]
        now = rebin(values, before) if before["kind"] == "numeric" else _categorical(values)
        index = psi(before, now)
        warn, fail = limits.get(name, default)
        status = "fail" if index > fail else "warn" if index > warn else "ok"
        table.append(
            {"column": name, "psi": round(index, 4), "warn": warn, "fail": fail, "status": status}
        )
    return table
