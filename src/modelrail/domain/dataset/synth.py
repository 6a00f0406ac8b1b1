"""Synthetic CSVs of any size that meet a dataset contract and carry real signal.

Every feature depends on the target (class-conditional means for numbers,
class-conditional weights for categories; for a numeric target, the target is a noisy
function of the features), so a model trained on synthetic data learns something and
the gate has metrics worth judging. Nullable columns get a few missing values.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from modelrail.domain.dataset.contract import Column, DatasetContract

MISSING_RATE = 0.03


def generate(contract: DatasetContract, rows: int, seed: int = 0) -> pd.DataFrame:
    """A frame of ``rows`` rows meeting ``contract``."""
    rng = np.random.default_rng(seed)
    target = contract.target_column
    numeric_target = target.type in ("number", "integer")
    if numeric_target:
        latent = rng.normal(size=rows)
    else:
        labels = target.categories or ("false", "true")
        latent = rng.integers(0, len(labels), size=rows).astype(np.float64)

    frame: dict[str, object] = {}
    for column in contract.columns:
        if column.name == target.name:
            continue
        frame[column.name] = _column(column, latent, numeric_target, rng)

    if numeric_target:
        values = _scale(latent + rng.normal(scale=0.3, size=rows), target)
        frame[target.name] = (
            np.round(values).astype(np.int64) if target.type == "integer" else np.round(values, 3)
        )
    else:
        frame[target.name] = np.asarray(labels, dtype=object)[latent.astype(int)]
    return pd.DataFrame({c.name: frame[c.name] for c in contract.columns})


def write_csv(contract: DatasetContract, rows: int, path: Path, seed: int = 0) -> None:
    generate(contract, rows, seed).to_csv(path, index=False, na_rep="")


def _column(
    column: Column, latent: np.ndarray, numeric_target: bool, rng: np.random.Generator
) -> np.ndarray:
    rows = len(latent)
    if column.type == "datetime":
        days = rng.integers(0, 3 * 365, size=rows)
        result = (np.datetime64("2024-01-01") + days).astype(str).astype(object)
    elif column.type == "text":
        result = np.array([f"{column.name} {i}" for i in range(rows)], dtype=object)
    elif column.type == "category":
        categories = np.asarray(column.categories, dtype=object)
        # Each class prefers a different category; others stay possible.
        preferred = (np.round(latent * 7).astype(int)) % len(categories)
        noise = rng.integers(0, len(categories), size=rows)
        values = np.where(rng.random(rows) < 0.7, preferred, noise)
        result = categories[values]
    elif column.type == "boolean":
        result = np.where(rng.random(rows) < 0.5 + 0.3 * np.tanh(latent), "true", "false").astype(
            object
        )
    else:
        shift = latent if numeric_target else latent - latent.mean()
        spread = rng.normal(size=rows) + 1.5 * shift * (
            1 if zlib.crc32(column.name.encode()) % 2 else -1
        )
        values = _scale(spread, column)
        result = (
            np.round(values).astype(np.int64) if column.type == "integer" else np.round(values, 2)
        )
    if column.nullable:
        result = result.astype(object)
        result[rng.random(rows) < MISSING_RATE] = None
    return result


def _scale(values: np.ndarray, column: Column) -> np.ndarray:
    """Map standard-ish values into the column's [min, max] range. A missing bound
    stays on the side of zero a quantity usually has (no negative ages): [0, 100]
    without either, 100 past the one that is set."""
    low, high = column.min, column.max
    if low is None:
        low = 0.0 if high is None or high > 0 else high - 100.0
    if high is None:
        high = low + 100.0
    middle, half = (low + high) / 2, (high - low) / 2
    return np.clip(middle + half * np.tanh(values / 3), low, high)
