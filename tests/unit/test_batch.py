"""Batch prediction's pure parts: rows checked by validate's rules (the typed path and
the reporting path agree, in CSV and in Parquet), refused rows named with every
problem, the identifiers carried, the answers the service's, and tallies of parallel
tasks that add up to the tally of the whole."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelrail.domain import batch, monitoring
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.domain.features import FeatureSchema
from modelrail.kernel.errors import Refused
from modelrail.kernel.events import BatchRequested
from tests.conftest import REPO
from tests.unit.conftest import Harness
from tests.unit.test_monitoring import _training

CONTRACT = DatasetContract.load(REPO / "schemas" / "datasets" / "penguins.json")
SCHEMA = FeatureSchema.from_contract(CONTRACT, "multiclass")
SCORING = batch.Scoring.of(SCHEMA, CONTRACT)
HEADER = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
          "sex", "year"]  # fmt: skip
GOOD = [
    ["Dream", "46.5", "17.9", "192", "3500", "female", "2008"],
    ["Biscoe", "NA", "NA", "NA", "NA", "NA", "2009"],
]
BAD = [
    ["Mars", "46.5", "17.9", "192", "3500", "female", "2008"],  # an unknown island
    ["Dream", "999", "17.9", "abc", "3500", "female", "2008"],  # out of range, not a number
]


def _csv(rows: list[list[str]]) -> tuple[bytes, tuple[str, ...]]:
    text = "\n".join(",".join(row) for row in [HEADER, *rows]) + "\n"
    return text.encode(), tuple(HEADER)


def _checked_csv(rows: list[list[str]], offset: int = 0) -> batch.Checked:
    data, header = _csv(rows)
    scoring = SCORING.for_header(list(header), "test.csv")
    return batch.check((data, header), header, scoring, offset)


def test_the_scoring_contract_is_the_versions_features_and_the_ignored_columns() -> None:
    assert SCORING.ids == ("year",)
    assert [c.name for c in SCORING.contract.columns] == [*SCHEMA.names, "year"]
    assert "species" not in [c.name for c in SCORING.contract.columns]


def test_a_file_lacking_a_feature_is_refused_naming_it() -> None:
    with pytest.raises(Refused, match="lacks the feature column"):
        SCORING.for_header(["island", "year"], "few.csv")


def test_an_identifier_the_file_lacks_is_not_required() -> None:
    scoring = SCORING.for_header(HEADER[:-1], "no-ids.csv")
    assert scoring.ids == ()


def test_good_rows_take_the_typed_path_and_are_encoded_as_training_encodes() -> None:
    checked = _checked_csv(GOOD, offset=10)

    assert checked.rows.tolist() == [11, 12]
    assert checked.refused.num_rows == 0
    assert checked.matrix[0].tolist() == [1.0, 46.5, 17.9, 192.0, 3500.0, 0.0]
    assert np.isnan(checked.matrix[1][1:]).all()
    assert checked.ids.column("year").to_pylist() == [2008, 2009]  # integers, as written


def test_bad_rows_are_refused_with_every_problem_and_good_ones_still_scored() -> None:
    checked = _checked_csv([GOOD[0], BAD[0], GOOD[1], BAD[1]])

    assert checked.rows.tolist() == [1, 3]
    assert checked.matrix.tolist()[0] == _checked_csv(GOOD).matrix.tolist()[0]
    refused = checked.refused.to_pylist()
    assert [r["row"] for r in refused] == [2, 4]
    assert [r["year"] for r in refused] == ["2008", "2008"]
    assert [(p["column"], p["check"], p["value"]) for p in refused[0]["problems"]] == [
        ("island", "category", "Mars")
    ]
    assert {(p["column"], p["check"], p["value"]) for p in refused[1]["problems"]} == {
        ("bill_length_mm", "range", "999"),
        ("flipper_length_mm", "type", "abc"),
    }


def _parquet_batch(rows: list[list[str]]) -> pa.RecordBatch:
    columns: dict[str, list[object]] = {name: [] for name in HEADER}
    for row in rows:
        for name, cell in zip(HEADER, row, strict=True):
            if cell == "NA":
                columns[name].append(None)
            elif name in ("island", "sex"):
                columns[name].append(cell)
            else:
                try:
                    columns[name].append(float(cell))
                except ValueError:
                    columns[name].append(float("nan"))
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    sink.seek(0)
    [read] = list(batch.read(sink, "parquet", 2**20, "test.parquet"))
    return read


def test_parquet_rows_are_judged_as_their_csv_is() -> None:
    rows = [GOOD[0], BAD[0], GOOD[1]]
    parquet = batch.check(_parquet_batch(rows), HEADER, SCORING.for_header(HEADER, "t"), 0)
    csv = _checked_csv(rows)

    assert parquet.rows.tolist() == csv.rows.tolist() == [1, 3]
    np.testing.assert_array_equal(parquet.matrix, csv.matrix)
    assert [r["row"] for r in parquet.refused.to_pylist()] == [2]


def test_csv_batches_carry_their_header_and_the_file_is_read_in_batches() -> None:
    data, _ = _csv(GOOD * 500)
    batches = list(batch.read(io.BytesIO(data), "csv", 4096, "big.csv"))

    assert len(batches) > 1
    assert batches[0][1] == tuple(HEADER)
    assert all(text.startswith(b"island,") for text, _ in batches)


def test_answers_are_the_services_labels_and_probabilities() -> None:
    raw = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])

    columns = batch.answers(raw, SCHEMA)

    assert columns["prediction"].to_pylist() == ["Adelie", "Gentoo"]
    assert columns["probability_Chinstrap"].to_pylist() == [0.2, 0.3]


def test_a_binary_classifier_answers_the_positive_class_from_one_half() -> None:
    schema = FeatureSchema(objective="binary", features=SCHEMA.features, target="y",
                           classes=("no", "yes"))  # fmt: skip

    columns = batch.answers(np.array([0.5, 0.49]), schema)

    assert columns["prediction"].to_pylist() == ["yes", "no"]
    assert columns["probability"].to_pylist() == [0.5, 0.49]
    assert columns["probability_no"].to_pylist() == [0.5, 0.51]


def test_the_tallies_of_parallel_tasks_add_up_to_the_tally_of_the_whole() -> None:
    schema = FeatureSchema.from_dict(
        {**SCHEMA.to_dict(), "objective": "regression", "target": "y", "classes": ()}
    )
    baseline = _training(2000, seed=1)
    baseline["columns"] = {  # the monitoring test's profile, under these features' names
        "bill_length_mm": baseline["columns"]["x"],
        "y": baseline["columns"]["y"],
    }
    rng = np.random.default_rng(2)
    matrix = rng.uniform(0, 60, (1000, len(schema.features)))
    predicted = rng.normal(10, 3, 1000)
    whole = monitoring.Tally(schema, baseline)
    whole.add_scored(matrix, predicted)
    first, second = monitoring.Tally(schema, baseline), monitoring.Tally(schema, baseline)
    first.add_scored(matrix[:300], predicted[:300])
    second.add_scored(matrix[300:], predicted[300:])

    first.absorb(second.state())

    assert first.state() == whole.state()
    report = monitoring.report(first, {}, (0.1, 0.25), model="m", version=1, window={})
    assert report["instances"] == 1000


# -- the request as an event: the listener starts the job ---------------------------------


def test_a_batch_request_on_the_bus_is_scored_by_the_job_it_starts(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    artifacts = harness.container.artifacts
    artifacts.write("batch/in/penguins.csv", penguins_csv)
    request = BatchRequested(
        input=f"gs://{artifacts.bucket}/batch/in/", output=f"gs://{artifacts.bucket}/batch/out/"
    )

    harness.bus.publish(request.event_type, orjson.dumps(request.to_body()), {})
    harness.run()

    manifest = orjson.loads(artifacts.read("batch/out/_manifest.json").data)
    assert (manifest["version"], manifest["refused"]) == (1, 0)
    assert manifest["scored"] == manifest["rows"] == penguins_csv.count(b"\n") - 1
    assert [p["input"] for p in manifest["parts"]] == [
        f"gs://{artifacts.bucket}/batch/in/penguins.csv"
    ]


def test_a_message_that_is_not_a_batch_request_is_dead_lettered_not_run(
    harness: Harness,
) -> None:
    harness.bus.publish("batch-requested", b'{"input": "nowhere"}', {})
    harness.run()

    assert not harness.container.artifacts.list("batch/")
    assert harness.published("dead-letter")
