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
import pyarrow as pa

from modelrail.domain.dataset.contract import DatasetContract

BINS = 10
_FLOOR = 1e-4
_MISSING = "(missing)"


def profile(data: pa.Table, contract: DatasetContract) -> dict[str, Any]:
    """The distribution of every feature and of the target in ``data`` (the snapshot's
    table: categories as indices into the contract's list, counted without a Python
    object per row)."""
    columns = {}
    for column in (*contract.features, contract.target_column):
        columns[column.name] = _column_profile(data.column(column.name), column.type)
    return {"rows": data.num_rows, "columns": columns}


def _column_profile(array: pa.ChunkedArray, column_type: str) -> dict[str, Any]:
    if column_type in ("number", "integer"):
        return _numeric(_floats(array))
    return _categorical(array)


def _floats(array: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_numpy(), dtype=np.float64)  # NaN where missing


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


def _categorical(array: pa.ChunkedArray) -> dict[str, Any]:
    """Shares of each value present (booleans, held as 0/1, as ``true``/``false``)."""
    rows = max(len(array), 1)
    if pa.types.is_dictionary(array.type):
        combined = array.combine_chunks()
        counts = np.bincount(
            combined.indices.drop_null().to_numpy(), minlength=len(combined.dictionary)
        )
        named = dict(zip(combined.dictionary.to_pylist(), counts.tolist(), strict=True))
    else:
        values = _floats(array)
        named = {"false": int((values == 0.0).sum()), "true": int((values == 1.0).sum())}
    shares = {str(name): count / rows for name, count in named.items() if count}
    missing = float(len(array) - sum(named.values())) / rows
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
    data: pa.Table,
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
        array = data.column(name)
        now = rebin(_floats(array), before) if before["kind"] == "numeric" else _categorical(array)
        index = psi(before, now)
        warn, fail = limits.get(name, default)
        status = "fail" if index > fail else "warn" if index > warn else "ok"
        table.append(
            {"column": name, "psi": round(index, 4), "warn": warn, "fail": fail, "status": status}
        )
    return table
