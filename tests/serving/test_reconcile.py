"""Embedded mode's staging converges to the registry's staging alias by itself: the
supervisor's reconciliation loop repairs what a crash left (a deploy killed between
its switch and its alias move, a serving master killed), with no command run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import urllib3

from modelrail.adapters.by_mode import open_artifact_store
from modelrail.adapters.local.staging import LocalStagingDeployer
from modelrail.domain.registry import Registry
from modelrail.settings.process import Settings
from tests.conftest import wait_for
from tests.serving.conftest import deploy

from .conftest import MODEL, ROOT, RegisteredModels, free_port

pytestmark = pytest.mark.xdist_group("staging-servers")

# The deploy stage's lease, shortened for the test: a dead holder's lapses in 2 s.
_SHORT_LEASE = "deploy.LEASE_TTL_S, deploy.LEASE_HEARTBEAT_S = 2.0, 0.5\n"


@pytest.fixture
def home(models: RegisteredModels, tmp_path: Path) -> Path:
    """A home with its own copy of the fixture's buckets: this test moves aliases."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(models.root, home / "buckets", symlinks=True)
    (home / "keys").symlink_to(models.signer.path.parent)
    return home


@pytest.fixture
def deployer(home: Path) -> Iterator[LocalStagingDeployer]:
    settings = Settings.from_env(
        {
            "MODELRAIL_HOME": str(home),
            "MODELRAIL_TOPOLOGY": str(ROOT / "topology.yaml"),
            "MODELRAIL_STAGING_PORT": str(free_port()),
        }
    )
    deployer = LocalStagingDeployer(
        settings,
        MODEL,
        service_env={"MODELRAIL_WORKERS": "1"},
        reconcile_every_s=0.5,
    )
    yield deployer
    deployer.stop()


def _answers(url: str, count: int = 10) -> set[int]:
    """The versions ``count`` fresh connections are answered with (0: no answer)."""
    versions = set()
    for _ in range(count):
        try:
            answer = urllib3.request("GET", url + "/readyz", retries=False, timeout=5)
            versions.add(orjson.loads(answer.data)["version"] if answer.status == 200 else 0)
        except urllib3.exceptions.HTTPError:
            versions.add(0)
    return versions


def _deploy_and_die(deployer: LocalStagingDeployer, version: int) -> int:
    """Run the deploy stage for ``version`` in a process that is SIGKILLed right after
    its rollout switched staging, before it moves the alias; its exit status."""
    script = (
        "import os, signal\n"
        "from modelrail.composition.bootstrap import bootstrap\n"
        "from modelrail.settings.process import Settings\n"
        "from modelrail.kernel.events import ModelRegistered\n"
        "from modelrail.service.stages import deploy\n"
        + _SHORT_LEASE
        + "container = bootstrap(Settings.from_env())\n"
        "class DiesAfterTheSwitch:\n"
        "    def __init__(self, inner): self.inner = inner\n"
        "    def current(self): return self.inner.current()\n"
        "    def stop(self): pass\n"
        "    def start(self, model, version): return self.inner.start(model, version)\n"
        "    def discard(self, candidate): return self.inner.discard(candidate)\n"
        "    def promote(self, candidate):\n"
        "        self.inner.promote(candidate)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"event = ModelRegistered(run_id='run-{version}', causation_id='c', lineage={{}},\n"
        f"    model={MODEL!r}, version={version}, manifest_uri='m', manifest_sha256='0' * 64)\n"
        "deploy.handle(event, registry=container.registry,\n"
        "    leases=container.leases,\n"
        f"    deployer=DiesAfterTheSwitch(container.deployer_factory({MODEL!r})))\n"
    )
    env = {**os.environ, **deployer.settings.to_env()}
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=False).returncode


@pytest.mark.fault
@pytest.mark.parametrize("attempt", [1, 2])
def test_a_deploy_killed_between_its_switch_and_its_alias_move_is_undone(
    deployer: LocalStagingDeployer, attempt: int
) -> None:
    registry = Registry(open_artifact_store(deployer.settings))
    served = deploy(deployer, deployer.settings, 1)
    registry.move_alias(MODEL, "staging", 1)

    assert _deploy_and_die(deployer, 2) == -signal.SIGKILL
    assert registry.aliases(MODEL)["staging"] == 1

    wait_for(lambda: _answers(served.url) == {1}, "every answer to name v1, the alias's version")
    assert registry.aliases(MODEL)["staging"] == 1


@pytest.mark.fault
def test_a_killed_serving_master_is_replaced_with_the_alias_version(
    deployer: LocalStagingDeployer,
) -> None:
    registry = Registry(open_artifact_store(deployer.settings))
    served = deploy(deployer, deployer.settings, 2)
    registry.move_alias(MODEL, "staging", 2)

    def serving_master() -> int | None:
        """The serving server's master, once the supervisor names one (a pass of the
        reconciliation may be replacing it at any moment)."""
        current = deployer.servers().get("current")
        return int(current["pid"]) if current else None

    wait_for(lambda: serving_master() is not None, "a server to serve")
    master = serving_master()
    assert master is not None

    os.kill(master, signal.SIGKILL)

    wait_for(lambda: _answers(served.url) == {2}, "staging to serve v2 again")
    wait_for(lambda: serving_master() not in (None, master), "another master to serve")
    current = deployer.current()
    assert current is not None
    assert current.version == 2
