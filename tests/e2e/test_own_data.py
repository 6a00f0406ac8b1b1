"""A user's own CSV to a served model with nothing hand-written: ``modelrail init`` then
``modelrail upload``, run from the user's own directory, on real public datasets that
ship inside Python packages (none of them the bundled one)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from tests.e2e.test_cli import MODELRAIL, _free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("own-data")]


def _statsmodels_file(dataset: str, name: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes((resources.files("statsmodels.datasets") / dataset / name).read_bytes())

    return write


def _vega_file(name: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes((resources.files("vega_datasets") / "_data" / name).read_bytes())

    return write


def _vega_cars(path: Path) -> None:
    # The package ships it as JSON records; a user would have exported it to CSV.
    records = json.loads((resources.files("vega_datasets") / "_data" / "cars.json").read_text())
    pd.DataFrame(records).to_csv(path, index=False)


def _anes96(path: Path) -> None:
    # Shipped tab-separated with quoted names; its loader gives the table.
    from statsmodels.datasets import anes96

    anes96.load_pandas().data.to_csv(path, index=False)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    write: Callable[[Path], None]
    target: str
    objective: str
    # What init must decide about the columns that make real CSVs hard.
    expected: dict[str, dict[str, Any]]


DATASETS = [
    Dataset(
        "cars",  # vega-datasets: 406 cars, 8 without a target
        _vega_cars,
        "Miles_per_Gallon",
        "regression",
        {
            "Name": {"type": "text", "role": "ignore"},
            "Year": {"type": "datetime", "role": "ignore"},
            # A count (3 ... 8, no large gap), not codes.
            "Cylinders": {"type": "integer", "min": 2, "max": 9},
            "Horsepower": {"type": "integer", "nullable": True},
            # The target has no range: next year's mileage is not refused.
            "Miles_per_Gallon": {"type": "number", "min": None, "max": None},
        },
    ),
    Dataset(
        "seattle-weather",  # vega-datasets: 1,461 days, five kinds of weather
        _vega_file("seattle-weather.csv"),
        "weather",
        "multiclass",
        {"date": {"type": "datetime", "role": "ignore"}, "wind": {"type": "number"}},
    ),
    Dataset(
        "fair",  # statsmodels: 6,366 survey answers, occupations coded 1.0 ... 6.0
        _statsmodels_file("fair", "fair.csv"),
        "affairs",
        "regression",
        {"occupation": {"type": "category", "categories": ["1", "2", "3", "4", "5", "6"]}},
    ),
    Dataset(
        "anes96",  # statsmodels: 944 voters, party and education on 7-point scales
        _anes96,
        "vote",
        "binary",
        {"PID": {"type": "integer", "min": 0, "max": 7}, "popul": {"type": "integer"}},
    ),
    Dataset(
        "grunfeld",  # statsmodels: 220 firm-years, firms by name
        _statsmodels_file("grunfeld", "grunfeld.csv"),
        "invest",
        "regression",
        {"firm": {"type": "category"}, "year": {"type": "integer"}},
    ),
]


class OwnUser:
    """Runs ``modelrail`` in a directory of their own: no checkout, no settings but the
    state directory and a free port: init installs the model."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MODELRAIL_")}
        self.env = {
            **inherited,
            "MODELRAIL_HOME": str(workdir / ".modelrail"),
            "MODELRAIL_STAGING_PORT": str(_free_port()),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(MODELRAIL), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"modelrail {args}:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture
def own_user(tmp_path: Path) -> Iterator[OwnUser]:
    user = OwnUser(tmp_path)
    try:
        yield user
    finally:
        subprocess.run(
            [str(MODELRAIL), "down"], cwd=tmp_path, env=user.env, capture_output=True, check=False
        )


@pytest.mark.parametrize("dataset", DATASETS, ids=[d.name for d in DATASETS])
def test_init_then_upload_serves_a_model(own_user: OwnUser, dataset: Dataset) -> None:
    csv_path = own_user.workdir / f"{dataset.name}.csv"
    dataset.write(csv_path)

    init = own_user.run("init", csv_path.name, "--target", dataset.target)
    upload = own_user.run("upload", csv_path.name)

    assert f"{dataset.name}: {dataset.objective}" in init.stdout
    contract = json.loads(
        (own_user.workdir / dataset.name / f"{dataset.name}.contract.json").read_text()
    )
    columns = {c["name"]: c for c in contract["columns"]}
    for name, decided in dataset.expected.items():
        assert {k: columns[name].get(k) for k in decided} == decided, (name, init.stdout)
    assert "deployed" in upload.stdout, upload.stdout

    frame = pd.read_csv(csv_path)
    first = frame[frame[dataset.target].notna()].iloc[0].drop(dataset.target)
    # A row of the file as a client sends it: target removed, ignored columns left in.
    row = {
        name: None if pd.isna(v) else getattr(v, "item", lambda v=v: v)()
        for name, v in first.items()
    }
    staging = f"http://127.0.0.1:{own_user.env['MODELRAIL_STAGING_PORT']}"
    response = requests.post(f"{staging}/predict", json={"instances": [row]}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == {"name": dataset.name, "version": 1}
    ignored = {c["name"] for c in contract["columns"] if c.get("role") == "ignore"}
    warned = {w["feature"] for w in answer.get("warnings", []) if "ignored" in w["detail"]}
    assert warned == ignored


def test_rows_without_a_target_are_dropped_and_counted(own_user: OwnUser) -> None:
    csv_path = own_user.workdir / "cars.csv"
    _vega_cars(csv_path)
    rows = len(pd.read_csv(csv_path))
    without_target = int(pd.read_csv(csv_path)["Miles_per_Gallon"].isna().sum())
    assert without_target > 0  # the dataset as shipped

    init = own_user.run("init", "cars.csv", "--target", "Miles_per_Gallon")
    own_user.run("upload", "cars.csv")

    assert f"{without_target} of {rows} rows have no target" in init.stdout
    [run] = json.loads(own_user.run("runs", "--json").stdout)
    assert run["outcome"] == "deployed"
    artifacts = own_user.workdir / ".modelrail" / "buckets" / "modelrail-artifacts"
    report = json.loads((artifacts / f"runs/{run['run_id']}/reports/validation.json").read_text())
    assert report["dropped"] == {"missing_target": without_target}
    assert report["rows"] == rows - without_target
