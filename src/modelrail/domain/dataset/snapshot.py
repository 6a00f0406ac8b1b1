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

import pyarrow as pa
import pyarrow.parquet as pq

from modelrail.domain.dataset import table
from modelrail.domain.dataset.checks import ParsedDataset
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.kernel.errors import DataUnavailable, NotFound, PreconditionFailed
from modelrail.kernel.ports import BlobStore

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


def arrow(parsed: ParsedDataset, contract: DatasetContract) -> pa.Table:
    """``parsed`` as the snapshot's table: the one the typed reader built, as it is,
    or one built from numpy columns (the reporting path, a subset of rows)."""
    if isinstance(parsed.columns, table.TableColumns):
        return parsed.columns.table
    return table.from_numpy(parsed.columns, contract)


def encode(data: pa.Table) -> bytes:
    """``data`` (columns in the contract's order and types) as Parquet bytes."""
    sink = io.BytesIO()
    pq.write_table(
        data,
        sink,
        row_group_size=ROW_GROUP_ROWS,
        compression="zstd",
        store_schema=True,
    )
    return sink.getvalue()


def decode(data: bytes, contract: DatasetContract) -> ParsedDataset:
    """The typed columns in ``data``, as validation produced them; ``KeyError`` if a
    column of ``contract`` is not there."""
    stored = pq.read_table(io.BytesIO(data))
    missing = [c.name for c in contract.columns if c.name not in stored.column_names]
    if missing:
        raise KeyError(f"the snapshot has no column {missing[0]!r}")
    return ParsedDataset(table.TableColumns(stored, contract), stored.num_rows)


def write(store: BlobStore, key: str, checked: pa.Table) -> Snapshot:
    """Write the snapshot create-only; a snapshot already there (a redelivery after a
    crash) is kept and described, never replaced."""
    data = encode(checked)
    try:
        store.write(key, data, if_generation_match=0, content_type="application/vnd.apache.parquet")
    except PreconditionFailed:
        data = store.read(key).data
    return Snapshot(key, store.uri(key), hashlib.sha256(data).hexdigest(), checked.num_rows)


def read(store: BlobStore, snapshot: dict[str, Any], contract: DatasetContract) -> ParsedDataset:
    """The snapshot an event names, its sha256 checked before it is parsed."""
    try:
        data = store.read(str(snapshot["key"])).data
    except NotFound as exc:
        raise DataUnavailable(f"snapshot {snapshot['uri']} is gone: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != snapshot["sha256"]:
        raise DataUnavailable(f"snapshot {snapshot['uri']} changed since it was validated")
    return decode(data, contract)
