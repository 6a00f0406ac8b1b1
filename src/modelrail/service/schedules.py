"""Retrains on a schedule (``[retrain] schedule``, a cron expression in UTC).

The sweep calls ``fire_due`` (in the cloud every 10 minutes, by Cloud Scheduler): for
each installed model with a schedule, the latest time the schedule names up to now is
its slot; a slot not fired yet publishes one ``retrain-requested`` on the model's
newest upload, its policy ``schedule`` (the run's trigger kind) and its request id the
slot's (``schedule:<model>:<slot>``), so a slot fires once however many sweeps see it.
What has fired is one object per model, ``models/<model>/policies/schedule.json``,
moved by compare-and-set. A schedule seen for the first time (or changed) starts
counting from the sweep that sees it: adding one never fires for a time already past.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from cronsim import CronSim

from modelrail.kernel.events import RetrainRequested, utcnow
from modelrail.service import policy_state
from modelrail.service.container import Container


def fire_due(installation: Container, models: Sequence[str], now: datetime) -> list[dict[str, Any]]:
    """Publish the retrain of each of ``models`` whose schedule names a time, up to
    ``now``, not fired yet; what each schedule did (``fired``, or why not)."""
    done = []
    for name in models:
        container = installation.for_model(name)
        schedule = container.config.retrain_schedule
        if schedule is not None:
            done.append({"model": name, "schedule": schedule, **_due(container, schedule, now)})
    return done


def _due(container: Container, schedule: str, now: datetime) -> dict[str, Any]:
    slot = next(CronSim(schedule, now, reverse=True))
    state = policy_state.read(container.artifacts, container.model, "schedule")
    last = state.value
    fresh = last is None or last.get("schedule") != schedule
    if not fresh and last is not None and last["slot"] >= slot.isoformat():
        return {"fired": False, "slot": last["slot"], "why": "its latest time has fired"}
    if not state.replace(container.artifacts, {"schedule": schedule, "slot": slot.isoformat()}):
        return {"fired": False, "slot": slot.isoformat(), "why": "another sweep took it"}
    if fresh:
        return {"fired": False, "slot": slot.isoformat(), "why": "a new schedule: from now on"}
    request = RetrainRequested(
        model=container.model,
        request_id=f"schedule:{container.model}:{slot:%Y%m%dT%H%MZ}",
        reason=f"the schedule {schedule!r} (UTC) at {slot.isoformat()}",
        requested_at=utcnow(),
        policy="schedule",
    )
    container.bus.publish(
        request.event_type, orjson.dumps(request.to_body()), {"event_type": request.event_type}
    )
    return {"fired": True, "slot": slot.isoformat(), "request_id": request.request_id}
