"""Retrains on a schedule (``[retrain] schedule``, a cron expression in UTC).

The sweep calls ``fire_due`` (in the cloud every 10 minutes, by Cloud Scheduler): for
each installed model with a schedule, the latest time the schedule names up to now is
its slot; a slot not fired yet publishes one ``retrain-requested`` pinned to the
model's newest upload, its policy ``schedule`` (the run's trigger kind) and its request
id the slot's (``schedule:<model>:<slot>``), so a slot fires once however many sweeps
see it. What has fired is one object per model, ``models/<model>/policies/schedule.json``,
moved by compare-and-set. A schedule seen for the first time (or changed) starts
counting from the sweep that sees it: adding one never fires for a time already past.

With ``[retrain] min_new_rows``, a slot whose newest upload holds too few new rows over
the data the staging version trained on (``service.retrain_data``) starts nothing: the
slot is spent all the same, and why is kept in the policy's object and returned
(``declined``), for the sweep to say.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from cronsim import CronSim

from modelrail.domain.registry import Manifest
from modelrail.kernel.events import RetrainRequested, utcnow
from modelrail.kernel.ports import BlobInfo
from modelrail.service import policy_state, retrain_data
from modelrail.service.container import Container
from modelrail.service.reconcile import STAGING


def fire_due(installation: Container, models: Sequence[str], now: datetime) -> list[dict[str, Any]]:
    """Publish the retrain of each of ``models`` whose schedule names a time, up to
    ``now``, not fired yet; what each schedule did (``fired``, or why not: ``declined``
    when its time came and a policy started nothing)."""
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
    taken: dict[str, Any] = {"schedule": schedule, "slot": slot.isoformat()}
    if fresh:
        if not state.replace(container.artifacts, taken):
            return {"fired": False, "slot": slot.isoformat(), "why": "another sweep took it"}
        return {"fired": False, "slot": slot.isoformat(), "why": "a new schedule: from now on"}
    newest = retrain_data.newest(container)
    declined = _declined(container, newest)
    if declined is not None:
        taken["declined"] = declined  # the time is spent all the same; kept with why
    if not state.replace(container.artifacts, taken):
        return {"fired": False, "slot": slot.isoformat(), "why": "another sweep took it"}
    if declined is not None:
        return {"fired": False, "slot": slot.isoformat(), "why": declined, "declined": True}
    request = RetrainRequested(
        model=container.model,
        request_id=f"schedule:{container.model}:{slot:%Y%m%dT%H%MZ}",
        # Pinned: the upload judged here is the one trained on, whatever lands meanwhile.
        data_uri=retrain_data.upload_uri(container, newest) if newest is not None else None,
        reason=f"the schedule {schedule!r} (UTC) at {slot.isoformat()}",
        requested_at=utcnow(),
        policy="schedule",
    )
    container.bus.publish(
        request.event_type, orjson.dumps(request.to_body()), {"event_type": request.event_type}
    )
    return {"fired": True, "slot": slot.isoformat(), "request_id": request.request_id}


def _declined(container: Container, newest: BlobInfo | None) -> str | None:
    """Why ``[retrain] min_new_rows`` starts no retrain on ``newest`` (None: it may)."""
    if not container.config.retrain_min_new_rows:
        return None
    if newest is None:
        return "no upload to retrain on"
    return retrain_data.too_few_new_rows(container, newest, _served(container))


def _served(container: Container) -> Manifest | None:
    """The staging version's manifest, verified; None while nothing is staged."""
    alias = container.registry.alias(container.model, STAGING)
    if alias is None:
        return None
    return container.registry.signed_manifest(container.model, alias.version)
