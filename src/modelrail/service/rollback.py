"""Rollback: an operator moves staging back to an earlier version.

A rollback is a run of its own, with one stage, ``rollback``: an operator's command
(``RollbackRequested``) run through the pipeline's service layer (``pipeline.execute``,
which derives the run, records and publishes as for any stage). Under the rollout lease,
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

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelrail.domain.config import PipelineConfig
from modelrail.domain.history import staging_moves
from modelrail.domain.leases import Leases
from modelrail.domain.registry import Alias, Registry
from modelrail.domain.runs import RunLog, RunSummary, StageRecord
from modelrail.kernel.errors import DeploymentFailed, IntegrityError, ModelrailError, Refused
from modelrail.kernel.events import ModelDeployed, new_id
from modelrail.kernel.ports import Deployer, Deployment
from modelrail.service.container import Container
from modelrail.service.pipeline import execute
from modelrail.service.reconcile import (
    LEASE_HEARTBEAT_S,
    LEASE_TTL_S,
    LEASE_WAIT_S,
    STAGING,
    converge,
    stage_version,
)
from modelrail.service.stages import Outcome

STAGE = "rollback"

log = logging.getLogger(__name__)


def staging_history(runs: Iterable[RunSummary], model: str) -> list[int]:
    """The versions staging was moved to, oldest first: every successful deploy and
    rollback of ``model`` in the run history."""
    return [move.version for move in staging_moves(runs, model)]


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


def _decide(registry: Registry, runs: RunLog, model: str, to: int | None) -> tuple[Alias, int]:
    """Staging's alias and the version to roll back to; ``Refused`` when there is none."""
    current = registry.alias(model, STAGING)
    if current is None:
        raise Refused(f"staging serves no version of {model!r} yet: nothing to roll back")
    target = to
    if target is None:
        target = previous_version(staging_history(runs.runs(), model), current.version)
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


@dataclasses.dataclass(frozen=True)
class RollbackRequested:
    """An operator's request to move staging back: to ``to``, or to the version it
    served before (``previous_version``); each request is a run of its own."""

    requested_by: str
    to: int | None = None
    reason: str | None = None
    request_id: str = dataclasses.field(default_factory=new_id)

    @property
    def idempotency_key(self) -> str:
        return f"rollback:{self.request_id}"

    def lineage(self) -> dict[str, Any]:
        return {
            "kind": "rollback",
            "key": self.idempotency_key,
            "request_id": self.request_id,
            "requested_by": self.requested_by,
            "reason": self.reason,
        }


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
    command = RollbackRequested(requested_by=requested_by, to=to, reason=reason)
    return execute(container, STAGE, command, handle)


def handle(
    command: RollbackRequested,
    *,
    config: PipelineConfig,
    registry: Registry,
    leases: Leases,
    deployer: Deployer,
    runs: RunLog,
    run_id: str,
    causation_id: str,
    lineage: Mapping[str, Any],
) -> Outcome:
    """The rollback itself, under the rollout lease (the deploy stage's included)."""
    model = config.model_name
    with leases.hold(
        model,
        STAGING,
        causation_id,
        ttl_s=LEASE_TTL_S,
        wait_s=LEASE_WAIT_S,
        heartbeat_s=LEASE_HEARTBEAT_S,
    ) as lease:
        # Decide on what staging serves, so first make it serve what its alias names (a
        # crash may have left another version there, or nothing); a version that fails
        # to converge (unsigned, not starting) is what a rollback is there to leave.
        try:
            converge(model, registry=registry, deployer=deployer)
        except ModelrailError as exc:
            log.warning("staging did not converge to its alias before the rollback: %s", exc)
        current, target = _decide(registry, runs, model, command.to)
        moved = {"from_version": current.version, "to_version": target}
        try:
            # The deploy stage's path: verified, smoke-tested, the alias's version
            # restored on failure; the alias moved back by force.
            staged = stage_version(
                model, target, registry=registry, deployer=deployer, lease=lease, force=True
            )
        except (DeploymentFailed, IntegrityError) as exc:
            raise type(exc)(exc.message, {**exc.details, **moved}) from exc
        assert isinstance(staged, Deployment)  # forced: the alias always moves
    deployed = ModelDeployed(
        run_id=run_id,
        causation_id=causation_id,
        lineage={**lineage, "trigger": {**lineage["trigger"], **moved}},
        model=model,
        version=target,
        url=staged.url,
        revision=staged.revision,
        previous_version=current.version,
    )
    output = {
        **moved,
        "url": staged.url,
        "revision": staged.revision,
        "requested_by": command.requested_by,
        "reason": command.reason,
    }
    return Outcome(deployed, output)
