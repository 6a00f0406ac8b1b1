"""Validate's handoff to a job: an upload too large for a function is validated by a
Cloud Run job running the same stage.

An event-driven function may run for 9 minutes; streaming a multi-GB upload takes
longer. When a function's delivery finds the object the trigger names listed larger
than ``above_bytes``, it launches ``job`` with the trigger (``MODELRAIL_EVENT``, as the
training job gets its event) and records nothing: the job runs ``pipeline.consume`` for
the stage itself, so it writes the same record and publishes the same event (or
``pipeline-failed``) the function would. A job's delivery never hands off again (the
pipeline gives it no handoff). An object of unknown size is validated in place.

One job per run: the delivery claims the handoff create-only in the run log
(``RunLog.hand_off``, ``runs/<run_id>/claims/<stage>.json``) before it launches, and
adds the execution once launched. A later delivery that finds the claim with an
execution acknowledges without launching; one that finds it without (the claiming
delivery died before launching, or its launch failed) launches if it is a redelivery
of the claiming message, and otherwise is retried until the claim names an execution
(on its last attempt it is acknowledged without a record: ``pipeline._redundant``). A
job that dies without recording is ended by the sweep from the claim
(``sweep.dead_handoffs``).
"""

from __future__ import annotations

import dataclasses

import orjson

from modelrail.domain.runs import Handoff, RunLog
from modelrail.kernel.errors import TransientError
from modelrail.kernel.events import JsonDict, RetrainRequested, Trigger, utcnow
from modelrail.kernel.ports import JobLauncher


@dataclasses.dataclass(frozen=True)
class JobHandoff:
    """``stage`` moves to ``job`` (on ``launcher``) for objects above ``above_bytes``."""

    stage: str
    job: str
    above_bytes: int
    launcher: JobLauncher
    runs: RunLog

    def wanted(self, size: int | None) -> bool:
        """Whether an object of ``size`` bytes (None: not known) goes to the job."""
        return size is not None and size > self.above_bytes

    def launch(
        self,
        trigger: Trigger,
        object_uri: str,
        *,
        run_id: str,
        message_id: str,
        lineage: JsonDict,
        causation_id: str,
    ) -> str:
        """Launch the job for this run once, with ``trigger`` pinned to ``object_uri``
        (``gs://bucket/object#generation``, the object whose size was judged); return
        the execution that validates it, this delivery's or an earlier one's."""
        claim = self.runs.hand_off(
            Handoff(
                run_id=run_id,
                stage=self.stage,
                holder=message_id,
                job=self.job,
                lineage=lineage,
                causation_id=causation_id,
                claimed_at=utcnow(),
            )
        )
        if claim.execution is not None:
            return claim.execution  # a redelivery: the job runs, or ran, already
        if claim.holder != message_id:
            raise TransientError(
                f"another delivery is handing {self.stage} of {run_id} to {self.job}"
            )
        execution = self.launcher.launch(self.job, orjson.dumps(_pinned(trigger, object_uri)))
        self.runs.launched(claim, execution)
        return execution


def _pinned(trigger: Trigger, object_uri: str) -> JsonDict:
    """The event the job gets: the trigger itself, a retrain request naming the object
    the function judged (without a ``data_uri`` it would take the newest upload when the
    job starts). Neither the run nor its lineage depends on ``data_uri``."""
    if isinstance(trigger, RetrainRequested):
        return dataclasses.replace(trigger, data_uri=object_uri).to_body()
    return trigger.to_body()
