"""Contract checks report exactly which rows and columns fail, and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks, synth
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.kernel.errors import ConfigError, ContractViolation

HEADER = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"
GOOD = "Adelie,Torgersen,39.1,18.7,181,3750,male,2007"
# A second class: a file of one class is refused (test_a_file_of_one_class_is_refused).
GENTOO = "Gentoo,Biscoe,46.1,13.2,211,4500,female,2007"


def _csv(*rows: str, header: str = HEADER, copies: int = 120) -> bytes:
    body = [GOOD, GENTOO] * (copies // 2) + list(rows)
    return ("\n".join([header, *body]) + "\n").encode()


def _problems(
    data: bytes, contract: DatasetContract
) -> dict[tuple[str, str | None], checks.Problem]:
    report, _ = checks.validate(data, contract)
    return {(p.check, p.column): p for p in report.problems}


def test_the_bundled_dataset_meets_its_contract(
    config: PipelineConfig, penguins_csv: bytes
) -> None:
    report, parsed = checks.validate(penguins_csv, config.contract)

    assert report.passed, report.problems
    assert report.rows == parsed.rows == 344
    assert np.isnan(parsed.columns["bill_length_mm"][3])  # the row of NA values
    assert parsed.columns["sex"][3] is None


@pytest.mark.parametrize(
    ("row", "check", "column", "example"),
    [
        ("Adelie,Atlantis,39.1,18.7,181,3750,male,2007", "category", "island", "Atlantis"),
        ("Adelie,Dream,39.1,18.7,181,99999,male,2007", "range", "body_mass_g", "99999"),
        ("Adelie,Dream,39.1,18.7,100,3750,male,2007", "range", "flipper_length_mm", "100"),
        ("Adelie,Dream,long,18.7,181,3750,male,2007", "type", "bill_length_mm", "long"),
        ("Adelie,Dream,inf,18.7,181,3750,male,2007", "type", "bill_length_mm", "inf"),
        ("Adelie,Dream,39.1,18.7,181,3750,male,2007.5", "type", "year", "2007.5"),
        ("NA,Dream,39.1,18.7,181,3750,male,2007", "missing_target", "species", "NA"),
        ("Adelie,,39.1,18.7,181,3750,male,2007", "null", "island", ""),
    ],
)
def test_each_broken_value_is_reported_with_its_row(
    config: PipelineConfig, row: str, check: str, column: str, example: str
) -> None:
    problems = _problems(_csv(row), config.contract)

    problem = problems[(check, column)]
    assert problem.count == 1
    assert problem.rows == (121,)  # 1-based data row, below the header
    assert problem.examples == (example,)


def test_nulls_are_allowed_where_the_contract_allows_them(config: PipelineConfig) -> None:
    report, _ = checks.validate(_csv("Adelie,Dream,NA,,NA,NA,NA,2008"), config.contract)

    assert report.passed, report.problems


def test_missing_unexpected_and_duplicate_columns(config: PipelineConfig) -> None:
    header = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,sex,year,year,colour"
    data = (
        "\n".join([header, *["Adelie,Dream,39,18,181,male,2007,2007,red"] * 120]) + "\n"
    ).encode()

    problems = _problems(data, config.contract)

    assert ("missing_column", "body_mass_g") in problems
    assert ("unexpected_column", "colour") in problems
    assert ("duplicate_column", "year") in problems


def test_too_few_rows_and_unreadable_files(config: PipelineConfig) -> None:
    assert ("min_rows", None) in _problems(_csv(copies=5), config.contract)
    assert ("malformed_csv", None) in _problems(b"", config.contract)
    ragged = _csv('Adelie,Dream,"unterminated')
    assert not checks.validate(ragged, config.contract)[0].passed


def test_load_raises_a_contract_violation_carrying_the_report(config: PipelineConfig) -> None:
    with pytest.raises(ContractViolation) as caught:
        checks.load(_csv("Adelie,Atlantis,39.1,18.7,181,3750,male,2007"), config.contract)

    assert caught.value.details["problems"][0]["check"] == "category"


def test_synthetic_data_of_any_size_meets_the_contract(
    config: PipelineConfig, tmp_path: Path
) -> None:
    path = tmp_path / "synthetic.csv"

    synth.write_csv(config.contract, 5_000, path, seed=3)

    report, parsed = checks.validate(path.read_bytes(), config.contract)
    assert report.passed, report.problems
    assert parsed.rows == 5_000
    assert np.isnan(parsed.columns["body_mass_g"]).any()  # nullable columns get gaps
    assert set(parsed.columns["species"]) == {"Adelie", "Chinstrap", "Gentoo"}


def test_synthetic_data_is_reproducible(config: PipelineConfig) -> None:
    first = synth.generate(config.contract, 50, seed=7)
    again = synth.generate(config.contract, 50, seed=7)

    assert first.equals(again)


def test_an_invalid_contract_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "contract.json"
    path.write_text('{"name": "x", "target": "y", "columns": [{"name": "a", "type": "category"}]}')

    with pytest.raises(ConfigError, match="target 'y' is not a column"):
        DatasetContract.load(path)


def _contract(*columns: dict[str, object], **fields: object) -> DatasetContract:
    spec = {"name": "t", "target": "label", "columns": list(columns), **fields}
    return DatasetContract.from_spec(spec, "test contract")


LABEL = {"name": "label", "type": "category", "categories": ["a", "b"]}


def test_numeric_category_codes_are_one_category_however_written() -> None:
    contract = _contract(
        {"name": "grade", "type": "category", "categories": ["1", "2", "6"]}, LABEL
    )
    data = b"grade,label\n2,a\n2.0,b\n 6.00 ,a\n1e0,b\n7,a\n"

    report, parsed = checks.validate(data, contract)

    [problem] = report.problems
    assert (problem.check, problem.rows, problem.examples) == ("category", (5,), ("7",))
    assert list(parsed.columns["grade"][:4]) == ["2", "2", "6", "1"]


def test_rows_without_a_target_are_dropped_up_to_the_contracts_limit() -> None:
    columns = ({"name": "x", "type": "number"}, {**LABEL, "nullable": True})
    data = b"x,label\n1,a\n2,\n3,b\n4,NA\n5,a\n"
    lenient = _contract(*columns, max_missing_target_fraction=0.4, null_tokens=["", "NA"])
    strict = _contract(*columns, max_missing_target_fraction=0.2, null_tokens=["", "NA"])

    report, parsed = checks.validate(data, lenient)
    refused, _ = checks.validate(data, strict)

    assert report.passed
    assert (report.rows, report.dropped_missing_target) == (3, 2)
    assert list(parsed.columns["x"]) == [1.0, 3.0, 5.0]
    assert list(parsed.columns["label"]) == ["a", "b", "a"]
    [problem] = refused.problems
    assert (problem.check, problem.column, problem.rows) == ("missing_target", "label", (2, 4))
    assert "40.0% of the rows" in problem.message
    assert "max_missing_target_fraction=0.2" in problem.message


def test_dates_must_parse_and_text_takes_anything() -> None:
    contract = _contract(
        {"name": "x", "type": "number"},
        {"name": "day", "type": "datetime", "role": "ignore"},
        {"name": "note", "type": "text", "role": "ignore", "nullable": True},
        LABEL,
    )
    data = b"x,day,note,label\n1,2024-03-01,anything at all,a\n2,2024/03/02,,b\n3,soon,42,a\n"

    report, parsed = checks.validate(data, contract)

    [problem] = report.problems
    assert (problem.check, problem.column, problem.examples) == ("type", "day", ("soon",))
    assert list(parsed.columns["note"]) == ["anything at all", None, "42"]


def test_synthetic_data_without_ranges_is_plausible(tmp_path: Path) -> None:
    contract = _contract(
        {"name": "age", "type": "integer"},
        {"name": "income", "type": "number", "min": 1000},
        {"name": "joined", "type": "datetime", "role": "ignore"},
        {"name": "name", "type": "text", "role": "ignore"},
        LABEL,
    )
    path = tmp_path / "synthetic.csv"

    synth.write_csv(contract, 2_000, path, seed=1)

    report, parsed = checks.validate(path.read_bytes(), contract)
    assert report.passed, report.problems
    assert parsed.columns["age"].min() >= 0  # no negative ages
    assert parsed.columns["income"].min() >= 1000


def test_padded_header_names_and_cr_line_endings_are_read_as_training_reads_them(
    config: PipelineConfig, penguins_csv: bytes
) -> None:
    header, body = penguins_csv.split(b"\n", 1)
    padded = header.replace(b",", b" , ") + b"\n" + body
    cr_only = penguins_csv.replace(b"\n", b"\r")

    for data in (padded, cr_only):
        report, parsed = checks.validate(data, config.contract)

        assert report.passed, report.problems
        assert parsed.rows == 344
        assert set(parsed.columns) == {c.name for c in config.contract.columns}


@pytest.mark.fault
def test_a_file_of_one_class_is_refused(config: PipelineConfig, penguins_csv: bytes) -> None:
    header, *rows = penguins_csv.decode().splitlines()
    adelie = [row for row in rows if row.startswith("Adelie,")]
    data = ("\n".join([header, *adelie]) + "\n").encode()

    report, _ = checks.validate(data, config.contract)

    [problem] = report.problems
    assert (problem.check, problem.column) == ("classes", "species")
    assert "holds one class (Adelie)" in problem.message


def test_a_huge_cell_is_reported_by_a_short_example(config: PipelineConfig) -> None:
    huge = "x" * 1_000_000
    report, _ = checks.validate(
        _csv(f"Adelie,{huge},39.1,18.7,181,3750,male,2007"), config.contract
    )

    [problem] = report.problems
    [example] = problem.examples
    assert example.startswith("x" * 80 + "…")
    assert example.endswith("(1,000,000 characters)")
    assert len(str(report.to_dict())) < 5_000
