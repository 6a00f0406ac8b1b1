"""deploy: move staging to the registered version, smoke-tested, forward only.

Rollouts of a model's staging service happen one at a time: each holds the registry's
``staging`` lease, and a burst of registrations waits its turn instead of being
refused. Whoever gets the lease reads the alias afresh, so a version that a newer one
overtook while it waited is recorded as skipped, never put back over it.
"""

from __future__ import annotations

from modelrail.events import ModelDeployed, ModelRegistered
from modelrail.ports import Deployer, ModelCatalog
from modelrail.registry import Registry
from modelrail.stages import Outcome

STAGING = "staging"
# A lease older than the deploy subscription's ack deadline (topology.yaml) belongs to
# a delivery Pub/Sub has given up on: its holder died, and the lease is taken over.
LEASE_TTL_S = 600.0
# How long a delivery waits for the rollout before it: a few rollouts, leaving its own
# rollout room within that deadline; longer, and it is redelivered later instead.
LEASE_WAIT_S = 300.0


def handle(
    event: ModelRegistered,
    *,
    registry: Registry,
    deployer: Deployer,
    catalog: ModelCatalog | None,
) -> Outcome:
    with registry.lease(
        event.model, STAGING, event.event_id, ttl_s=LEASE_TTL_S, wait_s=LEASE_WAIT_S
    ):
        current = registry.alias(event.model, STAGING)
        if current is not None and current.version >= event.version:
            # A late or out-of-order event: staging already serves this or a newer version.
            return Outcome(
                None,
                {"reason": f"staging already serves v{current.version}", "version": event.version},
                status="skipped",
            )
        # Raises DeploymentFailed after putting traffic back on the previous revision.
        deployment = deployer.deploy(event.model, event.version)
        # Vertex AI's staging alias (when pipeline.toml turns the catalog on) moves with it.
        if not registry.move_alias(event.model, STAGING, event.version, catalog=catalog):
            # A newer version became staging while this one rolled out (two deploys at
            # once): serve what the alias names again, so answers and alias agree.
            newer = registry.alias(event.model, STAGING)
            assert newer is not None  # move_alias refuses only when one is set
            if newer.version != event.version:
                deployer.deploy(event.model, newer.version)
            return Outcome(
                None,
                {
                    "reason": f"staging moved to v{newer.version} meanwhile",
                    "version": event.version,
                },
                status="skipped",
            )
        deployed = ModelDeployed(
            run_id=event.run_id,
            causation_id=event.event_id,
            lineage=event.lineage,
            model=event.model,
            version=event.version,
            url=deployment.url,
            revision=deployment.revision,
            previous_version=current.version if current else None,
        )
        return Outcome(deployed, {"url": deployment.url, "revision": deployment.revision})
