"""launch_training: one training job per run, started with the validated event."""

from __future__ import annotations

import orjson
import pytest

from modelrail.kernel.errors import TransientError
from modelrail.kernel.events import DatasetValidated
from modelrail.service.stages import launch_training
from tests.unit.stages.conftest import Ports, validated


@pytest.fixture
def event(ports: Ports, penguins_csv: bytes) -> DatasetValidated:
    return validated(ports, penguins_csv)


def test_the_job_is_launched_with_the_validated_event(
    ports: Ports, event: DatasetValidated
) -> None:
    outcome = ports.call(launch_training.handle, event, message_id="message-1")

    # The job publishes model-trained itself: the launcher's outcome has no event.
    assert outcome.event is None
    assert outcome.status == "succeeded"
    ((job, body),) = ports.launcher.launched
    assert job == ports.training_job
    assert DatasetValidated.from_body(orjson.loads(body)) == event
    assert outcome.output == {"job": job, "execution": "modelrail-train/executions/1"}
    assert ports.launcher.state(outcome.output["execution"]).status == "running"


def test_another_message_of_the_same_run_launches_nothing(
    ports: Ports, event: DatasetValidated
) -> None:
    ports.call(launch_training.handle, event, message_id="message-1")

    # The same event published again (a retrain request sent twice): the first
    # message's claim stands, and the bus redelivers this one until its record exists.
    with pytest.raises(TransientError, match=event.run_id):
        ports.call(launch_training.handle, event, message_id="message-2")

    assert len(ports.launcher.launched) == 1


def test_a_redelivery_of_the_claiming_message_launches(
    ports: Ports, event: DatasetValidated
) -> None:
    ports.call(launch_training.handle, event, message_id="message-1")

    # Its first delivery may have died after the claim and before the launch; after
    # a launch, the pipeline's record of the stage keeps a redelivery from coming here.
    outcome = ports.call(launch_training.handle, event, message_id="message-1")

    assert [job for job, _ in ports.launcher.launched] == [ports.training_job] * 2
    assert outcome.output["execution"] == "modelrail-train/executions/2"
