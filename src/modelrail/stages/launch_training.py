"""launch_training: start the training job for a validated dataset.

Training can outlast an event-driven function's time limit, so it runs as a job; the
job publishes ``model-trained`` itself when it is done.
"""

from __future__ import annotations

import orjson

from modelrail.events import DatasetValidated
from modelrail.ports import JobLauncher
from modelrail.stages import Outcome


def handle(event: DatasetValidated, *, launcher: JobLauncher, training_job: str) -> Outcome:
    execution = launcher.launch(training_job, orjson.dumps(event.to_body()))
    return Outcome(None, {"job": training_job, "execution": execution})
