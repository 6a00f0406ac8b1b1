"""train: the validated snapshot in, a LightGBM candidate and ``model-trained`` out."""

from __future__ import annotations

import hashlib

import lightgbm as lgb
import pytest

from modelrail.domain.registry import MODEL_FILE
from modelrail.kernel.errors import DataUnavailable
from modelrail.kernel.events import DatasetValidated, ModelTrained
from modelrail.service.stages import train
from tests.unit.stages.conftest import Ports, delivered, validated


@pytest.fixture
def event(ports: Ports, penguins_csv: bytes) -> DatasetValidated:
    return validated(ports, penguins_csv)


def test_the_candidate_is_written_and_named_by_its_sha256(
    ports: Ports, event: DatasetValidated
) -> None:
    outcome = ports.call(train.handle, event)

    assert isinstance(outcome.event, ModelTrained)
    trained = delivered(outcome.event)
    written = ports.artifacts.read(ports.runs.candidate_key(event.run_id, MODEL_FILE)).data
    assert trained.model_sha256 == hashlib.sha256(written).hexdigest()
    assert (trained.run_id, trained.causation_id) == (event.run_id, event.event_id)
    assert trained.dataset == event.dataset
    assert trained.lineage["candidate"]["model_sha256"] == trained.model_sha256
    assert trained.lineage["trigger"] == event.lineage["trigger"]
    assert 1 <= trained.best_iteration <= ports.config.num_boost_round
    # The model is LightGBM's text format, three classes, and what train recorded
    # with it is what the run log gives the stages after.
    booster = lgb.Booster(model_str=written.decode())
    assert booster.num_model_per_iteration() == 3
    model_text, record = ports.runs.candidate(event.run_id, trained.model_sha256)
    assert model_text == written
    assert record.best_iteration == trained.best_iteration
    assert record.examples  # what deploy will smoke-test the version with
    assert outcome.output["best_iteration"] == trained.best_iteration
    # No compiler given: no compiled predictor, said, and not a failure.
    assert outcome.output["compiled"] == []
    assert outcome.output["not_compiled"]


def test_the_same_snapshot_trains_the_same_model_bytes(
    ports: Ports, event: DatasetValidated
) -> None:
    first = ports.call(train.handle, event).event
    again = ports.call(train.handle, event).event

    assert isinstance(first, ModelTrained)
    assert isinstance(again, ModelTrained)
    assert first.model_sha256 == again.model_sha256


def test_a_snapshot_changed_since_validation_is_unavailable(
    ports: Ports, event: DatasetValidated
) -> None:
    prefix = ports.runs.snapshot_key(event.run_id, "")
    for info in ports.artifacts.list(prefix):
        if info.key.endswith(".parquet"):
            ports.artifacts.corrupt(info.key, b"PAR1 not the validated rows PAR1")

    with pytest.raises(DataUnavailable, match="changed since it was validated"):
        ports.call(train.handle, event)

    assert ports.artifacts.list(ports.runs.candidate_key(event.run_id, "")) == []
