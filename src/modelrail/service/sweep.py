"""The sweep: end the runs that can no longer end by themselves.

A run ends by itself in ``deployed``, ``rejected`` or ``failed``: every stage records
its result, a failing delivery is retried, and the last attempt records
``retries_exhausted``. Two things still leave a run waiting forever, and the sweep
finds both:

- **a job died** (killed, out of memory, deleted) without recording: the launcher
  says its execution failed or no longer exists, so its stage is recorded as failed
  (``job_failed``) with what the platform said: ``train``, found after
  ``launch_training``'s record, and ``validate`` handed to its job at size, found by
  its claim (``service.handoff``: such a run has no record before the job's);
- **a message was lost**: a process killed on its last delivery attempt (dead-lettered
  with no record), or embedded mode's in-process bus gone with its process. The next
  stage's deliveries cannot take longer than its subscription allows (each attempt up
  to the ack deadline, the retry policy's backoffs between them); past that, the stage
  is recorded as failed (``stuck``).
- **register and deploy** are bounded by their leases instead, which their deliveries
  hold while they work and renew by heartbeat (the run's registration lease; the
  model's ``staging`` lease): while one is live a delivery is at work or waiting its
  turn; once none has been for longer than every remaining delivery can take to come
  (the retry policy's backoffs, and a start-up margin for each attempt, since a
  delivery can fail before it takes the lease), nothing will record, and the run ends
  within minutes, not after five ack deadlines. The ``staging`` lease is every run's
  (and the reconciliation's): only its release by this run's own delivery counts. The
  sweep ends a register while holding the run's registration lease, so no delivery is
  registering meanwhile, and a later one finds the stage recorded and stops; a version
  number the run claimed and never completed is named in the failure
  (``orphaned_version``): that gap is recorded.

Each failure is recorded create-only and published as ``pipeline-failed``, like any
stage's: a stage that records meanwhile wins, and the sweep leaves that run alone.
``modelrail sweep`` runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from modelrail.domain.leases import registration_name
from modelrail.domain.runs import BLESS, Began, Handoff, RunSummary, StageRecord
from modelrail.kernel.errors import JobFailed, LeaseHeld, PermanentError, RunStuck, TransientError
from modelrail.service.container import Container
from modelrail.service.pipeline import record_failure

UNFINISHED = ("running", "registered")
# The stages whose deliveries hold a registry lease while they work, and its name.
_LEASED: dict[str, Callable[[str], str]] = {
    "register": registration_name,
    "deploy": lambda run_id: "staging",
}
# From a delivery's arrival to its taking the lease: the function's start, reading the
# event and the run's record.
_START_MARGIN_S = 60.0

log = logging.getLogger(__name__)


def sweep(container: Container, *, now: datetime | None = None) -> list[StageRecord]:
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
        try:
            record = _end(container, run, stage, error, now)
        except LeaseHeld:  # a delivery took the stage up meanwhile
            continue
        if record is not None:
            failed.append(record)
    return failed + dead_handoffs(container, now)


def dead_handoffs(container: Container, now: datetime) -> list[StageRecord]:
    """End each run whose stage was handed to a job (validate at size) that will not
    record it: its execution failed or no longer exists, or no delivery launched one
    within the time the stage's deliveries can take. Found by the claim, since such a
    run has no stage record yet."""
    failed = []
    for handoff in container.runs.handoffs("validate"):
        if container.runs.stage_record(handoff.run_id, handoff.stage) is not None:
            continue
        try:
            error = _dead(container, handoff, now)
        except TransientError as exc:  # the launcher's API: the next sweep asks again
            log.warning("run %s not swept: %s", handoff.run_id, exc)
            continue
        if error is None:
            continue
        record = record_failure(
            container, handoff.stage, handoff.run_id, dict(handoff.lineage),
            handoff.causation_id, error, Began.now(measured=False),
        )  # fmt: skip
        if record.status == "failed":  # not the job's own record, stored meanwhile
            failed.append(record)
    return failed


def _dead(container: Container, handoff: Handoff, now: datetime) -> PermanentError | None:
    """Why the job ``handoff`` names will never record its stage; None if it still may."""
    execution = handoff.execution
    if execution is None:
        limit = max(
            s.deliveries_take_s()
            for s in container.topology.subscriptions
            if s.consumer == handoff.stage
        )
        waited = (now - datetime.fromisoformat(handoff.claimed_at)).total_seconds()
        if waited <= limit:
            return None
        return RunStuck(
            f"{handoff.stage} was claimed for its job {handoff.job} {waited:.0f} s ago and "
            f"no delivery launched it within what its deliveries can take ({limit:.0f} s)",
            {"waited_s": round(waited), "limit_s": round(limit), "job": handoff.job},
        )
    state = container.launcher.state(execution)
    if state.status not in ("failed", "unknown"):
        return None
    return JobFailed(
        f"the {handoff.stage} job's execution {execution} ended without recording "
        f"({state.status}: {state.detail})",
        {"execution": execution, "job_state": state.status},
    )


def _end(
    container: Container, run: RunSummary, stage: str, error: PermanentError, now: datetime
) -> StageRecord | None:
    """Record ``stage`` of ``run`` failed with ``error`` unless it recorded meanwhile;
    a register while holding the run's registration lease."""
    if stage != "register":
        return _record(container, run, stage, error)
    model = str(run.model)
    registry = container.registry
    leases = container.leases
    with leases.registration(model, run.run_id, "sweep", wait_s=0, clock=now.timestamp):
        orphaned = registry.orphaned_number(model, run.run_id)
        if orphaned is not None:
            error.message += f"; the version number it claimed, v{orphaned}, stays unused (a gap)"
            error.details["orphaned_version"] = orphaned
        return _record(container, run, stage, error)


def _record(
    container: Container, run: RunSummary, stage: str, error: PermanentError
) -> StageRecord | None:
    if container.runs.stage_record(run.run_id, stage) is not None:
        return None  # the stage recorded after all
    last = list(run.stages.values())[-1]
    causation = _event_id(last) or run.run_id
    # Recorded on the stage's behalf: no process of the stage ran, so nothing measured.
    began = Began.now(measured=False)
    record = record_failure(
        container, stage, run.run_id, last.lineage.to_json(), causation, error, began
    )
    # Not the stage's own record, stored meanwhile:
    return record if record.status == "failed" else None


def _stuck(
    container: Container, run: RunSummary, now: datetime
) -> tuple[str, PermanentError] | None:
    """The stage that will never record for ``run``, and why; None if it still may."""
    last_stage, last = list(run.stages.items())[-1]
    # A candidate blessed by hand goes on from the gate as if evaluate had passed it.
    stage = container.topology.next_stage("evaluate" if last_stage == BLESS else last_stage)
    if stage is None:
        return None
    if stage == "train":
        execution = str(last.output.get("execution", ""))
        state = container.launcher.state(execution)
        if state.status in ("failed", "unknown"):
            return stage, JobFailed(
                f"the training job's execution {execution} ended without recording "
                f"({state.status}: {state.detail})",
                {"execution": execution, "job_state": state.status},
            )
        return None
    subscriptions = [s for s in container.topology.subscriptions if s.consumer == stage]
    if not subscriptions:
        return None
    finished = datetime.fromisoformat(last.finished_at)
    if stage in _LEASED:
        return _stuck_behind_lease(container, run, last_stage, stage, finished, now)
    limit = max(s.deliveries_take_s() for s in subscriptions)
    waited = (now - finished).total_seconds()
    if waited <= limit:
        return None
    return stage, RunStuck(
        f"{stage} has recorded nothing {waited:.0f} s after {last_stage} finished, longer "
        f"than its deliveries can take ({limit:.0f} s): its message was lost",
        {"waited_s": round(waited), "limit_s": round(limit)},
    )


def _event_id(record: StageRecord) -> str:
    """The id of the event a stage record published (what the next stage's deliveries
    name their lease holding by)."""
    return str((record.event or {}).get("event_id", ""))


def _stuck_behind_lease(
    container: Container,
    run: RunSummary,
    last_stage: str,
    stage: str,
    finished: datetime,
    now: datetime,
) -> tuple[str, PermanentError] | None:
    """A leased stage is stuck once no delivery has held its lease (since the previous
    stage finished, or since one of this run's deliveries released it or let it lapse)
    for longer than every remaining delivery can take to come: a delivery can fail
    before it takes the lease (a cold start, reading the event), so each attempt's
    start and every backoff count, not only the longest."""
    name = _LEASED[stage](run.run_id)
    state = container.leases.state(str(run.model), name, clock=now.timestamp)
    if state is not None and state.live:
        return None  # a delivery is at work, or waits its turn for the staging service
    quiet_s = max(
        s.redeliveries_come_within_s(_START_MARGIN_S)
        for s in container.topology.subscriptions
        if s.consumer == stage
    )
    # The staging lease is every run's (and the reconciliation's): only a release by
    # this run's own delivery says anything about this run.
    published = _event_id(run.stages[last_stage])
    ours = state is not None and (stage == "register" or state.holder == published)
    since = max(finished.timestamp(), state.until if ours and state is not None else 0.0)
    waited = now.timestamp() - since
    if waited <= quiet_s:
        return None
    return stage, RunStuck(
        f"{stage} has recorded nothing, and no delivery has held its lease ({name}) for "
        f"{waited:.0f} s, longer than a redelivery takes to come ({quiet_s:.0f} s): its "
        "delivery died or its message was lost",
        {"waited_s": round(waited), "limit_s": round(quiet_s), "lease": name},
    )
