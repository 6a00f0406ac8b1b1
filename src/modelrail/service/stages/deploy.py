"""deploy: move staging to the registered version, verified, smoke-tested, forward only.

Rollouts of a model's staging service happen one at a time: each holds the model's
``staging`` lease (``leases``), and a burst of registrations waits its turn instead of being
refused. Whoever gets the lease reads the alias afresh, so a version that a newer one
overtook while it waited is recorded as skipped, never put back over it; a skipped
deploy still makes staging serve what the alias names (``reconcile.converge``), so a
crash before it is repaired by the next event too.

Under ``[gate] staging = "champion"`` (the run's configuration, in its lineage) only a
version that became the champion is deployed; any other blessed version is registered
and recorded here as skipped, saying so. A candidate a person blessed by hand after
the gate rejected it (``blessed_by`` in its lineage: ``modelrail bless``) is deployed
whatever ``staging`` says: serving it is what they asked for.

The version goes out through ``reconcile.roll_out``: its signed manifest is verified
first (a tampered or unsigned version fails permanently, ``IntegrityError``, before any
server starts), and a failed rollout restores what the alias names at that moment.
"""

from __future__ import annotations

import logging

from modelrail.domain.leases import Leases
from modelrail.domain.registry import CHAMPION, Registry
from modelrail.kernel.errors import ModelrailError
from modelrail.kernel.events import ModelDeployed, ModelRegistered
from modelrail.kernel.ports import Deployer
from modelrail.service.reconcile import (
    LEASE_HEARTBEAT_S,
    LEASE_TTL_S,
    LEASE_WAIT_S,
    STAGING,
    Convergence,
    converge,
    stage_version,
)
from modelrail.service.stages import Outcome

__all__ = ["LEASE_HEARTBEAT_S", "LEASE_TTL_S", "LEASE_WAIT_S", "STAGING", "handle"]

log = logging.getLogger(__name__)


def handle(
    event: ModelRegistered,
    *,
    registry: Registry,
    leases: Leases,
    deployer: Deployer,
) -> Outcome:
    model = event.model
    by_hand = event.lineage.get("blessed_by") is not None
    if event.lineage.get("config", {}).get("staging") == "champion" and not by_hand:
        champion = registry.alias(model, CHAMPION)
        if champion is None or champion.version != event.version:
            held = f"v{champion.version}" if champion else "none"
            reason = f"not the champion ({held} is), and staging follows champions only"
            return Outcome(None, {"reason": reason, "version": event.version}, status="skipped")
    with leases.hold(
        model,
        STAGING,
        event.event_id,
        ttl_s=LEASE_TTL_S,
        wait_s=LEASE_WAIT_S,
        heartbeat_s=LEASE_HEARTBEAT_S,
    ) as lease:
        current = registry.alias(model, STAGING)
        if current is not None and current.version >= event.version:
            # A late or out-of-order event: staging already serves this or a newer
            # version, or should: make it so (a crash may have left another there).
            # That repair is the alias's, not this run's: its failure is the next
            # reconciliation's to retry, and this run stays skipped, never failed.
            output = {
                "reason": f"staging already serves v{current.version}",
                "version": event.version,
            }
            try:
                converge(model, registry=registry, deployer=deployer)
            except ModelrailError as exc:
                log.warning("staging did not converge to v%s: %s", current.version, exc)
                output["convergence"] = f"failed: {exc}"
            return Outcome(None, output, status="skipped")
        # Raises DeploymentFailed once staging serves what the alias names again.
        staged = stage_version(
            model, event.version, registry=registry, deployer=deployer, lease=lease
        )
        if isinstance(staged, Convergence):
            # A newer version became staging while this one rolled out (a lease taken
            # over from a rollout that outlived it): staging serves that one again.
            return Outcome(
                None,
                {
                    "reason": f"staging moved to v{staged.alias_version} meanwhile",
                    "version": event.version,
                },
                status="skipped",
            )
        deployment = staged
        deployed = ModelDeployed(
            run_id=event.run_id,
            causation_id=event.event_id,
            lineage=event.lineage,
            model=model,
            version=event.version,
            url=deployment.url,
            revision=deployment.revision,
            previous_version=current.version if current else None,
        )
        return Outcome(deployed, {"url": deployment.url, "revision": deployment.revision})
