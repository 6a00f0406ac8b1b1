"""Validation that streams: the same answers as the whole-file path, batch by batch.

A file read in many batches (a tiny ``[limits] batch_mb``) gives the report, the
duplicate count and the ``profile.json`` bytes that ``checks.validate`` and
``profile.profile`` give on the whole file; gzip and Parquet uploads are deployed end
to end; every refusal (a bad row at the end, a line too long, a truncated gzip, a
corrupt Parquet file, a Parquet schema that does not fit, a file over the ceiling)
names its problems and leaves no snapshot part behind.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from modelrail.domain.config import Limits, PipelineConfig
from modelrail.domain.dataset import checks, duplicates, profile, snapshot, stream, synth
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.kernel.canonical import canonical_json
from tests.fakes import InMemoryStore
from tests.unit.conftest import Harness

KB = 2**10
ROOT = Path(__file__).resolve().parents[2]
TINY = stream.Limits(batch_bytes=2 * KB, max_line_bytes=2**20, max_columns=1000)


@pytest.fixture
def contract() -> DatasetContract:
    return PipelineConfig.load(ROOT / "pipeline.toml").contract


def _whole_file(data: bytes, contract: DatasetContract) -> tuple[dict, bytes | None, int]:
    report, parsed = checks.validate(data, contract, max_line_bytes=2**20, max_columns=1000)
    if not report.passed:
        return report.to_dict(), None, 0
    table = snapshot.arrow(parsed, contract)
    dupes = duplicates.count(parsed.columns, parsed.rows)
    return report.to_dict(), canonical_json(profile.profile(table, contract)), dupes


def _streamed(
    data: bytes, contract: DatasetContract, fmt: str = "csv", limits: stream.Limits = TINY
) -> tuple[stream.Result, InMemoryStore]:
    store = InMemoryStore("artifacts")
    parts = snapshot.PartWriter(store, "runs/r/snapshot/")
    result = stream.validate(io.BytesIO(data), fmt, contract, limits, parts)
    if not result.report.passed:
        parts.abort()
    return result, store


def _synthetic(contract: DatasetContract, rows: int, tmp_path: Path) -> bytes:
    path = tmp_path / "synth.csv"
    synth.write_csv(contract, rows, path, seed=7)
    return path.read_bytes()


@pytest.mark.parametrize("copies", [1, 3])
def test_many_batches_give_the_whole_files_report_profile_and_duplicates(
    penguins_csv: bytes, contract: DatasetContract, copies: int
) -> None:
    head, _, body = penguins_csv.partition(b"\n")
    data = head + b"\n" + body * copies
    report, profile_json, dupes = _whole_file(data, contract)

    result, store = _streamed(data, contract)

    assert len(result.parts) > 5  # really read in many batches
    assert result.report.to_dict() == report
    assert profile_json is not None
    assert result.profile is not None
    assert canonical_json(result.profile) == profile_json  # byte for byte
    assert result.duplicate_rows == dupes
    assert sum(part.rows for part in result.parts) == report["rows"]
    assert not [key for key in store._objects if "/scratch/" in key]


def test_a_larger_synthetic_file_streams_to_the_same_profile(
    contract: DatasetContract, tmp_path: Path
) -> None:
    data = _synthetic(contract, 30_000, tmp_path)
    report, profile_json, dupes = _whole_file(data, contract)

    result, _ = _streamed(data, contract, limits=dataclasses.replace(TINY, batch_bytes=64 * KB))

    assert len(result.parts) > 10
    assert result.report.to_dict() == report
    assert result.profile is not None
    assert canonical_json(result.profile) == profile_json
    assert result.duplicate_rows == dupes


class _ReadOnly:
    """A source with ``read`` alone (no ``readinto``)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_a_source_without_readinto_is_hashed_the_same(
    penguins_csv: bytes, contract: DatasetContract
) -> None:
    parts = snapshot.PartWriter(InMemoryStore("artifacts"), "runs/r/snapshot/")

    result = stream.validate(_ReadOnly(penguins_csv), "csv", contract, TINY, parts)  # type: ignore[arg-type]

    assert result.report.passed
    assert result.sha256 == hashlib.sha256(penguins_csv).hexdigest()


def test_gzip_and_parquet_give_the_csvs_profile(
    penguins_csv: bytes, contract: DatasetContract
) -> None:
    csv_result, _ = _streamed(penguins_csv, contract)
    gz_result, _ = _streamed(gzip.compress(penguins_csv, mtime=0), contract, "csv.gz")
    sink = io.BytesIO()
    pq.write_table(pacsv.read_csv(pa.BufferReader(penguins_csv)), sink, row_group_size=50)
    pq_result, _ = _streamed(sink.getvalue(), contract, "parquet")

    for result, data in (
        (csv_result, penguins_csv),
        (gz_result, gzip.compress(penguins_csv, mtime=0)),
        (pq_result, sink.getvalue()),
    ):  # the upload's own bytes, hashed as they are read
        assert (result.sha256, result.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert gz_result.report.to_dict() == csv_result.report.to_dict()
    assert gz_result.profile == csv_result.profile
    assert pq_result.report.passed, pq_result.report.to_dict()
    assert pq_result.profile == csv_result.profile


@pytest.mark.parametrize("where", ["first", "last"])
def test_problems_keep_their_file_row_numbers_and_examples(
    penguins_csv: bytes, contract: DatasetContract, where: str
) -> None:
    lines = penguins_csv.splitlines(keepends=True)
    index = 1 if where == "first" else len(lines) - 1
    lines[index] = lines[index].replace(b"Torgersen", b"Atlantis").replace(b"Biscoe", b"Atlantis")
    lines[index] = lines[index].replace(b"Dream", b"Atlantis")
    data = b"".join(lines)
    report, _, _ = _whole_file(data, contract)

    result, store = _streamed(data, contract)

    assert result.report.to_dict() == report
    [problem] = result.report.problems
    assert (problem.check, problem.rows, problem.examples) == ("category", (index,), ("Atlantis",))
    assert store.list() == []  # the parts written before the bad row are gone


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_a_line_too_long_and_a_malformed_row_are_reported_as_the_whole_file_path_does(
    penguins_csv: bytes, contract: DatasetContract, newline: bytes
) -> None:
    # Line numbers are counted from the line breaks the batches' scanner saw, with any
    # line ending; a break inside quotes in an earlier batch ends no line for the
    # parser's message (the long line is numbered by every break, as checks does).
    limits = dataclasses.replace(TINY, max_line_bytes=1000)
    body = penguins_csv.replace(b"\n", newline)
    quoted = body.replace(b"Torgersen", b'"Torger' + newline + b'sen"', 3)
    for data in (
        body + b"x" * 5000 + newline,
        body + b"a,b,c,d,e,f,g,h,i,j,k" + newline,
        quoted + b"x" * 5000 + newline,
        quoted + b"a,b,c,d,e,f,g,h,i,j,k" + newline,
    ):
        report, _ = checks.validate(data, contract, max_line_bytes=1000, max_columns=1000)

        result, store = _streamed(data, contract, limits=limits)

        assert result.report.to_dict() == report.to_dict()
        assert store.list() == []


def test_deciles_are_numpys_bit_for_bit_however_the_values_fall(
    contract: DatasetContract, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few values per collected prefix: every decile is pinned down by narrowing passes.
    monkeypatch.setattr(stream, "_COLLECT_LIMIT", 3)
    rng = np.random.default_rng(3)
    for values in (
        rng.normal(0, 1e6, 5001),
        np.round(rng.normal(100, 0.01, 4000), 3),  # narrow, with ties
        np.concatenate([np.zeros(2000), -np.abs(rng.standard_cauchy(17))]),
        np.array([42.0]),
    ):
        name = contract.features[0].name
        summary = stream._Summary(contract, None)
        summary.numeric = [name]
        summary.present = {name: 0}
        summary.hist = {name: np.zeros(2**16, np.int64)}
        batches = [pa.record_batch({name: chunk}) for chunk in np.array_split(values, 7)]
        for batch in batches:
            present = batch.column(name).to_numpy()
            summary.present[name] += present.size
            summary.hist[name] += np.bincount(
                (stream._keys(present) >> np.uint64(48)).astype(np.int64), minlength=2**16
            )

        edges = stream._deciles(summary, lambda names, batches=batches: iter(batches))

        expected = np.unique(np.quantile(values, profile.QUANTILES)).tolist()
        assert orjson.dumps(edges[name]) == orjson.dumps(expected)


def test_counted_values_give_numpys_deciles_and_bins_bit_for_bit() -> None:
    rng = np.random.default_rng(4)
    for values in (
        np.round(rng.normal(4000, 800, 20_000), 2),  # few digits: many ties
        np.round(rng.normal(100, 0.01, 4000), 3),
        np.concatenate([np.zeros(2000), -np.zeros(500), -np.abs(rng.standard_cauchy(17))]),
        rng.integers(2007, 2030, 3000).astype(np.float64),
        np.array([42.0]),
    ):
        tally = stream._Tally()
        for chunk in np.array_split(values, 7):
            tally.add(chunk)

        edges, bins = tally.profile()

        expected = profile._numeric(values)
        assert orjson.dumps(edges) == orjson.dumps(expected["edges"])
        assert (bins / values.size).tolist() == expected["shares"]


@pytest.mark.parametrize("limit", [0, 2000])
def test_columns_past_the_distinct_limit_mid_stream_keep_the_whole_files_profile(
    contract: DatasetContract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    # 0: every column falls back to the histogram and the passes over the parts; 2000:
    # bill depth (1,348 distinct values) keeps its counts, the other measurements fall
    # back after a few batches (~500 new values each), body mass soonest.
    monkeypatch.setattr(stream, "_DISTINCT_LIMIT", limit)
    data = _synthetic(contract, 20_000, tmp_path)
    _, profile_json, _ = _whole_file(data, contract)

    result, _ = _streamed(data, contract, limits=dataclasses.replace(TINY, batch_bytes=32 * KB))

    assert result.profile is not None
    assert canonical_json(result.profile) == profile_json


# -- through the stage, in embedded mode ------------------------------------------------


def _limit(harness: Harness, **changes: int) -> None:
    config = harness.container.config
    limits = dataclasses.replace(Limits(), batch_bytes=2 * KB, **changes)
    limited = dataclasses.replace(config, limits=limits)
    harness.container.models.config = lambda name: limited  # type: ignore[method-assign]


def _snapshot_objects(harness: Harness) -> list[str]:
    return [
        info.key
        for info in harness.container.artifacts.list("runs/")
        if "/snapshot/" in info.key and not info.key.endswith("profile.json")
    ]


def _refused(harness: Harness) -> dict:
    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["kind"] == "contract_violation", failed["error"]
    assert _snapshot_objects(harness) == []
    error: dict = failed["error"]
    return error


def _parquet(csv: bytes) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pacsv.read_csv(pa.BufferReader(csv)), sink, row_group_size=40)
    return sink.getvalue()


@pytest.mark.parametrize(
    ("name", "encode"),
    [("uploads/penguins/data.csv.gz", gzip.compress), ("uploads/penguins/data.parquet", _parquet)],
)
def test_gzip_and_parquet_uploads_are_deployed_from_a_partitioned_snapshot(
    harness: Harness, penguins_csv: bytes, name: str, encode: object
) -> None:
    _limit(harness)
    harness.upload(encode(penguins_csv), name)  # type: ignore[operator]

    harness.run()

    [deployed] = harness.published("model-deployed")
    assert deployed["version"] == 1
    [validated] = harness.published("dataset-validated")
    described = validated["dataset"]["snapshot"]
    index = orjson.loads(harness.container.artifacts.read(described["key"]).data)
    assert len(index["parts"]) > 1
    assert index["rows"] == described["rows"] == 344
    assert not [key for key in _snapshot_objects(harness) if "/scratch/" in key]


def test_a_bad_row_at_the_end_of_a_streamed_file_is_refused_leaving_no_parts(
    harness: Harness, penguins_csv: bytes
) -> None:
    _limit(harness)
    harness.upload(penguins_csv + b"Adelie,Torgersen,-5,18,190,3700,male,2008\n")

    harness.run()

    [problem] = _refused(harness)["details"]["problems"]
    assert problem["check"] == "range"
    assert problem["rows"] == [345]


def test_a_truncated_gzip_is_refused_with_a_clear_problem(
    harness: Harness, penguins_csv: bytes
) -> None:
    _limit(harness)
    packed = gzip.compress(penguins_csv * 4)
    harness.upload(packed[: len(packed) * 2 // 3], "uploads/penguins/data.csv.gz")

    harness.run()

    [problem] = _refused(harness)["details"]["problems"]
    assert problem["check"] == "unreadable"
    assert "cannot be read to its end" in problem["message"]


def test_a_corrupt_parquet_file_is_refused_with_a_clear_problem(
    harness: Harness, penguins_csv: bytes
) -> None:
    _limit(harness)
    harness.upload(_parquet(penguins_csv)[:-100], "uploads/penguins/data.parquet")

    harness.run()

    [problem] = _refused(harness)["details"]["problems"]
    assert problem["check"] == "malformed_parquet"


def test_a_parquet_schema_off_the_contract_is_refused_naming_each_column(
    harness: Harness, penguins_csv: bytes
) -> None:
    _limit(harness)
    table = pacsv.read_csv(pa.BufferReader(penguins_csv))
    table = table.set_column(
        table.column_names.index("bill_length_mm"),
        "bill_length_mm",
        pa.array(["long"] * len(table)),
    ).drop_columns(["sex"])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    harness.upload(sink.getvalue(), "uploads/penguins/data.parquet")

    harness.run()

    problems = _refused(harness)["details"]["problems"]
    assert [(p["check"], p["column"]) for p in problems] == [
        ("missing_column", "sex"),
        ("parquet_schema", "bill_length_mm"),
    ]


def test_a_file_over_the_ceiling_is_refused_unread(harness: Harness, penguins_csv: bytes) -> None:
    _limit(harness, max_upload_bytes=1000)
    harness.upload(penguins_csv)

    harness.run()

    [problem] = _refused(harness)["details"]["problems"]
    assert problem["check"] == "upload_size"
