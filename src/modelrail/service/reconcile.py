"""Reconciliation: what staging serves converges to what its ``staging`` alias names
(and production, to its ``production`` alias: every function here takes the alias,
staging's by default; each alias has its own rollout lease).

The alias is the record; a staging server is a copy of it that a crash can leave
behind (a deploy killed between the switch and the alias move, a rollout that
restored what it saw at its start, a server or its supervisor killed). Three
use cases, all through the ``Deployer`` port, so every deployer (the local
supervisor, the emulator's control plane, Cloud Run) converges the same way:

- ``converge``: serve what the alias names *now*: verify the version's signed
  manifest, ask the deployer what it serves, and deploy the alias's version if that
  differs; re-read the alias after a rollout, in case it moved meanwhile. The caller
  holds the rollout lease.
- ``deploy``: a rollout's steps, over the port: start a candidate, smoke-test it with
  the version's examples, promote it or discard it.
- ``roll_out``: the one way a version is put on staging (the deploy stage, an
  operator's rollback): verify the version's signed manifest (a tampered or unsigned
  version is refused, permanently, before any server starts), deploy it, and on a
  failed deploy restore what the alias names at that moment, not what the rollout saw
  at its start.
- ``Reconciler``: the loop run where a long-lived process exists (the local
  supervisor, the emulator's control plane) and the one-shot pass of the sweep. It
  converges under the rollout lease, taken without waiting: while a live rollout
  holds it, that rollout serves the alias itself (or restores it); a dead one's lease
  lapses within ``LEASE_TTL_S`` (rollouts renew theirs every ``LEASE_HEARTBEAT_S``),
  and the next pass takes it.

``docs/reliability.md`` states the bound this gives and how it was measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from modelrail.domain.leases import Lease, Leases
from modelrail.domain.registry import Registry
from modelrail.kernel.errors import DeploymentFailed, LeaseHeld, ModelrailError, TransientError
from modelrail.kernel.ports import Deployer, Deployment
from modelrail.service.smoke import smoke_test

STAGING = "staging"
# Rollouts hold the staging lease with a heartbeat: renewed every LEASE_HEARTBEAT_S, it
# lapses LEASE_TTL_S after its holder died (a deploy killed mid-rollout), and the next
# rollout or reconciliation takes it over then, not after the longest rollout.
LEASE_TTL_S = 30.0
LEASE_HEARTBEAT_S = 5.0
# How long a delivery waits for the rollouts before it (a burst of registrations), then
# it is redelivered later instead. Its own rollout, and a restore if that fails, may
# then outlast the deploy subscription's 600 s ack deadline: Pub/Sub redelivers, and
# the redelivery waits on this lease, then finds the stage recorded or the alias past
# it. A holder frozen past its lease (a function whose request timed out) commits
# nothing: the deploy checks its lease before it moves the alias.
LEASE_WAIT_S = 300.0
# How often the loops look (one alias read and one "what do you serve" each).
RECONCILE_EVERY_S = 5.0
# Rounds of "deploy what the alias names, read it again" before giving up for now.
_MAX_ROUNDS = 3

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Convergence:
    """What one reconciliation found and did.

    ``status``: ``in_step`` (staging served what the alias names), ``converged`` (it
    did not, and now does), ``nothing_staged`` (no alias yet), ``deferred`` (a live
    rollout holds the lease; it will serve the alias itself) or ``failed`` (``detail``
    says why; the next pass tries again).
    """

    model: str
    status: str
    alias_version: int | None = None
    served_version: int | None = None  # before this pass
    deployment: Deployment | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "status": self.status,
            "alias_version": self.alias_version,
            "served_version": self.served_version,
            "revision": self.deployment.revision if self.deployment else None,
            "detail": self.detail,
        }


def _serves(deployment: Deployment | None, model: str, version: int) -> bool:
    return deployment is not None and (deployment.model, deployment.version) == (model, version)


def converge(
    model: str, *, registry: Registry, deployer: Deployer, alias_name: str = STAGING
) -> Convergence:
    """Serve what ``model``'s ``alias_name`` (staging's) names now. The caller holds its
    rollout lease. Raises ``IntegrityError`` when the alias's
    version fails its signature check (nothing is deployed), ``DeploymentFailed`` when
    its rollout fails, ``TransientError`` when the alias keeps moving."""
    served_before: int | None = None
    for round_number in range(_MAX_ROUNDS):
        alias = registry.alias(model, alias_name)
        current = deployer.current()
        if round_number == 0:
            served_before = current.version if current is not None else None
        if alias is None:
            return Convergence(model, "nothing_staged", None, served_before, current)
        if _serves(current, model, alias.version):
            status = "in_step" if round_number == 0 else "converged"
            return Convergence(model, status, alias.version, served_before, current)
        manifest = registry.signed_manifest(model, alias.version)
        log.warning(
            "%s serves %s, its alias names v%d: deploying v%d",
            alias_name,
            f"v{current.version}" if current is not None else "nothing",
            alias.version,
            alias.version,
        )
        deploy(deployer, model, alias.version, manifest.examples)
    raise TransientError(f"{model}@{alias_name} kept moving while {alias_name} was converged to it")


def deploy(
    deployer: Deployer, model: str, version: int, examples: Sequence[Mapping[str, Any]]
) -> Deployment:
    """Put ``version`` on staging: start a candidate, smoke-test it with ``examples``
    (from the version's verified manifest), then promote it. A candidate that fails is
    discarded (traffic stays on, or returns to, what served before it) and
    ``DeploymentFailed`` says what serves. The caller holds the rollout lease."""
    if not examples:
        raise DeploymentFailed(
            f"{model} v{version} has no examples in its manifest to smoke-test with"
        )
    candidate = deployer.start(model, version)
    try:
        smoke_test(candidate, examples)
    except DeploymentFailed as failed:
        kept = deployer.discard(candidate)
        raise DeploymentFailed(
            f"{failed.message}; {kept}", {**failed.details, "kept": kept}
        ) from failed
    except BaseException:  # interrupted: the candidate must not outlive this rollout
        with contextlib.suppress(Exception):
            deployer.discard(candidate)
        raise
    return deployer.promote(candidate)


def roll_out(
    model: str,
    version: int,
    *,
    registry: Registry,
    deployer: Deployer,
    alias_name: str = STAGING,
) -> Deployment:
    """Deploy ``version`` once its signed manifest checks out; on a failed deploy,
    restore what ``alias_name`` (staging's) names at that moment and raise
    ``DeploymentFailed`` saying what serves. The caller holds its rollout lease."""
    # IntegrityError: permanent, nothing ran.
    manifest = registry.signed_manifest(model, version)
    try:
        return deploy(deployer, model, version, manifest.examples)
    except DeploymentFailed as failed:
        try:
            restored = converge(model, registry=registry, deployer=deployer, alias_name=alias_name)
        except ModelrailError as exc:
            raise DeploymentFailed(
                f"{failed.message}; restoring what {alias_name}'s alias names failed too: {exc}",
                {**failed.details, "restore_failed": str(exc)},
            ) from failed
        if restored.alias_version is None:
            raise
        raise DeploymentFailed(
            f"{failed.message}; {alias_name} serves v{restored.alias_version}, "
            "what its alias names",
            {**failed.details, "restored_version": restored.alias_version},
        ) from failed


def stage_version(
    model: str,
    version: int,
    *,
    registry: Registry,
    deployer: Deployer,
    lease: Lease,
    force: bool = False,
) -> Deployment | Convergence:
    """Put ``version`` on staging and point the staging alias (Vertex AI's too, when
    the registry has a catalog) at it: the deploy stage's and an operator's rollback's one path. The
    caller holds the rollout ``lease``; one lost meanwhile (a renewal lost unseen let
    another rollout in) commits nothing (``LeaseLost``). Without ``force`` the alias only
    moves forward: when a newer version took it while this one rolled out, staging
    serves that one again, and what that convergence did is returned instead of the
    deployment. ``DeploymentFailed``, ``IntegrityError`` as ``roll_out``."""
    deployment = roll_out(model, version, registry=registry, deployer=deployer)
    lease.check()
    if registry.move_alias(model, STAGING, version, force=force):
        return deployment
    return converge(model, registry=registry, deployer=deployer)


class Reconciler:
    """Converges one model's staging (or the service of ``alias``) to its alias, pass
    after pass (``run``) or once (``reconcile``), under the alias's rollout lease taken
    without waiting."""

    def __init__(
        self,
        model: str,
        *,
        registry: Registry,
        leases: Leases,
        deployer: Deployer,
        holder: str | None = None,
        alias: str = STAGING,
    ) -> None:
        self.model = model
        self.alias = alias
        self.registry, self.leases, self.deployer = registry, leases, deployer
        self.holder = holder or f"reconcile:{socket.gethostname()}:{os.getpid()}"

    def reconcile(self) -> Convergence:
        """One pass; never raises for what the next pass may fix (``failed``)."""
        try:
            return self._reconcile()
        except ModelrailError as exc:
            log.warning("reconciling %s@%s failed: %s", self.model, self.alias, exc)
            return Convergence(self.model, "failed", detail=str(exc))

    def _reconcile(self) -> Convergence:
        alias = self.registry.alias(self.model, self.alias)
        current = self.deployer.current()
        served = current.version if current is not None else None
        if alias is None or _serves(current, self.model, alias.version):
            named = alias.version if alias is not None else None
            status = "nothing_staged" if alias is None else "in_step"
            return Convergence(self.model, status, named, served, current)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(
                    self.leases.hold(
                        self.model,
                        self.alias,
                        self.holder,
                        ttl_s=LEASE_TTL_S,
                        wait_s=0.0,
                        heartbeat_s=LEASE_HEARTBEAT_S,
                    )
                )
            except LeaseHeld as busy:  # a rollout in progress: it serves the alias itself
                return Convergence(
                    self.model, "deferred", alias.version, served, current, str(busy)
                )
            return converge(
                self.model, registry=self.registry, deployer=self.deployer, alias_name=self.alias
            )

    def run(self, stop: threading.Event, every_s: float = RECONCILE_EVERY_S) -> None:
        """Reconcile at once, then every ``every_s`` until ``stop`` is set."""
        while True:
            try:
                self.reconcile()
            except Exception:  # the loop outlives anything one pass meets
                log.exception("reconciling %s@%s", self.model, self.alias)
            if stop.wait(every_s):
                return
