"""`modelrail predict` as a user drives it, in embedded mode: the penguins trained and
served, then a file of their rows with three broken ones scored in batch. Every good
row's answer is the staging service's for the same row; the broken rows are listed
with their problems, not scored and not dropped; the output exists once its manifest
does, with a drift report."""

from __future__ import annotations

import csv
import gzip
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import requests

from tests.conftest import PENGUINS, REPO
from tests.e2e.test_own_data import OwnUser

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("batch")]

# Rows (1-based, as in the file) broken on purpose, and the checks each fails.
BROKEN = {
    4: {("bill_length_mm", "range")},
    6: {("island", "category")},
    8: {("island", "null"), ("flipper_length_mm", "type")},
}


@pytest.fixture
def user(tmp_path: Path) -> Iterator[OwnUser]:
    """The bundled penguins definition, trained and served."""
    user = OwnUser(tmp_path)
    contract = Path("schemas") / "datasets" / "penguins.json"
    (tmp_path / contract).parent.mkdir(parents=True)
    shutil.copy(REPO / contract, tmp_path / contract)
    shutil.copy(REPO / "pipeline.toml", tmp_path / "pipeline.toml")
    try:
        user.run("add", "pipeline.toml")
        user.run("upload", str(PENGUINS))
        yield user
    finally:
        user.run("down", check=False)


def _broken_file(path: Path) -> tuple[list[str], list[list[str]]]:
    """The penguins without their target, with the rows of ``BROKEN`` broken."""
    header, *rows = list(csv.reader(PENGUINS.open(newline="")))
    target = header.index("species")
    header = [name for i, name in enumerate(header) if i != target]
    rows = [[cell for i, cell in enumerate(row) if i != target] for row in rows]
    rows[3][header.index("bill_length_mm")] = "999"
    rows[5][header.index("island")] = "Mars"
    rows[7][header.index("flipper_length_mm")] = "abc"
    rows[7][header.index("island")] = ""
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return header, rows


def _instance(header: list[str], row: list[str]) -> dict[str, Any]:
    """A row as a client sends it to /predict: numbers as numbers, NA as missing."""
    instance: dict[str, Any] = {}
    for name, cell in zip(header, row, strict=True):
        if cell in ("", "NA"):
            instance[name] = None
        elif name in ("island", "sex"):
            instance[name] = cell
        else:
            instance[name] = float(cell)
    return instance


def test_batch_scores_as_staging_answers_and_lists_the_refused_rows(user: OwnUser) -> None:
    header, rows = _broken_file(user.workdir / "penguins.csv.gz")
    [model] = orjson.loads(user.run("models", "--json").stdout)

    result = user.run(
        "predict", "--input", "penguins.csv.gz", "--output", "scored", "--explain", "--json"
    )

    manifest = orjson.loads(result.stdout)
    out = user.workdir / "scored"
    assert manifest == orjson.loads((out / "_manifest.json").read_bytes())
    assert (manifest["rows"], manifest["scored"], manifest["refused"]) == (
        len(rows), len(rows) - len(BROKEN), len(BROKEN)
    )  # fmt: skip
    assert (manifest["model"], manifest["version"]) == ("penguins", 1)

    refused = pq.read_table(out / "_refused").to_pylist()
    assert {r["row"]: {(p["column"], p["check"]) for p in r["problems"]} for r in refused} == (
        BROKEN
    )
    assert [r["year"] for r in refused] == [rows[n - 1][header.index("year")] for n in BROKEN]

    scored = pq.read_table(out).to_pylist()  # Parquet readers skip the _ names
    assert [r["row"] for r in scored] == [n for n in range(1, len(rows) + 1) if n not in BROKEN]
    good = [rows[r["row"] - 1] for r in scored]
    response = requests.post(
        f"{model['staging_url']}/predict",
        json={"instances": [_instance(header, row) for row in good]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    for row, answer, cells in zip(scored, answers, good, strict=True):
        assert row["prediction"] == answer["label"]
        assert {c: row[f"probability_{c}"] for c in answer["probabilities"]} == (
            answer["probabilities"]
        )
        assert row["year"] == int(cells[header.index("year")])
        # Each class's contributions (bias included) add up to its raw score, whose
        # softmax is the probabilities: SHAP's own property.
        raw = {
            c: sum(value for name, value in row.items() if name.startswith(f"contribution_{c}_"))
            for c in answer["probabilities"]
        }
        total = sum(math.exp(score) for score in raw.values())
        for c, probability in answer["probabilities"].items():
            assert math.exp(raw[c]) / total == pytest.approx(probability, abs=1e-9)

    drift = orjson.loads((out / "_drift.json").read_bytes())
    assert drift["instances"] == manifest["scored"]
    assert {f["feature"] for f in drift["features"]} >= {"bill_length_mm", "island"}
    assert drift["drifted"] == []  # the training data itself


def test_an_output_that_exists_is_refused_and_left_alone(user: OwnUser) -> None:
    _broken_file(user.workdir / "penguins.csv.gz")
    user.run("predict", "--input", "penguins.csv.gz", "--output", "scored")
    before = (user.workdir / "scored" / "_manifest.json").read_bytes()

    again = user.run("predict", "--input", "penguins.csv.gz", "--output", "scored", check=False)

    assert again.returncode != 0
    assert "already holds a batch prediction" in again.stderr
    assert (user.workdir / "scored" / "_manifest.json").read_bytes() == before


def test_an_output_a_run_left_unfinished_is_refused(user: OwnUser) -> None:
    """A task record left by a run that did not finish would be mixed into the next
    run's manifest: the folder is refused, and left as it was."""
    _broken_file(user.workdir / "penguins.csv.gz")
    left = user.workdir / "scored" / "_tasks" / "task-00000.json"
    left.parent.mkdir(parents=True)
    left.write_text("{}")

    result = user.run("predict", "--input", "penguins.csv.gz", "--output", "scored", check=False)

    assert result.returncode != 0
    assert "already holds 1 object(s)" in result.stderr
    assert "_tasks/task-00000.json" in result.stderr
    scored = user.workdir / "scored"
    kept = [p.relative_to(scored) for p in scored.rglob("*") if p.is_file()]
    # The store's own lock aside (its hidden folder), nothing was written.
    assert [str(p) for p in kept if not str(p).startswith(".")] == ["_tasks/task-00000.json"]


def test_a_file_without_a_feature_is_refused_with_its_name(user: OwnUser) -> None:
    (user.workdir / "few.csv").write_text("island,sex\nDream,male\n")

    result = user.run("predict", "--input", "few.csv", "--output", "scored", check=False)

    assert result.returncode != 0
    assert "lacks the feature column(s) bill_length_mm" in result.stderr
    assert not (user.workdir / "scored" / "_manifest.json").exists()
