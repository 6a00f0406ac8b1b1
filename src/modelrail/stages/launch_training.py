"""launch_training: start the training job for a validated dataset.

Training can outlast an event-driven function's time limit, so it runs as a job; the
job publishes ``model-trained`` itself when it is done.
"""

from __future__ import annotations

import orjson

from modelrail.events import DatasetValidated
from modelrail.stages import Outcome, StageContext


def handle(event: DatasetValidated, *, ctx: StageContext) -> Outcome:
    assert ctx.launcher is not None, "launch_training needs a JobLauncher"
    execution = ctx.launcher.launch(ctx.training_job, orjson.dumps(event.to_body()))
    return Outcome(None, {"job": ctx.training_job, "execution": execution})
