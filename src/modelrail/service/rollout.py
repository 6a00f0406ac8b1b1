"""A production rollout, in canary steps (``[production.canary]``, ``domain.rollout``).

The candidate revision is started and smoke-tested as staging's are; then, for each
step but the last, the deployer splits new traffic between it and the current revision
(``Splitting.split``: the local supervisor counts each server's answers) and the step
is held for ``hold_s`` or until the candidate answered ``min_requests``; what each
revision answered meanwhile is compared (``domain.rollout.breach``). A breach, a server
that died, or anything else that ends the rollout early discards the candidate: all the
traffic goes back to the old revision, and ``DeploymentFailed`` carries every step with
its numbers. After the last judged step the candidate is promoted (100 %).

The process that carries out the approval drives the steps, holding production's
rollout lease throughout. Locally that is ``modelrail approve``, also holding the
rollout's connection to the supervisor: should it die, the supervisor gives the
traffic back to the old revision and the lease lapses (``reconcile.LEASE_TTL_S``), so
no split is left half-done. In the cloud it is the sweep (a Cloud Run job every 10
minutes), which holds every step within one pass: the split is Cloud Run's traffic by
revision percentages and the numbers Cloud Monitoring's (``CloudRunDeployer``), so its
job's timeout must exceed the steps' holds; should the execution die mid-rollout, the
split stays until the next pass carries the approved proposal out again from its
first step (its new candidate starts with the traffic pinned back on the serving
revision).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from modelrail.domain.promotion import PRODUCTION
from modelrail.domain.registry import Registry
from modelrail.domain.rollout import CanaryPolicy, Shift, Window, breach
from modelrail.kernel.errors import DeploymentFailed, IntegrityError, ModelrailError
from modelrail.kernel.events import utcnow
from modelrail.kernel.ports import Candidate, Deployer, Deployment
from modelrail.service.reconcile import converge, roll_out
from modelrail.service.smoke import smoke_test

# How often a held step reads the counts.
_POLL_S = 0.2
# What a rollout takes beside its holds, at most: the candidate revision started and
# smoke-tested (Cloud Run's rollout deadline is 240 s), each traffic move.
ROLLOUT_OVERHEAD_S = 300.0

Steps = list[dict[str, Any]]


@runtime_checkable
class Splitting(Protocol):
    """A deployer that can split new traffic between a candidate and the current
    revision, and say what each answered since (the local supervisor; Cloud Run's
    traffic by revision, with Cloud Monitoring's numbers)."""

    def split(self, candidate: Candidate, percent: float) -> None: ...

    def observe(self, candidate: Candidate) -> dict[str, Any]: ...


def roll_out_production(
    model: str,
    version: int,
    *,
    registry: Registry,
    deployer: Deployer,
    policy: CanaryPolicy,
    on_step: Callable[[Steps], None] = lambda steps: None,
    before_promote: Callable[[], None] = lambda: None,
    shift: ShiftReader | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Deployment, Steps]:
    """Put ``version`` on production in ``policy``'s steps (at once, as staging is, with
    one step or when production serves nothing yet); the deployment and the steps
    taken. ``DeploymentFailed`` (its ``details["steps"]``: the steps, the breach among
    them) leaves production serving what its alias names. The caller holds production's
    rollout lease; ``before_promote`` (its check) runs before a canary gets all the
    traffic, so a rollout that lost its lease gives the traffic back instead. ``shift``
    reads how the new version's logged predictions differ from the served one's over a
    step (``service.monitoring.prediction_shift``); without it steps are judged on their
    answers alone."""
    served = deployer.current()
    if len(policy.steps) == 1 or served is None:  # nothing to compare with
        deployment = roll_out(
            model, version, registry=registry, deployer=deployer, alias_name=PRODUCTION
        )
        return deployment, [{"percent": 100.0, "started_at": utcnow()}]
    if not isinstance(deployer, Splitting):
        raise DeploymentFailed(
            f"{model}'s production service cannot split traffic: set [production.canary] "
            "steps = [100] for it"
        )
    manifest = registry.signed_manifest(model, version)  # IntegrityError: nothing ran
    judge = _Judge(policy, served.version, shift, clock, sleep)
    try:
        return _canary(deployer, model, version, manifest.examples, judge, on_step, before_promote)
    except DeploymentFailed:
        # The old revision has the traffic back; should it have died meanwhile,
        # production serves what its alias names again.
        with contextlib.suppress(DeploymentFailed, IntegrityError):
            converge(model, registry=registry, deployer=deployer, alias_name=PRODUCTION)
        raise


class ShiftReader(Protocol):
    """Reads how version ``new``'s logged predictions over [``since``, ``until``)
    differ from version ``old``'s."""

    def __call__(self, old: int, new: int, since: datetime, until: datetime) -> Shift: ...


@dataclasses.dataclass(frozen=True)
class _Judge:
    """How each step is held and judged: the policy, the version production served,
    where the predictions' shift is read, the clock."""

    policy: CanaryPolicy
    served: int
    shift: ShiftReader | None
    clock: Callable[[], float]
    sleep: Callable[[float], None]


def _canary(
    deployer: Any,
    model: str,
    version: int,
    examples: Sequence[Mapping[str, Any]],
    judge: _Judge,
    on_step: Callable[[Steps], None],
    before_promote: Callable[[], None],
) -> tuple[Deployment, Steps]:
    steps: Steps = []
    candidate = deployer.start(model, version)
    try:
        smoke_test(candidate, examples)
        for percent in judge.policy.steps[:-1]:
            step = _hold(deployer, candidate, percent, judge)
            steps.append(step)
            on_step(steps)
            if step["breach"] is not None:
                raise DeploymentFailed(
                    f"v{version} breached at {percent:g} % of production's traffic: "
                    f"{step['breach']}; the old revision has all the traffic again",
                    {"steps": steps},
                )
        before_promote()
        deployment: Deployment = deployer.promote(candidate)
    except DeploymentFailed as failed:
        with contextlib.suppress(DeploymentFailed, OSError):
            deployer.discard(candidate)
        raise DeploymentFailed(failed.message, {**failed.details, "steps": steps}) from failed
    except BaseException:  # interrupted: the candidate must not outlive this rollout
        with contextlib.suppress(Exception):
            deployer.discard(candidate)
        raise
    steps.append({"percent": 100.0, "started_at": utcnow()})
    on_step(steps)
    return deployment, steps


def _hold(deployer: Any, candidate: Candidate, percent: float, judge: _Judge) -> dict[str, Any]:
    """One step: split, hold, judge."""
    policy = judge.policy
    since = datetime.now(UTC)  # the step's log window, from its split on
    deployer.split(candidate, percent)
    started_at, deadline = utcnow(), judge.clock() + policy.hold_s
    while True:
        seen = deployer.observe(candidate)
        if seen["exited"]:
            raise DeploymentFailed(
                f"production's {', '.join(seen['exited'])} died at {percent:g} % of the "
                "traffic: the rollout is failed"
            )
        new = Window.from_json(seen["new"])
        if new.requests >= policy.min_requests or judge.clock() >= deadline:
            break
        judge.sleep(_POLL_S)
    old = Window.from_json(seen["old"])
    step: dict[str, Any] = {
        "percent": percent,
        "started_at": started_at,
        "ended_at": utcnow(),
        "old": old.to_json(),
        "new": new.to_json(),
    }
    shift = None
    if judge.shift is not None:
        try:
            shift = judge.shift(judge.served, candidate.version, since, datetime.now(UTC))
        except ModelrailError as exc:  # judged on its answers alone, saying why
            step["predictions"] = {"unread": str(exc)}
        else:
            step["predictions"] = shift.to_json(policy)
    step["breach"] = breach(old, new, policy, shift)
    return step
