"""Duplicate rows counted from Arrow columns (``duplicates.row_hashes``), as the stream
counts them, agree with the pandas path of the split and with plain Python equality,
on the values where hashing goes wrong: 0.0 and -0.0, NaN and missing, the empty
string, "None" and "nan" against a missing string, a missing category or time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelrail.domain.dataset import duplicates

ROWS = 3000


def _columns(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    numbers = np.array([0.0, -0.0, np.nan, 1.5, -1.5])
    texts = np.array(["", None, "None", "nan", "NA", "a"], dtype=object)
    categories = np.array(["x", "y", None], dtype=object)
    stamps = np.array(["NaT", "2024-01-01T00:00:00", "2024-01-01T00:00:01"], dtype="datetime64[ns]")
    return {
        "number": numbers[rng.integers(0, len(numbers), ROWS)],
        "other": numbers[rng.integers(0, len(numbers), ROWS)],
        "text": texts[rng.integers(0, len(texts), ROWS)],
        "category": categories[rng.integers(0, len(categories), ROWS)],
        "stamp": stamps[rng.integers(0, len(stamps), ROWS)],
    }


def _arrow(columns: dict[str, np.ndarray]) -> pa.Table:
    """The columns as the checked table holds them: floats, strings, a dictionary
    against a fixed list, UTC nanoseconds; missing values as nulls (-0.0 kept)."""
    indices = pd.Categorical(columns["category"], categories=["x", "y"]).codes
    return pa.table(
        {
            "number": pa.array(columns["number"], type=pa.float64(), from_pandas=True),
            "other": pa.array(columns["other"], type=pa.float64(), from_pandas=True),
            "text": pa.array(columns["text"], type=pa.string()),
            "category": pa.DictionaryArray.from_arrays(
                pa.array(indices, type=pa.int32(), mask=indices < 0), pa.array(["x", "y"])
            ),
            "stamp": pa.array(
                columns["stamp"], type=pa.timestamp("ns", tz="UTC"), from_pandas=True
            ),
        }
    )


def _python_distinct(columns: dict[str, np.ndarray]) -> int:
    """Distinct rows by Python's equality: -0.0 == 0.0; a missing value (None, NaN,
    NaT) is one value of its own, unlike any string."""

    def value(cell: object) -> object:
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            return ("missing",)
        if isinstance(cell, np.datetime64):
            return ("missing",) if np.isnat(cell) else int(cell.astype(np.int64))
        return cell

    names = list(columns)
    return len({tuple(value(columns[name][row]) for name in names) for row in range(ROWS)})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arrow_row_hashes_count_the_duplicates_pandas_and_python_count(seed: int) -> None:
    columns = _columns(seed)

    hashed = duplicates.distinct_sorted(duplicates.row_hashes(_arrow(columns)))

    distinct = _python_distinct(columns)
    assert distinct < ROWS  # the pools are small: many rows repeat
    assert hashed.size == distinct
    assert duplicates.count(columns, ROWS) == ROWS - distinct


def test_zero_and_negative_zero_are_one_value_and_missing_is_no_string() -> None:
    numbers = pa.array([0.0, -0.0, None, float("nan")], type=pa.float64())
    texts = pa.array(["", None, "None", "nan"], type=pa.string())

    number_hashes = duplicates.column_hashes(numbers)
    text_hashes = duplicates.column_hashes(texts)

    assert number_hashes[0] == number_hashes[1]
    assert number_hashes[2] == number_hashes[3]  # a NaN is read as missing
    assert number_hashes[0] != number_hashes[2]
    assert len(set(text_hashes.tolist())) == 4


def test_a_chunked_column_hashes_as_one_array() -> None:
    data = pa.table({"a": pa.chunked_array([[1.0, 2.0], [1.0, None]]), "b": ["x", "y", "x", "z"]})
    whole = pa.table({"a": [1.0, 2.0, 1.0, None], "b": ["x", "y", "x", "z"]})

    assert duplicates.row_hashes(data).tolist() == duplicates.row_hashes(whole).tolist()


def test_distinct_sorted_is_numpys_unique() -> None:
    rng = np.random.default_rng(5)
    for values in (
        np.empty(0, np.uint64),
        np.array([7], np.uint64),
        rng.integers(0, 50, 1000).astype(np.uint64),
        rng.integers(0, 2**63, 1000, dtype=np.int64).astype(np.uint64),
    ):
        assert duplicates.distinct_sorted(values).tolist() == np.unique(values).tolist()
