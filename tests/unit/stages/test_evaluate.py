"""evaluate: the gate blesses a candidate (``model-evaluated``) or rejects it
(``GateRejected``), on the hold-out and, once there is a champion, against it."""

from __future__ import annotations

import dataclasses
import io

import pyarrow.parquet as pq
import pytest

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import snapshot
from modelrail.domain.registry import MODEL_FILE, REFERENCE_FILE
from modelrail.kernel.errors import GateRejected, IntegrityError
from modelrail.kernel.events import ModelEvaluated
from modelrail.service.stages import evaluate
from tests.unit.stages.conftest import (
    Ports,
    delivered,
    registered,
    shuffled_labels,
    trained,
)


def test_the_first_model_is_judged_on_values_alone_and_blessed(
    ports: Ports, penguins_csv: bytes
) -> None:
    candidate = trained(ports, penguins_csv)

    outcome = ports.call(evaluate.handle, candidate)

    assert isinstance(outcome.event, ModelEvaluated)
    event = delivered(outcome.event)
    assert (event.run_id, event.causation_id) == (candidate.run_id, candidate.event_id)
    assert event.model_sha256 == candidate.model_sha256
    assert event.candidate_uri == candidate.candidate_uri
    assert event.champion is None
    assert event.lineage["champion"] is None
    assert event.verdict["blessed"] is True
    assert event.verdict["reasons"] == []
    # Every value threshold of the bundled gate was checked, none against a champion.
    kinds = {(c["metric"], c["kind"]) for c in event.verdict["checks"]}
    assert kinds == {("accuracy", "min"), ("macro_f1", "min"), ("multi_logloss", "max")}
    assert event.metrics["accuracy"] >= 0.9
    assert outcome.output == {"metrics": event.metrics, "blessed": True}
    report = ports.runs.report(event.run_id, "evaluation")
    assert report["metrics"] == event.metrics
    assert report["holdout_rows"] > 0
    # The rows it was judged on, kept for register to make the version's reference set.
    reference = ports.runs.snapshot_key(event.run_id, REFERENCE_FILE)
    assert ports.artifacts.list(reference)


def test_a_candidate_below_a_min_threshold_is_rejected_with_the_verdict(
    ports: Ports, penguins_csv: bytes
) -> None:
    # Shuffled species: a valid file no model can learn, far below accuracy min 0.9.
    candidate = trained(ports, shuffled_labels(penguins_csv))

    with pytest.raises(GateRejected, match="accuracy") as raised:
        ports.call(evaluate.handle, candidate)

    verdict = raised.value.details["verdict"]
    assert verdict["blessed"] is False
    failed = [(c["metric"], c["kind"]) for c in verdict["checks"] if not c["passed"]]
    assert ("accuracy", "min") in failed
    (accuracy,) = [c for c in verdict["checks"] if (c["metric"], c["kind"]) == ("accuracy", "min")]
    assert accuracy["value"] < accuracy["threshold"] == 0.9
    assert any(reason.startswith("accuracy=") for reason in verdict["reasons"])
    assert ports.runs.report(candidate.run_id, "evaluation")["verdict"] == verdict
    assert raised.value.details["report_uri"].endswith("evaluation.json")


def test_a_later_candidate_is_compared_with_the_champion_on_both_hold_outs(
    ports: Ports, penguins_csv: bytes
) -> None:
    champion = registered(ports, penguins_csv)  # v1, the champion
    # The same rows uploaded again: a new generation, so a new run.
    candidate = trained(ports, penguins_csv)
    assert candidate.run_id != champion.run_id

    outcome = ports.call(evaluate.handle, candidate)

    assert isinstance(outcome.event, ModelEvaluated)
    event = delivered(outcome.event)
    assert event.champion is not None
    assert (event.champion["version"], event.champion["comparable"]) == (1, True)
    assert event.lineage["champion"] == {"version": 1}
    # The same data, the same seed: the same model, as good as the champion everywhere.
    assert event.champion["metrics"] == event.metrics
    assert event.champion["reference"]["rows"] > 0
    kinds = {c["kind"] for c in event.verdict["checks"]}
    assert {"max_change_abs", "max_change_rel"} <= kinds
    assert event.verdict["blessed"] is True


def test_a_candidate_rewritten_since_training_is_refused(ports: Ports, penguins_csv: bytes) -> None:
    candidate = trained(ports, penguins_csv)
    ports.artifacts.corrupt(ports.runs.candidate_key(candidate.run_id, MODEL_FILE), b"tree")

    with pytest.raises(IntegrityError, match="sha256"):
        ports.call(evaluate.handle, candidate)

    assert "evaluation" not in ports.runs.reports(candidate.run_id)


def test_a_hold_out_read_in_many_parts_is_judged_as_one(
    ports: Ports, penguins_csv: bytes, tiny_config: PipelineConfig
) -> None:
    # The same file, validated in batches of 2 KB: a snapshot of many parts, each
    # scored and kept as it is read.
    limits = dataclasses.replace(tiny_config.limits, batch_bytes=2 * 1024)
    small = dataclasses.replace(ports, config=dataclasses.replace(tiny_config, limits=limits))
    one, many = trained(ports, penguins_csv), trained(small, penguins_csv)
    assert len(snapshot.parts(small.runs.store, many.dataset["snapshot"])) > 3

    outcomes = [ports.call(evaluate.handle, one), small.call(evaluate.handle, many)]

    assert all(outcome.output["blessed"] for outcome in outcomes)
    first, second = (ports.runs.report(e.run_id, "evaluation") for e in (one, many))
    assert first["holdout_rows"] == second["holdout_rows"] > 0
    assert first["metrics"] == second["metrics"]
    assert first["diagnostics"] == second["diagnostics"]
    kept = [
        pq.read_table(
            io.BytesIO(ports.artifacts.read(ports.runs.snapshot_key(e.run_id, REFERENCE_FILE)).data)
        )
        for e in (one, many)
    ]
    assert kept[0].equals(kept[1])
