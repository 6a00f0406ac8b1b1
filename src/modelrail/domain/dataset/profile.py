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


def _floats(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(), dtype=np.float64)  # NaN where missing


# The deciles' positions (numpy's default, linear interpolation between order statistics).
QUANTILES = np.linspace(0, 1, BINS + 1)[1:-1]


def _numeric(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return numeric(len(values), 0, [], [])
    inner = np.unique(np.quantile(present, QUANTILES))
    return numeric(len(values), len(present), inner.tolist(), bin_counts(inner, present).tolist())


def bin_counts(edges: np.ndarray, present: np.ndarray) -> np.ndarray:
    """How many of ``present`` fall in each bin cut at ``edges`` (a value on an edge
    counts in the bin above it)."""
    return np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)


def numeric(rows: int, present: int, edges: list[float], counts: list[int]) -> dict[str, Any]:
    """A numeric column's profile from its counts: ``rows`` values, ``present`` of them
    not missing, ``counts`` per bin cut at ``edges`` (no bins if none is present)."""
    total = max(rows, 1)
    if present == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "missing": 1.0}
    return {
        "kind": "numeric",
        "edges": [float(edge) for edge in edges],
        "shares": [float(count) / total for count in counts],
        "missing": float(rows - present) / total,
    }


def value_counts(array: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """How many rows hold each value (booleans, held as 0/1, as ``true``/``false``;
    categories under the contract's spelling, every category listed)."""
    if pa.types.is_dictionary(array.type):
        combined = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        counts = np.bincount(
            combined.indices.drop_null().to_numpy(), minlength=len(combined.dictionary)
        )
        return dict(zip(combined.dictionary.to_pylist(), counts.tolist(), strict=True))
    values = _floats(array)
    return {"false": int((values == 0.0).sum()), "true": int((values == 1.0).sum())}


def categorical(rows: int, named: Mapping[str, int]) -> dict[str, Any]:
    """A categorical column's profile from ``rows`` and its ``value_counts``."""
    total = max(rows, 1)
    shares = {str(name): count / total for name, count in named.items() if count}
    missing = float(rows - sum(named.values())) / total
    return {"kind": "categorical", "shares": dict(sorted(shares.items())), "missing": missing}


def _categorical(array: pa.ChunkedArray) -> dict[str, Any]:
    """Shares of each value present (booleans, held as 0/1, as ``true``/``false``)."""
    return categorical(len(array), value_counts(array))


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
    edges = np.asarray(baseline["edges"], dtype=np.float64)
    return rebinned(baseline, len(values), len(present), bin_counts(edges, present).tolist())


def rebinned(
    baseline: Mapping[str, Any], rows: int, present: int, counts: list[int]
) -> dict[str, Any]:
    """``rebin`` from counts in the baseline's bins (what a stream adds up batch by batch)."""
    total = max(rows, 1)
    return {
        "kind": "numeric",
        "edges": baseline["edges"],
        "shares": [float(count) / total for count in counts],
        "missing": float(rows - present) / total,
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
    current = {}
    for name, before in compared(baseline, contract).items():
        array = data.column(name)
        current[name] = (
            rebin(_floats(array), before) if before["kind"] == "numeric" else _categorical(array)
        )
    return drift_table(baseline, current, contract, limits, default)


def compared(baseline: Mapping[str, Any], contract: DatasetContract) -> dict[str, Any]:
    """The baseline's columns that the contract still profiles the same way."""
    kinds = {
        column.name: "numeric" if column.type in ("number", "integer") else "categorical"
        for column in (*contract.features, contract.target_column)
    }
    return {
        name: before
        for name, before in baseline["columns"].items()
        if kinds.get(name) == before["kind"]  # else the contract changed under the champion
    }


def drift_table(
    baseline: Mapping[str, Any],
    current: Mapping[str, Mapping[str, Any]],
    contract: DatasetContract,
    limits: Mapping[str, tuple[float, float]],
    default: tuple[float, float],
) -> list[dict[str, Any]]:
    """``drift`` from ``current``: each compared column profiled in the baseline's bins."""
    table = []
    for name, before in compared(baseline, contract).items():
        now = current[name]
        index = psi(before, now)
        warn, fail = limits.get(name, default)
        status = "fail" if index > fail else "warn" if index > warn else "ok"
        table.append(
            {"column": name, "psi": round(index, 4), "warn": warn, "fail": fail, "status": status}
        )
    return table
