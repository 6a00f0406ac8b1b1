"""The typed reader accepts only what the reporting path accepts, with the same values;
whatever it declines, the reporting path decides."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks, profile, snapshot, synth, typed
from modelrail.domain.dataset.contract import DatasetContract

HEADER = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"
GOOD = "Adelie,Torgersen,39.1,18.7,181,3750,male,2007\nGentoo,Biscoe,46.1,13.2,211,4500,female,2007"

EXTRA = DatasetContract.from_spec(
    {
        "name": "extra",
        "target": "label",
        "max_missing_target_fraction": 0.3,
        "null_tokens": ["", "NA"],
        "columns": [
            {"name": "grade", "type": "category", "categories": ["1", "2", "6"]},
            {"name": "member", "type": "boolean", "nullable": True},
            {"name": "day", "type": "datetime", "role": "ignore", "nullable": True},
            {"name": "note", "type": "text", "role": "ignore", "nullable": True},
            {"name": "score", "type": "integer", "nullable": True, "min": 0, "max": 100},
            {"name": "label", "type": "category", "categories": ["a", "b"]},
        ],
    },
    "test contract",
)


def _same(data: bytes, contract: DatasetContract) -> None:
    header = checks.header_of(data)
    assert typed.read(data, header, contract) is not None, "the typed reader declined it"
    report, parsed = checks._report_problems(data, header, contract)
    assert report.passed
    fast = checks.validate(data, contract)  # which takes the typed path
    assert fast[0] == report
    assert fast[1].rows == parsed.rows
    assert fast[1].columns.keys() == parsed.columns.keys()
    for name, values in parsed.columns.items():
        if values.dtype == object:
            assert list(fast[1].columns[name]) == list(values), name
        else:
            np.testing.assert_array_equal(fast[1].columns[name], values, err_msg=name)
    # The table the typed reader keeps is the one the reporting path's arrays make: the
    # same snapshot bytes, the same profile.
    typed_table = snapshot.arrow(fast[1], contract)
    reported_table = snapshot.arrow(parsed, contract)
    assert typed_table.equals(reported_table)
    assert snapshot.encode(typed_table) == snapshot.encode(reported_table)
    assert profile.profile(typed_table, contract) == profile.profile(reported_table, contract)


def test_valid_files_read_the_same_both_ways(
    config: PipelineConfig, penguins_csv: bytes, tmp_path: Path
) -> None:
    _same(penguins_csv, config.contract)
    synthetic = tmp_path / "synthetic.csv"
    synth.write_csv(config.contract, 3_000, synthetic, seed=2)
    _same(synthetic.read_bytes(), config.contract)
    reordered = "year,sex,island,species,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g"
    _same(
        (
            f"{reordered}\n"
            + (
                "2007,male,Dream,Adelie,39.1,18.7,181,3750\n"
                "2008,female,Biscoe,Gentoo,46.1,13.2,211,4500\n"
            )
            * 60
        ).encode(),
        config.contract,
    )
    # Arrow reads a byte-order mark and a padded number as the reporting path does.
    _same(("\ufeff" + HEADER + "\n" + (GOOD + "\n") * 50).encode(), config.contract)
    _same(
        (HEADER + "\n" + (GOOD + "\n") * 50 + GOOD.replace(",181,", ", 181 ,")).encode(),
        config.contract,
    )
    rows = [
        "2.0,true,2024-03-01,hello,7,a",
        "6,False,,,,b",
        "1,,2024/03/02T10:00:00Z,x y,100,NA",  # no target: dropped
        "2,yes,2024-03-03,,0,a",
    ]
    _same(("grade,member,day,note,score,label\n" + "\n".join(rows) + "\n").encode(), EXTRA)


@pytest.mark.parametrize(
    ("row", "passes"),
    [
        ("Adelie,Atlantis,39.1,18.7,181,3750,male,2007", False),  # unknown category
        ("Adelie,Dream,39.1,18.7,181,99999,male,2007", False),  # range
        ("Adelie,Dream,long,18.7,181,3750,male,2007", False),  # not a number
        ("Adelie,Dream,inf,18.7,181,3750,male,2007", False),  # not finite
        ("Adelie,Dream,-inf,18.7,181,3750,male,2007", False),  # not finite, the minimum
        ("Adelie,Dream,39.1,18.7,181,-5,male,2007", False),  # below the range
        ("Adelie,Dream,39.1,18.7,181,3750,male,-2007.5", False),  # neither, below
        ("Adelie,Dream,nan,18.7,181,3750,male,2007", False),  # a NaN written out
        ("Adelie,Dream,39.1,18.7,181,3750,male,2007.5", False),  # not an integer
        ("Adelie,,39.1,18.7,181,3750,male,2007", False),  # null where none is allowed
        ("NA,Dream,39.1,18.7,181,3750,male,2007", False),  # target missing past the limit
        ("Adelie, Dream,39.1,18.7,181,3750,male,2007", True),  # padded: trimmed
    ],
)
def test_anything_doubtful_goes_to_the_reporting_path(
    config: PipelineConfig, row: str, passes: bool
) -> None:
    data = ("\n".join([HEADER, *[GOOD] * 60, row]) + "\n").encode()

    assert typed.read(data, checks.header_of(data), config.contract) is None
    report, _ = checks.validate(data, config.contract)  # which decides
    assert report.passed == passes


@pytest.mark.parametrize(
    "data",
    [
        (HEADER.replace(",", " , ") + "\n" + (GOOD + "\n") * 60).encode(),  # padded header
        (
            HEADER + ",colour\n" + (GOOD.replace("\n", ",red\n") + ",red\n") * 60
        ).encode(),  # a column too many
        b"",
    ],
    ids=["padded-header", "extra-column", "empty"],
)
def test_an_unusual_file_goes_to_the_reporting_path(config: PipelineConfig, data: bytes) -> None:
    assert typed.read(data, checks.header_of(data), config.contract) is None


def test_the_snapshot_gives_back_what_validation_passed(
    config: PipelineConfig, penguins_csv: bytes
) -> None:
    contract = config.contract
    report, parsed = checks.validate(penguins_csv, contract)
    assert report.passed

    decoded = snapshot.decode(snapshot.encode(snapshot.arrow(parsed, contract)), contract)

    assert decoded.rows == parsed.rows
    assert "species" in decoded.columns
    assert "colour" not in decoded.columns
    for column in contract.columns:
        values = parsed.columns[column.name]
        if values.dtype == object:
            assert list(decoded.columns[column.name]) == list(values), column.name
        else:
            np.testing.assert_array_equal(decoded.columns[column.name], values)


def test_a_snapshot_with_categories_as_plain_strings_still_reads(
    config: PipelineConfig, penguins_csv: bytes
) -> None:
    """Snapshots (and versions' reference sets) written before categories were
    dictionary-encoded hold them as strings."""
    contract = config.contract
    _, parsed = checks.validate(penguins_csv, contract)
    current = snapshot.arrow(parsed, contract)
    plain = pa.table(
        {
            name: current.column(name).cast(pa.string())
            if pa.types.is_dictionary(current.column(name).type)
            else current.column(name)
            for name in current.column_names
        }
    )
    sink = io.BytesIO()
    pq.write_table(plain, sink)

    decoded = snapshot.decode(sink.getvalue(), contract)

    for column in contract.columns:
        values = parsed.columns[column.name]
        if values.dtype == object:
            assert list(decoded.columns[column.name]) == list(values), column.name
