"""The monitor's tally of a prediction log against a version's training profile: the
same bins and PSI as validate's drift, unseen categories a bin of their own, values
beyond the range counted, lines that are not this version's skipped and counted, and
nothing judged on too few instances."""

from __future__ import annotations

import math
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from modelrail.adapters.local.inprocess import InProcessLauncher
from modelrail.domain import monitoring, predictions
from modelrail.domain.dataset import profile
from modelrail.domain.features import Feature, FeatureSchema
from modelrail.service import policy_state
from modelrail.service.container import Container
from modelrail.service.monitoring import monitor, monitor_every
from tests.conftest import REPO, installed, penguin_rows
from tests.unit.conftest import Harness

SCHEMA = FeatureSchema(
    objective="regression",
    features=(
        Feature("x", "number", True, min=0.0, max=10.0),
        Feature("colour", "category", True, categories=("red", "blue")),
        Feature("flag", "boolean", False),
    ),
    target="y",
    classes=(),
)
LIMITS = (0.1, 0.25)


def _training(rows: int, seed: int) -> dict[str, Any]:
    """A training profile as validate writes it, and the rows it was made from."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, rows)
    colour = rng.choice(["red", "blue"], rows)
    flag = rng.integers(0, 2, rows).astype(bool)
    y = 2 * x + rng.normal(0, 1, rows)
    # As the snapshot holds them: a category dictionary-encoded, a boolean as 0/1.
    colours = pa.array(colour).dictionary_encode()
    flags = pa.array(flag.astype(np.float64))
    columns = {
        "x": profile._numeric(x),
        "colour": profile.categorical(rows, profile.value_counts(colours)),
        "flag": profile.categorical(rows, profile.value_counts(flags)),
        "y": profile._numeric(y),
    }
    return {"rows": rows, "columns": columns}


def _line(rows: list[list[float | None]], predictions: list[float], **more: Any) -> dict[str, Any]:
    return {
        "time": "2026-12-06T10:00:00.000000Z",
        "request_id": "r",
        "status": 200,
        "instances": rows,
        "predictions": predictions,
        **more,
    }


def _requests(seed: int, count: int, shift: float = 0.0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        x = rng.uniform(0, 10, 10) + shift
        rows = [[float(v), float(rng.integers(0, 2)), float(rng.integers(0, 2))] for v in x]
        lines.append(_line(rows, [float(2 * v) for v in x]))
    return lines


def _report(tally: monitoring.Tally) -> dict[str, Any]:
    return monitoring.report(
        tally, {}, LIMITS, model="m", version=1, window={"from": "a", "to": "b"}
    )


def test_requests_like_the_training_data_do_not_drift_and_a_shift_does() -> None:
    baseline = _training(5_000, seed=1)
    same, shifted = monitoring.Tally(SCHEMA, baseline), monitoring.Tally(SCHEMA, baseline)
    for line in _requests(2, 100):
        same.add(line)
    for line in _requests(3, 100, shift=4.0):
        shifted.add(line)

    calm, moved = _report(same), _report(shifted)

    assert calm["drifted"] == []
    assert moved["drifted"] == ["x"]
    x = {row["feature"]: row for row in moved["features"]}["x"]
    # The PSI is validate's, of the values in the training profile's bins.
    values = np.array(
        [row[0] for line in _requests(3, 100, shift=4.0) for row in line["instances"]]
    )
    expected = profile.psi(
        baseline["columns"]["x"], profile.rebin(values, baseline["columns"]["x"])
    )
    assert math.isclose(x["psi"], round(expected, 4))
    assert x["out_of_range"] == round(float(np.mean(values > 10.0)), 4)
    assert moved["predictions"]["status"] == "fail"  # the answers moved with x
    assert calm["predictions"]["status"] == "ok"


def test_unseen_categories_are_a_bin_of_their_own_and_counted() -> None:
    baseline = _training(5_000, seed=1)
    tally = monitoring.Tally(SCHEMA, baseline)
    for line in _requests(2, 60):
        # Half of each request's colours were categories the version does not know.
        for row in line["instances"][:5]:
            row[1] = None
        tally.add({**line, "unseen": {"colour": 5}})

    colour = {row["feature"]: row for row in _report(tally)["features"]}["colour"]

    assert colour["unseen"] == 0.5
    assert colour["missing"] == 0.0  # a null the client sent is missing; these were not
    assert colour["status"] == "fail"


def test_lines_that_are_not_this_versions_are_skipped_and_few_instances_not_judged() -> None:
    tally = monitoring.Tally(SCHEMA, _training(1_000, seed=1))
    tally.add(_line([[1.0, 0.0]], [2.0]))  # two features: another schema's line
    tally.add({"status": 200})  # no instances
    tally.add(
        {
            "time": "2026-12-06T10:00:01.000000Z",
            "status": 422,
            "problem": "invalid-instances",
            "errors": 2,
        }
    )
    for line in _requests(2, 10, shift=4.0):  # 100 instances, shifted
        tally.add(line)

    report = _report(tally)

    assert report["skipped_lines"] == 2
    assert report["refused"] == {"invalid-instances": 1}
    assert (report["requests"], report["instances"]) == (11, 100)
    assert not report["judged"]
    assert {row["status"] for row in report["features"]} == {"too few"}
    assert report["drifted"] == []


def test_a_window_with_nothing_logged_has_no_psi_to_show() -> None:
    report = _report(monitoring.Tally(SCHEMA, _training(1_000, seed=1)))

    assert (report["requests"], report["instances"], report["drifted"]) == (0, 0, [])
    assert {(row["psi"], row["status"]) for row in report["features"]} == {(None, "no data")}
    assert report["predictions"] is None


# -- the monitor's actions: drift-detected, and the retrain policy -------------------


def _drifting_definition(tmp_path: Path) -> Path:
    """The bundled penguins definition with [retrain] on_drift."""
    contract = Path("schemas") / "datasets" / "penguins.json"
    (tmp_path / contract).parent.mkdir(parents=True)
    shutil.copy(REPO / contract, tmp_path / contract)
    pipeline = (REPO / "pipeline.toml").read_text()
    (tmp_path / "pipeline.toml").write_text(
        pipeline + "\n[retrain]\non_drift = true\ncooldown_hours = 6\n"
    )
    return tmp_path / "pipeline.toml"


def log_shifted_requests(container: Container, version: int, at: datetime) -> None:
    """600 logged instances of the penguins, the flipper length 40 mm longer."""
    schema = FeatureSchema.from_dict(container.registry.load("penguins", version).manifest.features)
    records = [dict(row) for row in random.Random(1).choices(penguin_rows(), k=600)]
    for record in records:
        if record["flipper_length_mm"] is not None:
            record["flipper_length_mm"] += 40
    matrix = schema.encode_records(records)
    lines = b"".join(
        orjson.dumps(
            predictions.record((at.timestamp(), f"r{i}", 200, matrix[i : i + 100], [], {})),
            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
        )
        for i in range(0, 600, 100)
    )
    day = predictions.day_prefix("penguins", version, at.date())
    container.artifacts.write(f"{day}{at:%H%M%S}-test-000001.jsonl", lines)


def test_a_drift_is_published_and_retrains_on_new_data_once_per_cool_down(
    harness: Harness, penguins_csv: bytes, tmp_path: Path
) -> None:
    container = installed(harness.container, _drifting_definition(tmp_path))
    harness.upload(penguins_csv)
    harness.run()
    at = datetime.now(UTC)
    log_shifted_requests(container, 1, at)
    window = {"since": at - timedelta(minutes=1), "until": at + timedelta(minutes=1)}

    first = monitor(container, **window)

    assert first["drifted"] == ["flipper_length_mm"]
    [detected] = harness.published("drift-detected")
    assert detected["event_id"] == first["actions"]["drift_detected"]
    assert [f["feature"] for f in detected["features"]] == ["flipper_length_mm"]
    # Only the data v1 trained on: retraining would train v1 again.
    assert not first["actions"]["retrain"]["started"]
    assert "the data v1 trained on" in first["actions"]["retrain"]["why"]
    assert harness.published("retrain-requested") == []

    # Newer data lands (its own run has not happened: say its notification is late).
    data = harness.storage.bucket(container.settings.data_bucket)
    data.write("uploads/penguins/newer.csv", penguins_csv)
    second = monitor(container, **window)

    retrain = second["actions"]["retrain"]
    assert retrain["started"], retrain
    harness.run()
    [run] = [r for r in harness.runs() if r.trigger.get("kind") == "drift"]
    assert run.trigger["key"] == f"request:{retrain['request_id']}"
    assert "flipper_length_mm (PSI" in run.trigger["reason"]
    assert run.lineage is not None
    assert run.lineage.data is not None
    assert run.lineage.data["key"] == "uploads/penguins/newer.csv"

    # Within the cool-down, another window's drift starts nothing (v1's: the retrain
    # deployed v2, which staging now serves).
    later = window["until"] + timedelta(hours=1)
    third = monitor(container, since=window["since"], until=later, version=1)
    assert not third["actions"]["retrain"]["started"]
    assert "6 h cool-down" in third["actions"]["retrain"]["why"]
    assert len(harness.published("retrain-requested")) == 1


def test_objects_written_before_the_window_are_not_read(
    harness: Harness, penguins_csv: bytes
) -> None:
    """A batch holds lines recorded before its write: one written before the window
    began holds none of it, and is not read (its garbage here is not even counted)."""
    container = harness.container
    harness.upload(penguins_csv)
    harness.run()
    at = datetime.now(UTC).replace(hour=12, minute=0, second=30)
    day = predictions.day_prefix("penguins", 1, at.date())
    container.artifacts.write(f"{day}120029-test-000001.jsonl", b"not json\n")
    container.artifacts.write(f"{day}120030-test-000002.jsonl", b"not json either\n")
    container.artifacts.write(f"{day}written-by-hand.jsonl", b"nor this\n")

    report = monitor(container, since=at, until=at + timedelta(minutes=1), version=1)

    assert report["skipped_lines"] == 2  # the object of the window's first second, the other


def test_every_model_is_monitored_and_one_with_no_log_or_no_version_is_no_failure(
    harness: Harness, penguins_csv: bytes, tmp_path: Path
) -> None:
    """The scheduled monitor's pass over an installation: the served model without a
    log in the window has a report of no data; a model nothing serves yet is named."""
    installed(harness.container)
    harness.upload(penguins_csv)
    harness.run()
    idle = tmp_path / "idle"
    idle.mkdir()
    text = (REPO / "pipeline.toml").read_text().replace('name = "penguins"', 'name = "idle"', 1)
    (idle / "pipeline.toml").write_text(text.replace('contract = "', f'contract = "{REPO}/', 1))
    installed(harness.container, idle / "pipeline.toml")
    at = datetime.now(UTC)

    served, waiting = monitor_every(
        harness.container, ["penguins", "idle"], since=at - timedelta(hours=1), until=at
    )

    assert (served["model"], served["version"], served["requests"]) == ("penguins", 1, 0)
    assert {row["status"] for row in served["features"]} == {"no data"}
    assert served["actions"] == {}
    assert waiting == {
        "model": "idle",
        "monitored": False,
        "why": "model 'idle' has no version in staging: nothing serves it yet",
    }
    assert harness.published("drift-detected") == []


def test_a_drift_retrains_only_on_an_upload_with_enough_new_rows(
    harness: Harness, penguins_csv: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = _drifting_definition(tmp_path)
    definition.write_text(definition.read_text() + "min_new_rows = 100\n")
    container = installed(harness.container, definition)
    harness.upload(penguins_csv)
    harness.run()
    # A newer upload of the same rows is validated, its training dies: v1 still serves.
    monkeypatch.setattr(InProcessLauncher, "launch", lambda self, job, event: f"{job}-dead")
    harness.upload(penguins_csv, name="uploads/penguins/newer.csv")
    harness.run()
    at = datetime.now(UTC)
    log_shifted_requests(container, 1, at)

    report = monitor(container, since=at - timedelta(minutes=1), until=at + timedelta(minutes=1))

    assert report["drifted"] == ["flipper_length_mm"]
    retrain = report["actions"]["retrain"]
    assert not retrain["started"]
    assert retrain["why"].startswith("[retrain] min_new_rows = 100: the newest upload, gs://")
    assert retrain["why"].endswith("newer.csv#2, holds 344 rows, 0 more than the 344 v1 trained on")
    assert harness.published("retrain-requested") == []
    # Nothing started, so no cool-down began: the next drift on enough new rows may start one.
    assert policy_state.read(container.artifacts, "penguins", "retrain-on-drift").value is None


def _shifted(penguins_csv: bytes, by: float) -> bytes:
    """The penguins with every flipper ``by`` mm longer."""
    lines = penguins_csv.decode().splitlines()
    column = lines[0].split(",").index("flipper_length_mm")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[column] not in ("", "NA"):
            cells[column] = f"{float(cells[column]) + by:g}"
        out.append(",".join(cells))
    return ("\n".join(out) + "\n").encode()


def _v1_and_a_shifted_upload(
    harness: Harness, penguins_csv: bytes, tmp_path: Path
) -> tuple[Container, str]:
    """v1 trained under [retrain] on_drift, and an upload as shifted as the live
    requests (not run yet): the container and the upload's URI."""
    container = installed(harness.container, _drifting_definition(tmp_path))
    harness.upload(penguins_csv)
    harness.run()
    data = harness.storage.bucket(container.settings.data_bucket)
    generation = data.write("uploads/penguins/shifted.csv", _shifted(penguins_csv, 15))
    return container, f"gs://{data.bucket}/uploads/penguins/shifted.csv#{generation}"


def test_the_retrain_on_drift_takes_the_drift_live_traffic_showed_as_confirmed(
    harness: Harness, penguins_csv: bytes, tmp_path: Path
) -> None:
    """An upload as shifted as the requests is refused for drift when a person asks
    for the retrain; the drift policy's retrain, naming the monitor's report of that
    very shift, validates it (the drift reported, with the report) and deploys."""
    container, uri = _v1_and_a_shifted_upload(harness, penguins_csv, tmp_path)

    harness.retrain("by-hand", data_uri=uri)
    harness.run()
    [by_hand] = [r for r in harness.runs() if r.trigger.get("kind") == "retrain"]
    assert by_hand.outcome == "failed"
    assert "drifted from v1's training data" in str(by_hand.failure)

    at = datetime.now(UTC)
    log_shifted_requests(container, 1, at)
    report = monitor(container, since=at - timedelta(minutes=1), until=at + timedelta(minutes=1))
    assert report["actions"]["retrain"]["started"], report["actions"]
    harness.run()

    [run] = [r for r in harness.runs() if r.trigger.get("kind") == "drift"]
    assert run.outcome == "deployed", run.failure
    validation = container.runs.report(run.run_id, "validation")
    [request] = [r for r in harness.published("retrain-requested") if r.get("policy")]
    seen = {"monitoring_report": request["monitoring_report"], "drifted": ["flipper_length_mm"]}
    assert validation["drift"]["seen_live"] == seen
    failing = [c["column"] for c in validation["drift"]["columns"] if c["status"] == "fail"]
    assert failing == ["flipper_length_mm"]
    # v1's reference set, unshifted, is reported, not gated on: v2 scores worse there
    # (a person's retrain of this data would have been rejected for it), yet deploys.
    evaluation = container.runs.report(run.run_id, "evaluation")
    reference = evaluation["reference"]
    assert not reference["verdict"]["blessed"]
    assert evaluation["verdict"]["blessed"]
    assert not any("reference set" in r for r in evaluation["verdict"]["reasons"])
    assert any("not judged on v1's reference set" in n for n in evaluation["verdict"]["notes"])


def test_a_drift_retrain_whose_report_found_another_drift_is_refused(
    harness: Harness, penguins_csv: bytes, tmp_path: Path
) -> None:
    """The report is read, not believed from the event: one naming no report, a missing
    one, one that found a different feature drifted, or one the monitor's own retrain
    did not name, does not excuse the upload's drift."""
    container, uri = _v1_and_a_shifted_upload(harness, penguins_csv, tmp_path)
    elsewhere = "monitoring/penguins/v1/20261206T000000000000Z-20261205T230000000000Z.json"
    container.artifacts.write(
        elsewhere, orjson.dumps({"model": "penguins", "drifted": ["bill_length_mm"]})
    )

    harness.retrain("unnamed", data_uri=uri, policy="drift")
    harness.retrain("other-feature", data_uri=uri, policy="drift", monitoring_report=elsewhere)
    harness.retrain(
        "no-such-report",
        data_uri=uri,
        policy="drift",
        monitoring_report=elsewhere.replace("2026", "2025"),
    )
    # A report that did find this drift, named by a request the monitor never started.
    flipper = elsewhere.replace("T000000", "T010000")
    container.artifacts.write(
        flipper, orjson.dumps({"model": "penguins", "drifted": ["flipper_length_mm"]})
    )
    harness.retrain("replayed", data_uri=uri, policy="drift", monitoring_report=flipper)
    harness.run()

    runs = [r for r in harness.runs() if r.trigger.get("kind") == "drift"]
    assert len(runs) == 4
    for run in runs:
        assert run.outcome == "failed", run.trigger
        assert "drifted from v1's training data" in str(run.failure)
