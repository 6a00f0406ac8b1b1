"""validate: an upload in, a checked snapshot and ``dataset-validated`` out, or the
permanent error that says why not."""

from __future__ import annotations

import pytest

from modelrail.domain.dataset import snapshot
from modelrail.domain.registry import PROFILE_FILE
from modelrail.kernel.errors import ContractViolation, DataUnavailable, InvalidEvent
from modelrail.kernel.events import DatasetValidated, DataUploaded
from modelrail.service.stages import validate
from tests.unit.stages.conftest import DATA_BUCKET, Ports, delivered, run_of, upload

PENGUIN_ROWS = 344  # data rows of data/penguins.csv, each with its species


def with_cell(csv: bytes, rows: tuple[int, ...], column: str, value: str) -> bytes:
    """``csv`` with ``column`` set to ``value`` in the 1-based data ``rows``."""
    header, *lines = csv.decode().splitlines()
    index = header.split(",").index(column)
    for row in rows:
        cells = lines[row - 1].split(",")
        cells[index] = value
        lines[row - 1] = ",".join(cells)
    return ("\n".join([header, *lines]) + "\n").encode()


def validate_upload(ports: Ports, trigger: DataUploaded) -> DatasetValidated:
    outcome = ports.call(
        validate.handle, trigger, run_id=run_of(ports, trigger), causation_id="message-1"
    )
    assert outcome.status == "succeeded"
    assert isinstance(outcome.event, DatasetValidated)
    assert outcome.output["rows"] == PENGUIN_ROWS
    assert outcome.output["report_uri"] == outcome.event.report_uri
    return outcome.event


def test_a_good_upload_is_validated_and_kept_as_a_snapshot(
    ports: Ports, penguins_csv: bytes
) -> None:
    trigger = upload(ports, penguins_csv)
    run_id = run_of(ports, trigger)

    event = delivered(validate_upload(ports, trigger))

    assert (event.run_id, event.causation_id) == (run_id, "message-1")
    dataset = event.dataset
    assert dataset["rows"] == PENGUIN_ROWS
    assert dataset["uri"] == f"gs://{DATA_BUCKET}/{trigger.name}#{trigger.generation}"
    assert dataset["duplicate_rows"] == 0
    assert event.lineage["trigger"] == trigger.lineage()
    assert event.lineage["code"] == {"version": "test"}
    assert event.lineage["config"]["hash"] == ports.config.sha256
    # The snapshot the event names holds the rows validated, readable as train reads it.
    assert dataset["snapshot"]["rows"] == PENGUIN_ROWS
    named = dataset["snapshot"]
    parts = snapshot.parts(ports.artifacts, named)
    kept = snapshot.read(ports.artifacts, parts, named["uri"], ports.config.contract)
    assert kept.rows == PENGUIN_ROWS
    assert list(kept.columns["species"][:3]) == ["Adelie"] * 3
    # Beside it, the profile later drift checks compare with, and the report for people.
    assert ports.artifacts.list(ports.runs.snapshot_key(run_id, PROFILE_FILE))
    report = ports.runs.report(run_id, "validation")
    assert (report["passed"], report["rows"]) == (True, PENGUIN_ROWS)


def test_a_contract_violation_names_the_check_column_and_rows_and_keeps_the_report(
    ports: Ports, penguins_csv: bytes
) -> None:
    broken = with_cell(penguins_csv, (3, 7), "bill_length_mm", "999")
    trigger = upload(ports, broken)
    run_id = run_of(ports, trigger)

    with pytest.raises(ContractViolation) as raised:
        ports.call(validate.handle, trigger, run_id=run_id, causation_id="message-1")

    problems = raised.value.details["problems"]
    assert [(p["check"], p["column"], p["rows"]) for p in problems] == [
        ("range", "bill_length_mm", [3, 7])
    ]
    assert problems[0]["count"] == 2
    assert "bill_length_mm" in raised.value.message
    report = ports.runs.report(run_id, "validation")
    assert raised.value.details["report_uri"].endswith("validation.json")
    assert report["passed"] is False
    assert report["problems"] == problems
    # Nothing of a refused file is kept for the stages after.
    assert ports.artifacts.list(ports.runs.snapshot_key(run_id, "")) == []


def test_an_object_that_is_not_there_is_unavailable(ports: Ports) -> None:
    trigger = DataUploaded(bucket=DATA_BUCKET, name="uploads/penguins/gone.csv", generation=4)

    with pytest.raises(DataUnavailable, match=r"uploads/penguins/gone\.csv"):
        ports.call(validate.handle, trigger, run_id=run_of(ports, trigger), causation_id="m")

    assert ports.artifacts.list() == []


def test_a_generation_replaced_since_the_notification_is_unavailable(
    ports: Ports, penguins_csv: bytes
) -> None:
    first = upload(ports, penguins_csv)
    upload(ports, penguins_csv)  # a newer generation of the same object

    with pytest.raises(DataUnavailable):
        ports.call(validate.handle, first, run_id=run_of(ports, first), causation_id="m")


def test_an_upload_that_is_not_a_csv_is_an_invalid_event(ports: Ports, penguins_csv: bytes) -> None:
    trigger = upload(ports, penguins_csv, name="uploads/penguins/penguins.xlsx")

    with pytest.raises(InvalidEvent, match=r"uploads/penguins/penguins\.xlsx"):
        ports.call(validate.handle, trigger, run_id=run_of(ports, trigger), causation_id="m")

    assert ports.artifacts.list() == []  # refused before anything was read or written
