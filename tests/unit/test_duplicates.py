"""Repeating data cannot manufacture a champion: exact duplicate rows are counted,
reported, and count once for training and for every metric of the gate."""

from __future__ import annotations

import pytest

from tests.unit.conftest import Harness


def _repeated(csv: bytes, times: int) -> bytes:
    header, *rows = csv.decode().splitlines()
    return "\n".join([header, *(rows * times)]).encode() + b"\n"


@pytest.mark.fault
def test_tripled_rows_train_the_same_model_and_the_clean_file_is_not_rejected_after(
    harness: Harness, penguins_csv: bytes
) -> None:
    rows = len(penguins_csv.decode().splitlines()) - 1

    harness.upload(_repeated(penguins_csv, 3), "uploads/penguins/tripled.csv")
    harness.run()
    harness.upload(penguins_csv, "uploads/penguins/clean.csv")
    harness.run()
    harness.upload(_repeated(penguins_csv, 2), "uploads/penguins/doubled.csv")
    harness.run()

    tripled, clean, doubled = harness.runs()
    assert [tripled.outcome, clean.outcome, doubled.outcome] == ["deployed"] * 3
    validated = tripled.stages["validate"].event["dataset"]
    assert validated["duplicate_rows"] == 2 * rows
    report = harness.container.runs.report(tripled.run_id, "validation")
    assert report["dataset"]["duplicate_rows"] == 2 * rows
    assert clean.stages["validate"].event["dataset"]["duplicate_rows"] == 0
    # The same distinct rows: the same model, the same metrics as the champion's.
    registry, model = harness.container.registry, harness.model
    manifests = [registry.manifest(model, v) for v in registry.versions(model)]
    assert len({m.files["model.txt"].sha256 for m in manifests}) == 1
    assert manifests[0].metrics == manifests[1].metrics == manifests[2].metrics
