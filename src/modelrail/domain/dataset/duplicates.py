"""Exact duplicate rows: found by a hash of every column, counted once.

Repeating rows adds no evidence: a file tripled would otherwise train a model three
times as sure of the same rows and score it on a hold-out three times as heavy, and
the champion so made would outscore any honest candidate on log-loss. validate counts
the duplicates (reported, and carried in the dataset's lineage); the split by inputs
keeps each distinct row's first occurrence only, so training and every metric of the
gate see a tripled file as the file itself. Data of so few distinct input rows that it
is split by occurrence (``training.plan``) keeps every row: there a repeated row is a
sample of its own, as each of Titanic's 1,316 passengers is.

Two ways to the same rows: ``first_occurrences`` hashes numpy columns with pandas (the
split, the whole-file path), ``row_hashes`` hashes an Arrow table's columns where they
are (validate's stream, batch by batch, with no Python object or pandas frame per
cell). Both hold a row equal to another when every column's value is: 0.0 and -0.0
are one number, every missing value is the same value, and a missing value is none
of the strings ("", "None", "nan"). The tests hold the two to the same count.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


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


# A missing value's hash: pandas' for a missing category. A present value hashing to it
# is a 64-bit collision, as likely as any other.
_MISSING = np.uint64(2**64 - 1)
_NAN_BITS = np.array(np.nan, dtype=np.float64).view(np.uint64)


def row_hashes(data: pa.Table | pa.RecordBatch) -> np.ndarray:
    """A 64-bit hash of each row of ``data`` (every column, in order), from the Arrow
    buffers: equal rows hash equal, by the rules above; distinct rows collide as
    rarely as pandas' hashes do."""
    rows = data.num_rows
    combined = np.full(rows, 0x345678, dtype=np.uint64)
    multiplier = np.uint64(1000003)
    # pandas' combine_hash_arrays: each column's (mixed) hash folded in, in order.
    for position in range(data.num_columns):
        combined ^= column_hashes(data.column(position))
        combined *= multiplier
        remaining = data.num_columns - position
        multiplier += np.uint64(82520 + remaining + remaining)
    combined += np.uint64(97531)
    return combined


def column_hashes(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A mixed 64-bit hash per value of ``array`` (missing values: ``_MISSING``)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _dictionary_hashes(array)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _dictionary_hashes(pc.dictionary_encode(array))
    if pa.types.is_floating(kind):
        values = np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False),
                            dtype=np.float64)  # fmt: skip
        bits = (values + 0.0).view(np.uint64)  # -0.0 as 0.0
        bits[np.isnan(values)] = _NAN_BITS  # missing (and any NaN) as one value
        return _mixed(bits)
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_temporal(kind):
        if pa.types.is_temporal(kind):  # their integers: ticks, days
            integers = pc.cast(array.view(pa.int64() if kind.bit_width == 64 else pa.int32()),
                               pa.int64())  # fmt: skip
        else:
            integers = pc.cast(array, pa.int64())
        bits = np.asarray(pc.fill_null(integers, 0).to_numpy(), dtype=np.int64).view(np.uint64)
        hashed = _mixed(bits.copy())
        if array.null_count:
            hashed[np.asarray(array.is_null())] = _MISSING
        return hashed
    # Anything else: its values as pandas hashes them.
    return np.asarray(
        pd.util.hash_array(np.asarray(array.to_pandas(), dtype=object)), dtype=np.uint64
    )


def _dictionary_hashes(array: pa.DictionaryArray) -> np.ndarray:
    """Each distinct value hashed once, each row given its value's hash."""
    dictionary = array.dictionary
    if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
        text = np.asarray(dictionary.to_numpy(zero_copy_only=False), dtype=object)
        distinct = np.asarray(pd.util.hash_array(text, categorize=False), dtype=np.uint64)
    else:
        distinct = column_hashes(dictionary)
    lookup = np.append(distinct, _MISSING)
    indices = pc.fill_null(array.indices, len(distinct)).to_numpy()
    hashed: np.ndarray = lookup[indices]
    return hashed


def _mixed(bits: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: every input bit moves every output bit."""
    bits ^= bits >> np.uint64(30)
    bits *= np.uint64(0xBF58476D1CE4E5B9)
    bits ^= bits >> np.uint64(27)
    bits *= np.uint64(0x94D049BB133111EB)
    bits ^= bits >> np.uint64(31)
    return bits


def distinct_sorted(hashes: np.ndarray) -> np.ndarray:
    """``hashes`` sorted, each value once (``np.unique`` without its hash table,
    which is many times slower on 64-bit values that are nearly all distinct)."""
    ordered = np.sort(hashes)
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
