"""The validated snapshot: a dataset that met its contract, typed, as Parquet.

validate parses the user's CSV once and writes what it checked here; train and
evaluate read this, never the CSV, so a 1M-row upload is parsed once, and every stage
sees exactly the values validation passed. Row groups of ``ROW_GROUP_ROWS`` let a
distributed reader (``lightgbm.dask``, a Vertex job) split the file later. The bytes
are deterministic for the same data, so a redelivered validate that finds the snapshot
already written (create-only) can trust it by its sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from modelrail.dataset.checks import ParsedDataset
from modelrail.dataset.contract import DatasetContract
from modelrail.errors import DataUnavailable, NotFound, PreconditionFailed
from modelrail.ports import BlobStore

ROW_GROUP_ROWS = 100_000


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Where a snapshot lives and what it holds; recorded in events and lineage."""

    key: str
    uri: str
    sha256: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def encode(parsed: ParsedDataset, contract: DatasetContract) -> bytes:
    """``parsed`` as Parquet bytes, columns in the contract's order and types."""
    arrays = {}
    for column in contract.columns:
        values = parsed.columns[column.name]
        if column.type in ("number", "integer", "boolean"):
            arrays[column.name] = pa.array(values, type=pa.float64(), from_pandas=True)
        elif column.type == "datetime":
            arrays[column.name] = pa.array(values, type=pa.timestamp("ns", tz="UTC"))
        else:
            arrays[column.name] = pa.array(values, type=pa.string())
    sink = io.BytesIO()
    pq.write_table(
        pa.table(arrays),
        sink,
        row_group_size=ROW_GROUP_ROWS,
        compression="zstd",
        store_schema=True,
    )
    return sink.getvalue()


def decode(data: bytes, contract: DatasetContract) -> ParsedDataset:
    """The typed columns in ``data``, as validation produced them."""
    table = pq.read_table(io.BytesIO(data))
    columns: dict[str, np.ndarray] = {}
    for column in contract.columns:
        array = table.column(column.name)
        if column.type in ("number", "integer", "boolean"):
            columns[column.name] = array.to_numpy().astype(np.float64, copy=False)
        elif column.type == "datetime":
            columns[column.name] = array.to_numpy()
        else:
            columns[column.name] = array.to_numpy(zero_copy_only=False).astype(object)
    return ParsedDataset(columns, table.num_rows)


def write(store: BlobStore, key: str, parsed: ParsedDataset, contract: DatasetContract) -> Snapshot:
    """Write the snapshot create-only; a snapshot already there (a redelivery after a
    crash) is kept and described, never replaced."""
    data = encode(parsed, contract)
    try:
        store.write(key, data, if_generation_match=0, content_type="application/vnd.apache.parquet")
    except PreconditionFailed:
        data = store.read(key).data
    return Snapshot(key, store.uri(key), hashlib.sha256(data).hexdigest(), parsed.rows)


def read(store: BlobStore, snapshot: dict[str, Any], contract: DatasetContract) -> ParsedDataset:
    """The snapshot an event names, its sha256 checked before it is parsed."""
    try:
        data = store.read(str(snapshot["key"])).data
    except NotFound as exc:
        raise DataUnavailable(f"snapshot {snapshot['uri']} is gone: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != snapshot["sha256"]:
        raise DataUnavailable(f"snapshot {snapshot['uri']} changed since it was validated")
    return decode(data, contract)
