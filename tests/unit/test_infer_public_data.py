"""modelrail init's rules on real public tables that ship inside installed packages
(statsmodels, vega-datasets), the kinds of columns users found it guessing wrong:
whole numbers on a scale taken for codes, a growing measurement taken for an
identifier, and a target that refused next month's prices."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks
from modelrail.entry import cli, init
from tests.conftest import settings_env


def _statsmodels(dataset: str, name: str) -> Path:
    return Path(str(resources.files("statsmodels.datasets") / dataset / name))


def _decisions(inference: init.Inference) -> dict[str, init.Decision]:
    return {d.entry["name"]: d for d in inference.decisions}


@pytest.fixture
def economics_csv(tmp_path: Path) -> Path:
    """statsmodels' US macro data (203 quarters, 1959-2009) as an economics table keeps
    it: population in thousands (177146), as ggplot2's ``economics`` does, where
    statsmodels writes millions with three decimals (177.146)."""
    frame = pd.read_csv(_statsmodels("macrodata", "macrodata.csv"))
    frame["pop"] = (frame["pop"] * 1000).round().astype(int)
    path = tmp_path / "economics.csv"
    frame.to_csv(path, index=False)
    return path


def test_whole_numbers_on_a_scale_stay_integers() -> None:
    # Fair's Psychology Today survey (601 answers): ratings 1 ... 5, years of
    # schooling 9 ... 20, occupations coded 1 ... 7.
    decisions = _decisions(init.infer(_statsmodels("fair", "fair_pt.csv"), "naffairs"))

    rating = decisions["rate_marriage"]
    assert rating.entry == {
        "name": "rate_marriage",
        "type": "integer",
        "nullable": False,
        "min": 0,
        "max": 6,
    }
    assert rating.rule == "count-or-scale"
    assert rating.why.startswith("5 whole-number values 1 to 5 (none missing between): a count")
    assert (decisions["religious"].entry["type"], decisions["religious"].rule) == (
        "integer",
        "count-or-scale",
    )
    schooling = decisions["education"]
    assert schooling.entry["type"] == "integer"
    assert "7 whole-number values 9 to 20 (largest gap 3, median 2)" in schooling.why
    assert (schooling.evidence["largest gap"], schooling.evidence["median gap"]) == (3.0, 2.0)
    # Codes need evidence: here the name says so.
    occupation = decisions["occupation"]
    assert occupation.entry["categories"] == ["1", "2", "3", "4", "5", "6", "7"]
    assert occupation.rule == "code-name"
    assert "named as codes (ends in 'occupation')" in occupation.why


def test_quarters_stay_integers(economics_csv: Path) -> None:
    quarter = _decisions(init.infer(economics_csv, "unemp"))["quarter"]

    assert (quarter.entry["type"], quarter.entry["min"], quarter.entry["max"]) == ("integer", 0, 5)
    assert quarter.rule == "count-or-scale"
    assert "4 whole-number values 1 to 4 (none missing between)" in quarter.why


def test_a_growing_measurement_is_a_feature_and_a_counter_is_an_identifier(
    economics_csv: Path,
) -> None:
    population = _decisions(init.infer(economics_csv, "unemp"))["pop"]

    assert population.entry.get("role", "feature") == "feature"
    assert population.entry["type"] == "integer"
    assert population.rule == "measurement-uneven"
    assert population.why == (
        "a different whole number on every row, increasing, unevenly spaced (steps 400 to "
        "967): a measurement, not an identifier"
    )
    assert population.evidence["unique"] is True
    assert population.evidence["order"] == "increasing"

    # Weekly CO2 readings dated as numbers (19580329, 19580405, ...): growing, uneven.
    date = _decisions(init.infer(_statsmodels("co2", "co2.csv"), "co2"))["date"]
    assert (date.entry["type"], date.entry.get("role", "feature")) == ("integer", "feature")
    assert date.rule == "measurement-uneven"

    # Copper (25 years): a counter 1 ... 25 and the year, each evenly spaced.
    copper = _decisions(init.infer(_statsmodels("copper", "copper.csv"), "WORLDCONSUMPTION"))
    for name in ("TIME", "YEAR"):
        assert copper[name].entry["role"] == "ignore"
        assert copper[name].rule == "identifier-evenly-spaced"
        assert "evenly spaced (step 1, increasing): a row number or counter" in copper[name].why


def test_the_target_has_no_range_so_higher_prices_later_are_accepted(tmp_path: Path) -> None:
    # vega-datasets' monthly stock prices, 2000-2010 (560 rows).
    stocks = tmp_path / "stocks.csv"
    stocks.write_bytes((resources.files("vega_datasets") / "_data" / "stocks.csv").read_bytes())
    inference = init.infer(stocks, "price")
    config = PipelineConfig.load(init.write(inference, tmp_path / "out")[0])

    price = _decisions(inference)["price"]
    assert price.entry == {"name": "price", "nullable": True, "type": "number"}
    assert price.rule == "target-regression"
    assert "no range (observed 5.97 to 707): new data is not refused" in price.why
    later = pd.read_csv(stocks)
    later["price"] = (later["price"] * 1.3).round(2)  # every price up 30 %
    report, _ = checks.validate(later.to_csv(index=False).encode(), config.contract)
    assert report.passed, report.problems


def test_explain_prints_every_decision_with_its_evidence(
    tmp_path: Path, economics_csv: Path
) -> None:
    result = CliRunner().invoke(
        cli.main,
        ["init", str(economics_csv), "--target", "unemp", "--out", str(tmp_path / "out")],
        env=settings_env(tmp_path / "home"),
    )
    explained = CliRunner().invoke(
        cli.main,
        [
            "init",
            str(economics_csv),
            "--target",
            "unemp",
            "--name",
            "economics-2",
            "--out",
            str(tmp_path / "out-2"),
            "--explain",
        ],
        env=settings_env(tmp_path / "home"),
    )

    assert result.exit_code == 0, result.output
    assert explained.exit_code == 0, explained.output
    assert "evidence" not in result.output
    text = explained.output
    assert "added model 'economics-2'" in text
    for column in pd.read_csv(economics_csv, nrows=0).columns:
        block = text[text.index(f"\n  {column}\n") :].splitlines()[2:5]
        assert [line.split()[0] for line in block] == ["decided", "rule", "evidence"], block
    assert (
        "  pop\n"
        "    decided   integer, feature, not nullable (no value missing), range "
        "[164059, 321100] (observed 177146 to 308013, widened by 10% of the span on each "
        "side, not below 0: never negative)\n"
        "    rule      measurement-uneven: a different whole number on every row, "
        "increasing, unevenly spaced (steps 400 to 967): a measurement, not an identifier\n"
        "    evidence  rows 203, missing 0, distinct 203, whole numbers yes, unique yes, "
        "order increasing, steps 400 to 967, name no code word, observed 177146 to 308013, "
        "never negative yes\n"
    ) in text
    assert "    rule      count-or-scale: 4 whole-number values 1 to 4" in text
    assert "none missing between yes, largest gap 1, median gap 1, rows per value 50.8" in text
    assert "    decided   number, target, nullable (0 rows without a target" in text
    assert "no range (observed 3.4 to 10.7)" in text
    assert "min_rows: 50 (a quarter of the 203 rows with a target" in text
