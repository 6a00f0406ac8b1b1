"""Rollback: an operator moves staging back to an earlier version.

A rollback is a run of its own, with one stage, ``rollback``: under the rollout lease,
it first makes staging serve what its alias names (``reconcile.converge``: the decision
is taken on what serves, not on what a crash left), then redeploys the target version
through the same use case as the pipeline's deploy stage (``reconcile.roll_out``: the
signed manifest verified, the new revision smoke-tested, the alias's version restored
if the test fails), moves the ``staging`` alias with ``force`` (aliases otherwise only
move forward), records ``runs/<run_id>/stages/rollback.json`` and then publishes
``model-deployed`` with a ``rollback`` trigger (who asked, why, from which version).
A rollback whose deploy fails is recorded and published as ``pipeline-failed``, like
any stage.

The ``champion`` alias does not move: it names the best model the gate has judged,
which later candidates are compared with; a rollback changes what staging serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelrail.domain.registry import Alias
from modelrail.domain.runs import RunSummary, StageRecord
from modelrail.kernel.errors import DeploymentFailed, IntegrityError, ModelrailError, Refused
from modelrail.kernel.events import ModelDeployed, derive_run_id, new_id, utcnow
from modelrail.kernel.ports import Deployment
from modelrail.service.container import Container
from modelrail.service.pipeline import record_and_publish, record_failure
from modelrail.service.reconcile import (
    LEASE_HEARTBEAT_S,
    LEASE_TTL_S,
    LEASE_WAIT_S,
    STAGING,
    converge,
    stage_version,
)

STAGE = "rollback"

log = logging.getLogger(__name__)


def staging_history(runs: Iterable[RunSummary], model: str) -> list[int]:
    """The versions staging was moved to, oldest first: every successful deploy and
    rollback of ``model`` in the run history."""
    moves: list[tuple[str, int]] = []
    for run in runs:
        for name in ("deploy", STAGE):
            record = run.stages.get(name)
            if record is None or record.status != "succeeded":
                continue
            event = record.event or {}
            if event.get("event_type") == ModelDeployed.event_type and event.get("model") == model:
                moves.append((record.finished_at, int(event["version"])))
    return [version for _, version in sorted(moves)]


def previous_version(history: Sequence[int], current: int) -> int | None:
    """The version staging served last before ``current`` among older versions.

    Walking back skips newer versions, so a rollback after a rollback goes further back
    (3 → 2 → 1), and one after a later deploy returns to what staging served before it
    (1, 2, 3, back to 2, then 4: back to 2, not to the rolled-back 3).
    """
    for version in reversed(history):
        if version < current:
            return version
    return None


def _decide(container: Container, model: str, to: int | None) -> tuple[Alias, int]:
    """Staging's alias and the version to roll back to; ``Refused`` when there is none."""
    registry = container.registry
    current = registry.alias(model, STAGING)
    if current is None:
        raise Refused(f"staging serves no version of {model!r} yet: nothing to roll back")
    target = to
    if target is None:
        target = previous_version(staging_history(container.runs.runs(), model), current.version)
        if target is None:
            raise Refused(
                f"staging has served no version of {model!r} older than v{current.version}; "
                "name one with --to"
            )
    if target not in registry.versions(model):
        known = ", ".join(f"v{v}" for v in registry.versions(model))
        raise Refused(f"{model!r} has no version {target} (it has {known})")
    if target == current.version:
        raise Refused(f"staging already serves {model} v{target}")
    return current, target


def rollback(
    container: Container,
    *,
    to: int | None = None,
    reason: str | None = None,
    requested_by: str,
) -> StageRecord:
    """Move staging to ``to`` (default: ``previous_version``); return the run's record.

    Raises ``Refused`` (nothing changed, nothing recorded) when there is nothing to
    roll back to; a failed deploy is a recorded run whose record says ``failed``.
    """
    registry, config = container.registry, container.config
    model = config.model_name
    request_id = new_id()
    key = f"rollback:{request_id}"
    started, clock = utcnow(), time.perf_counter()
    # One rollout at a time, the deploy stage's included (its lease).
    with container.leases.hold(
        model, STAGING, key, ttl_s=LEASE_TTL_S, wait_s=LEASE_WAIT_S, heartbeat_s=LEASE_HEARTBEAT_S
    ) as lease:
        # Decide on what staging serves, so first make it serve what its alias names (a
        # crash may have left another version there, or nothing); a version that fails
        # to converge (unsigned, not starting) is what a rollback is there to leave.
        try:
            converge(model, registry=registry, deployer=container.deployer)
        except ModelrailError as exc:
            log.warning("staging did not converge to its alias before the rollback: %s", exc)
        current, target = _decide(container, model, to)
        run_id = derive_run_id(key, config.sha256)
        lineage: dict[str, Any] = {
            "trigger": {
                "kind": "rollback",
                "key": key,
                "request_id": request_id,
                "requested_by": requested_by,
                "reason": reason,
                "from_version": current.version,
                "to_version": target,
            },
            "config": config.summary(),
        }
        try:
            # The deploy stage's path: verified, smoke-tested, the alias's version
            # restored on failure; the alias moved back by force.
            staged = stage_version(
                model, target, registry=registry, deployer=container.deployer, lease=lease,
                force=True,
            )  # fmt: skip
        except (DeploymentFailed, IntegrityError) as exc:
            return record_failure(container, STAGE, run_id, lineage, key, exc, started, clock)
        assert isinstance(staged, Deployment)  # forced: the alias always moves
        deployment = staged
    deployed = ModelDeployed(
        run_id=run_id,
        causation_id=key,
        lineage=lineage,
        model=model,
        version=target,
        url=deployment.url,
        revision=deployment.revision,
        previous_version=current.version,
    )
    output: Mapping[str, Any] = {
        "from_version": current.version,
        "to_version": target,
        "url": deployment.url,
        "revision": deployment.revision,
        "requested_by": requested_by,
        "reason": reason,
    }
    record = StageRecord.ended(
        run_id, STAGE, "succeeded", started=started, clock=clock, lineage=lineage,
        output=output, event=deployed.to_body(),
    )  # fmt: skip
    return record_and_publish(container, record)
