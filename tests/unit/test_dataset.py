"""Contract checks report exactly which rows and columns fail, and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelrail.config import PipelineConfig
from modelrail.dataset import checks, synth
from modelrail.dataset.contract import DatasetContract
from modelrail.errors import ConfigError, ContractViolation

HEADER = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"
GOOD = "Adelie,Torgersen,39.1,18.7,181,3750,male,2007"


def _csv(*rows: str, header: str = HEADER, copies: int = 120) -> bytes:
    body = [GOOD] * copies + list(rows)
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
