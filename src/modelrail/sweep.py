"""The sweep: end the runs that can no longer end by themselves.

A run ends by itself in ``deployed``, ``rejected`` or ``failed``: every stage records
its result, a failing delivery is retried, and the last attempt records
``retries_exhausted``. Two things still leave a run waiting forever, and the sweep
finds both:

- **the training job died** (killed, out of memory, deleted) without recording: the
  launcher says its execution failed or no longer exists, so ``train`` is recorded as
  failed (``job_failed``) with what the platform said;
- **a message was lost**: a process killed on its last delivery attempt (dead-lettered
  with no record), or embedded mode's in-process bus gone with its process. The next
  stage's deliveries cannot take longer than its subscription allows (attempts times (ack
  deadline + maximum backoff)); past that, the stage is recorded as failed
  (``stuck``).

Each failure is recorded create-only and published as ``pipeline-failed``, like any
stage's: a stage that records meanwhile wins, and the sweep leaves that run alone.
``modelrail sweep`` runs it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from modelrail.container import Container
from modelrail.errors import JobFailed, PermanentError, RunStuck, TransientError
from modelrail.events import utcnow
from modelrail.pipeline import record_failure
from modelrail.runs import RunSummary

# The stage each one's event feeds (launch_training starts the job, which records train).
_NEXT = {
    "validate": "launch_training",
    "launch_training": "train",
    "train": "evaluate",
    "evaluate": "register",
    "register": "deploy",
}
UNFINISHED = ("running", "registered")

log = logging.getLogger(__name__)


def sweep(container: Container, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Record as failed each run that can no longer end; return the failure records."""
    now = now or datetime.now(UTC)
    failed = []
    for run in container.runs.runs():
        if run.outcome not in UNFINISHED:
            continue
        try:
            found = _stuck(container, run, now)
        except TransientError as exc:  # the launcher's API: the next sweep asks again
            log.warning("run %s not swept: %s", run.run_id, exc)
            continue
        if found is None:
            continue
        stage, error = found
        if container.runs.stage_record(run.run_id, stage) is not None:
            continue  # the stage recorded after all
        last = list(run.stages.values())[-1]
        causation = (last.get("event") or {}).get("event_id") or run.run_id
        started, clock = utcnow(), time.perf_counter()
        record = record_failure(
            container, stage, run.run_id, run.lineage, causation, error, started, clock
        )
        if record["status"] == "failed":  # not the stage's own record, stored meanwhile
            failed.append(record)
    return failed


def _stuck(
    container: Container, run: RunSummary, now: datetime
) -> tuple[str, PermanentError] | None:
    """The stage that will never record for ``run``, and why; None if it still may."""
    last_stage, last = list(run.stages.items())[-1]
    stage = _NEXT.get(last_stage)
    if stage is None:
        return None
    if stage == "train":
        execution = str(last.get("output", {}).get("execution", ""))
        state = container.launcher.state(execution)
        if state.status in ("failed", "unknown"):
            return stage, JobFailed(
                f"the training job's execution {execution} ended without recording "
                f"({state.status}: {state.detail})",
                {"execution": execution, "job_state": state.status},
            )
        return None
    limits = [
        s.max_delivery_attempts * (s.ack_deadline_seconds + s.maximum_backoff_s)
        for s in container.topology.subscriptions
        if s.consumer == stage
    ]
    waited = (now - datetime.fromisoformat(last["finished_at"])).total_seconds()
    if not limits or waited <= max(limits):
        return None
    return stage, RunStuck(
        f"{stage} has recorded nothing {waited:.0f} s after {last_stage} finished, longer "
        f"than its deliveries can take ({max(limits)} s): its message was lost",
        {"waited_s": round(waited), "limit_s": max(limits)},
    )
