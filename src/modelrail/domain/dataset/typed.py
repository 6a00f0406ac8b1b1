"""The typed reader: a CSV that meets its contract, parsed in one vectorised pass.

Arrow's CSV reader converts every column straight to the contract's type (numbers to
float64, booleans to bool, categories dictionary-encoded, so a category check looks
at each distinct value once), on every core, without a Python object per cell. It
only ever accepts files the reporting path (``checks``) accepts, with the same values;
anything it declines or doubts (a value that does not convert, a padded cell, a null,
a range, an unknown category, a header that is not exactly the contract's) goes to the
reporting path, which finds and names every problem. The two are held equal by the
tests, as the staging service's two request decoders are.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from modelrail.domain.dataset import table
from modelrail.domain.dataset.contract import (
    FALSE_WORDS,
    TRUE_WORDS,
    Column,
    DatasetContract,
    parse_code,
)


def _spellings(words: tuple[str, ...]) -> list[str]:
    """The reporting path's boolean words as Arrow matches them (exactly): in lower
    case, capitalised and in upper case. Other mixtures go to the reporting path, which
    lowers the case first."""
    return list(dict.fromkeys(s for w in words for s in (w, w.capitalize(), w.upper())))


TRUE_VALUES = _spellings(TRUE_WORDS)
FALSE_VALUES = _spellings(FALSE_WORDS)


def read(
    data: bytes, header: tuple[str, ...], contract: DatasetContract
) -> tuple[pa.Table, int] | None:
    """The checked table of ``data`` (columns in the contract's order and ``table``'s
    types, rows without a target dropped) and the number of rows its file holds, if it
    meets ``contract`` through and through; otherwise None: the reporting path decides
    and names every problem. ``header`` holds the names as ``checks.header_of`` reads
    them."""
    batch = read_batch(data, header, contract)
    if batch is None:
        return None
    checked, file_rows = batch
    if (file_rows - checked.num_rows) / file_rows > contract.max_missing_target_fraction:
        return None
    if checked.num_rows < contract.min_rows:
        return None
    return batch


def read_batch(
    data: bytes, header: tuple[str, ...], contract: DatasetContract
) -> tuple[pa.Table, int] | None:
    """``read`` for a part of a file (its header in front): every row checked, rows
    without a target dropped and counted (the file's share and size are judged when
    the whole file is read), None if any value would be a problem."""
    names = [c.name for c in contract.columns]
    if sorted(header) != sorted(names):
        return None
    types = {c.name: csv_type(c) for c in contract.columns}
    options = pacsv.ConvertOptions(
        column_types=types,
        null_values=list(contract.null_tokens),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        true_values=TRUE_VALUES,
        false_values=FALSE_VALUES,
    )
    try:
        read_table = pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        return None
    if set(read_table.column_names) != set(names) or len(read_table) == 0:
        return None  # names padded with spaces, or a byte-order mark read into one
    kept = ~np.asarray(read_table.column(contract.target).is_null())
    arrays = {}
    for column in contract.columns:
        array = typed_column(read_table.column(column.name), column, column.name == contract.target)
        if array is None:
            return None
        arrays[column.name] = array
    checked = pa.table(arrays)
    return (checked if kept.all() else checked.filter(pa.array(kept))), len(read_table)


def csv_type(column: Column) -> pa.DataType:
    if column.type == "boolean":
        return pa.bool_()
    if column.type == "datetime":
        return pa.string()  # parsed as the reporting path parses it (below)
    return table.arrow_type(column)


def typed_column(
    array: pa.ChunkedArray, column: Column, is_target: bool
) -> pa.ChunkedArray | pa.Array | None:
    """``column`` in the table's type, with the values the reporting path gives, or
    None if any value would be a problem there."""
    if array.null_count and not column.nullable and not is_target:
        return None
    if column.type in ("number", "integer"):
        # Arrow's kernels, each one pass without a copy (nulls skipped): numpy's took
        # seven, with a float copy and a copy of the present values.
        if pc.sum(pc.is_nan(array)).as_py():
            return None  # a "nan" written in the file: the reporting path refuses it
        bounds = pc.min_max(array)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is None:
            return array  # no value present
        if not (math.isfinite(low) and math.isfinite(high)):
            return None
        if column.type == "integer" and not pc.all(pc.equal(pc.floor(array), array)).as_py():
            return None
        if column.min is not None and low < column.min:
            return None
        if column.max is not None and high > column.max:
            return None
        return array
    if column.type == "boolean":
        return array.cast(pa.float64())
    if column.type == "category":
        return contract_categories(array.combine_chunks(), column)
    if pc.any(pc.not_equal(pc.utf8_trim_whitespace(array), array)).as_py():
        return None  # padded cells: the reporting path trims them (and may find nulls)
    if column.type == "datetime":
        text = pd.Series(array.to_numpy(zero_copy_only=False))
        stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        if stamps.isna().sum() != array.null_count:
            return None
        return pa.array(stamps, type=table.arrow_type(column))
    return array


def contract_categories(array: pa.DictionaryArray, column: Column) -> pa.DictionaryArray | None:
    """The values as indices into the contract's categories: each spelling in the file
    is looked up once (numeric codes in their canonical spelling)."""
    spelled = array.dictionary.to_pylist()
    if column.numeric_codes:
        spelled = [parse_code(value) or value for value in spelled]
    position = {category: index for index, category in enumerate(column.categories)}
    if any(value not in position for value in spelled):
        return None
    remap = pa.array([position[value] for value in spelled], type=table.INDEX_TYPE)
    return table.categories(pc.take(remap, array.indices), column)
