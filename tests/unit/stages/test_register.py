"""register: a blessed candidate becomes a signed, numbered version, the champion;
once per run, however often its event is delivered."""

from __future__ import annotations

import hashlib

import pytest

from modelrail.domain.registry import CHAMPION, MODEL_FILE, REFERENCE_FILE
from modelrail.domain.runs import Began, StageRecord
from modelrail.kernel.errors import DeliveryInProgress
from modelrail.kernel.events import ModelEvaluated, ModelRegistered
from modelrail.service.stages import register
from tests.unit.stages.conftest import Ports, delivered, evaluated


@pytest.fixture
def event(ports: Ports, penguins_csv: bytes) -> ModelEvaluated:
    return evaluated(ports, penguins_csv)


def register_once(ports: Ports, event: ModelEvaluated, attempt: int = 1) -> ModelRegistered:
    outcome = ports.call(
        register.handle, event, delivery_attempt=attempt, message_id="message-evaluated"
    )
    assert outcome.status == "succeeded"
    assert isinstance(outcome.event, ModelRegistered)
    return delivered(outcome.event)


def test_a_blessed_candidate_becomes_signed_version_1_and_the_champion(
    ports: Ports, event: ModelEvaluated
) -> None:
    outcome = ports.call(register.handle, event, delivery_attempt=1, message_id="message-1")

    assert isinstance(outcome.event, ModelRegistered)
    registered = delivered(outcome.event)
    model, registry = ports.model, ports.registry
    assert (registered.model, registered.version) == (model, 1)
    assert (registered.run_id, registered.causation_id) == (event.run_id, event.event_id)
    assert registered.manifest_uri == registry.manifest_uri(model, 1)
    # The manifest's signature verifies, and the event names its exact bytes.
    manifest = registry.signed_manifest(model, 1)
    manifest_key = registered.manifest_uri.removeprefix(f"gs://{ports.artifacts.bucket}/")
    stored = ports.artifacts.read(manifest_key).data
    assert registered.manifest_sha256 == hashlib.sha256(stored).hexdigest()
    assert (manifest.run_id, manifest.metrics) == (event.run_id, event.metrics)
    assert manifest.verdict["blessed"] is True
    assert manifest.files[MODEL_FILE].sha256 == event.model_sha256
    assert REFERENCE_FILE in manifest.files  # the next gate's trusted hold-out
    assert manifest.examples  # what deploy smoke-tests it with
    loaded = registry.load(model, 1)
    assert hashlib.sha256(loaded.model_text).hexdigest() == event.model_sha256
    champion = registry.alias(model, CHAMPION)
    assert champion is not None
    assert champion.version == 1
    # Published to the package repository, and the stage's output says where.
    assert registry.packages.versions(model) == ["v1"]
    assert outcome.output["version"] == 1
    publication = registry.publication(model, 1)
    assert publication is not None
    assert outcome.output["published"] == publication.to_json()


def test_a_second_delivery_of_the_run_gets_the_same_version(
    ports: Ports, event: ModelEvaluated
) -> None:
    first = register_once(ports, event, attempt=1)

    again = register_once(ports, event, attempt=2)

    assert again.version == first.version == 1
    assert again.manifest_sha256 == first.manifest_sha256
    assert ports.registry.versions(ports.model) == [1]
    assert ports.registry.packages.versions(ports.model) == ["v1"]
    assert ports.registry.aliases(ports.model) == {CHAMPION: 1}


def test_a_delivery_while_another_registers_the_run_is_left_for_redelivery(
    ports: Ports, event: ModelEvaluated
) -> None:
    impatient = ports.impatient()

    with (
        ports.leases.registration(ports.model, event.run_id, "message-first#1"),
        pytest.raises(DeliveryInProgress, match="message-first#1"),
    ):
        impatient.call(register.handle, event, delivery_attempt=1, message_id="message-second")

    assert ports.registry.versions(ports.model) == []
    assert ports.registry.alias(ports.model, CHAMPION) is None


def test_a_run_recorded_failed_meanwhile_registers_nothing(
    ports: Ports, event: ModelEvaluated
) -> None:
    # The sweep ended the run (its delivery seemed lost) before this one arrived.
    ended = StageRecord.ended(
        event.run_id,
        "register",
        "failed",
        began=Began.now(measured=False),
        lineage=event.lineage,
        output={},
        event=None,
        error={"kind": "stuck", "message": "no record of register in time"},
    )
    ports.runs.save_stage(ended)

    with pytest.raises(DeliveryInProgress, match="recorded failed"):
        ports.call(register.handle, event, delivery_attempt=3, message_id="message-late")

    assert ports.registry.versions(ports.model) == []
