"""launch_training: start the training job for a validated dataset.

Training can outlast an event-driven function's time limit, so it runs as a job; the
job publishes ``model-trained`` itself when it is done. One delivery launches it: the
same event delivered several times at once (a retrain request published thrice) is
claimed by the first message; the others wait for its record, and a redelivery of
that message (its delivery died before launching) launches.
"""

from __future__ import annotations

import orjson

from modelrail.domain.runs import RunLog
from modelrail.kernel.errors import TransientError
from modelrail.kernel.events import DatasetValidated
from modelrail.kernel.ports import JobLauncher
from modelrail.service.stages import Outcome

STAGE = "launch_training"


def handle(
    event: DatasetValidated,
    *,
    launcher: JobLauncher,
    training_job: str,
    runs: RunLog,
    message_id: str,
) -> Outcome:
    if not runs.claim(event.run_id, STAGE, message_id):
        raise TransientError(f"another delivery is launching the training of {event.run_id}")
    execution = launcher.launch(training_job, orjson.dumps(event.to_body()))
    return Outcome(None, {"job": training_job, "execution": execution})
