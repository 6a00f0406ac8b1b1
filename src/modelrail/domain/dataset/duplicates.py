"""Exact duplicate rows: found by a hash of every column, counted once.

Repeating rows adds no evidence: a file tripled would otherwise train a model three
times as sure of the same rows and score it on a hold-out three times as heavy, and
the champion so made would outscore any honest candidate on log-loss. validate counts
the duplicates (reported, and carried in the dataset's lineage); the split keeps each
distinct row's first occurrence only, so training and every metric of the gate see a
tripled file as the file itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def first_occurrences(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The indices of each distinct row's first occurrence, ascending (a row is every
    column's value; missing values equal each other)."""
    frame = pd.DataFrame(dict(columns))
    if frame.empty:
        return np.arange(len(frame))
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    _, first = np.unique(hashes, return_index=True)
    return np.sort(first)


def count(columns: Mapping[str, np.ndarray], rows: int) -> int:
    """How many of the ``rows`` rows repeat an earlier one exactly."""
    return rows - len(first_occurrences(columns))
