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
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
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
    encoder = Encoder()
    encoder.add(data)
    return encoder.finish()


class Encoder:
    """Tables of one schema added one after another, as the Parquet bytes ``encode``
    gives for all of them at once: only the compressed bytes are held."""

    def __init__(self) -> None:
        self._sink = io.BytesIO()
        self._writer: pq.ParquetWriter | None = None

    def add(self, data: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._sink, data.schema, compression="zstd", store_schema=True
            )
        self._writer.write_table(data, row_group_size=ROW_GROUP_ROWS)

    def finish(self) -> bytes:
        if self._writer is None:
            raise ValueError("nothing was added to encode")
        self._writer.close()
        return self._sink.getvalue()


def decode(data: bytes, contract: DatasetContract) -> ParsedDataset:
    """The typed columns in ``data``, as validation produced them; ``KeyError`` if a
    column of ``contract`` is not there."""
    return _parsed(pq.read_table(io.BytesIO(data)), contract)


def _parsed(stored: pa.Table, contract: DatasetContract) -> ParsedDataset:
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


def read(
    store: BlobStore, parts: tuple[Part, ...], uri: str, contract: DatasetContract
) -> ParsedDataset:
    """The ``parts`` of the snapshot at ``uri`` (as ``parts`` lists them, its index
    checked) as one dataset, each part checked against its sha256 before it is parsed
    (``read_part``)."""
    tables = [read_part(store, part, uri) for part in parts]
    return _parsed(pa.concat_tables(tables) if tables else pa.table({}), contract)


# -- the partitioned snapshot --------------------------------------------------------

INDEX = "index.json"
PART_SUFFIX = ".snapshot.parquet"
SCRATCH_SUFFIX = ".rowhashes"
INDEX_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a partitioned snapshot: its key, sha256 and rows."""

    key: str
    sha256: str
    rows: int


class PartWriter:
    """Writes a streamed snapshot's parts under ``<prefix>parts-<token>/``
    (``part-00000.snapshot.parquet``, …; the token is this writer's own, so two
    deliveries of a run never write or delete each other's) and the stream's scratch
    objects beside them (``scratch/00000.rowhashes``). The suffixes are what the
    validate account may write under ``runs/`` (terraform/envs/dev/iam.tf), and no
    other stage's object ends so. Nothing reads a part until ``write_index`` names it; ``abort``
    deletes every object written."""

    def __init__(self, store: BlobStore, prefix: str) -> None:
        self.store = store
        self.prefix = f"{prefix}parts-{uuid.uuid4().hex[:12]}/"
        self._parts: list[Part] = []
        self._scratch: list[str] = []

    def add(self, checked: pa.Table) -> None:
        data = encode(checked)
        key = f"{self.prefix}part-{len(self._parts):05d}{PART_SUFFIX}"
        self.store.write(key, data, content_type="application/vnd.apache.parquet")
        self._parts.append(Part(key, hashlib.sha256(data).hexdigest(), checked.num_rows))

    def scratch(self, data: bytes) -> str:
        key = f"{self.prefix}scratch/{len(self._scratch):05d}{SCRATCH_SUFFIX}"
        self.store.write(key, data)
        self._scratch.append(key)
        return key

    def finish(self) -> tuple[Part, ...]:
        """The parts written, the scratch objects deleted."""
        for key in self._scratch:
            self.store.delete(key)
        self._scratch.clear()
        return tuple(self._parts)

    def abort(self) -> None:
        """Delete every part and scratch object written: a refused file leaves none."""
        for key in [*self._scratch, *(part.key for part in self._parts)]:
            self.store.delete(key)
        self._scratch.clear()
        self._parts.clear()


def write_index(writer: PartWriter, key: str, parts: tuple[Part, ...]) -> Snapshot:
    """Write the index naming ``parts`` create-only, last: the snapshot exists from
    then on. An index already there (another delivery's) is kept and described, and
    this writer's parts deleted."""
    store = writer.store
    rows = sum(part.rows for part in parts)
    body = {
        "format": INDEX_FORMAT,
        "rows": rows,
        "parts": [dataclasses.asdict(part) for part in parts],
    }
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    try:
        store.write(key, data, if_generation_match=0, content_type="application/json")
    except PreconditionFailed:
        writer.abort()
        data = store.read(key).data
        rows = int(orjson.loads(data)["rows"])
    return Snapshot(key, store.uri(key), hashlib.sha256(data).hexdigest(), rows)


def _index_parts(store: BlobStore, snapshot: dict[str, Any]) -> tuple[Part, ...]:
    try:
        data = store.read(str(snapshot["key"])).data
    except NotFound as exc:
        raise DataUnavailable(f"snapshot {snapshot['uri']} is gone: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != snapshot["sha256"]:
        raise DataUnavailable(f"snapshot {snapshot['uri']} changed since it was validated")
    return tuple(Part(**part) for part in orjson.loads(data)["parts"])


def _part_bytes(store: BlobStore, part: Part, uri: str) -> bytes:
    try:
        data = store.read(part.key).data
    except NotFound as exc:
        raise DataUnavailable(f"snapshot {uri}: part {part.key} is gone: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != part.sha256:
        raise DataUnavailable(f"snapshot {uri}: part {part.key} changed since it was validated")
    return data


def iter_parts(
    store: BlobStore, parts: tuple[Part, ...], columns: list[str]
) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of every part, in order, a row group at a time."""
    for part in parts:
        with store.open(part.key) as stream:
            yield from table.parquet_file(stream.file).iter_batches(columns=columns)


def read_part(store: BlobStore, part: Part, uri: str) -> pa.Table:
    """One part of the snapshot at ``uri``, its sha256 checked before it is parsed."""
    return pq.read_table(io.BytesIO(_part_bytes(store, part, uri)))


def parts(store: BlobStore, snapshot: dict[str, Any]) -> tuple[Part, ...]:
    """The parts of the snapshot an event names, in order, its index checked against
    the sha256 the event carries (a snapshot from before parts: itself, one part)."""
    if str(snapshot["key"]).endswith(".parquet"):
        return (Part(str(snapshot["key"]), str(snapshot["sha256"]), int(snapshot["rows"])),)
    return _index_parts(store, snapshot)
