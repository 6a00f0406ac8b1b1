"""A production canary on the local supervisor: a new revision that dies mid-step is
a failed rollout that says so, never a split left half-done: the old server has all
the traffic again and no process of the dead one remains."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.adapters.local.staging import PRODUCTION, LocalStagingDeployer
from modelrail.domain.rollout import CanaryPolicy
from modelrail.kernel.errors import DeploymentFailed
from modelrail.service.rollout import roll_out_production
from modelrail.settings.process import Settings
from tests.conftest import STATE_DEADLINE_S, wait_for
from tests.serving.conftest import deploy
from tests.serving.test_deployer import _candidate_pid, _group_alive, _served_version

from .conftest import MODEL, ROOT, RegisteredModels, free_port, link_buckets

pytestmark = pytest.mark.xdist_group("staging-servers")


@pytest.fixture
def production(models: RegisteredModels, tmp_path: Path) -> Iterator[LocalStagingDeployer]:
    home = tmp_path / "home"
    link_buckets(models, home)
    settings = Settings.from_env(
        {
            "MODELRAIL_HOME": str(home),
            "MODELRAIL_TOPOLOGY": str(ROOT / "topology.yaml"),
            "MODELRAIL_PRODUCTION_PORT": str(free_port()),
        }
    )
    deployer = LocalStagingDeployer(
        settings, MODEL, role=PRODUCTION, service_env={"MODELRAIL_WORKERS": "2"}
    )
    yield deployer
    deployer.stop()


@pytest.mark.fault
def test_a_canary_that_dies_mid_step_fails_the_rollout_and_the_old_server_serves(
    production: LocalStagingDeployer, models: RegisteredModels
) -> None:
    first = deploy(production, production.settings, 1)
    # Held until it answers more than it ever will: the step lasts until the kill.
    policy = CanaryPolicy(steps=(10.0, 100.0), hold_s=STATE_DEADLINE_S, min_requests=10**9)
    failures: list[BaseException] = []

    def roll_out() -> None:
        try:
            roll_out_production(
                MODEL, 2, registry=models.registry, deployer=production, policy=policy
            )
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=roll_out)
    thread.start()
    wait_for(lambda: production.servers().get("split") == 10.0, "the canary's step")
    canary = _candidate_pid(production)
    assert canary is not None
    os.kill(canary, signal.SIGKILL)
    thread.join(STATE_DEADLINE_S)

    [failure] = failures
    assert isinstance(failure, DeploymentFailed)
    assert "died at 10 % of the traffic" in failure.message
    wait_for(lambda: not _group_alive(canary), "no process of the dead canary")
    assert production.servers()["candidate"] is None
    assert production.current() == first
    assert _served_version(first.url) == 1
