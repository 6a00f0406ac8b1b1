"""The cloud's path to convergence: the service layer's use cases (``reconcile``) and
the deploy stage over the unchanged ``CloudRunDeployer``, against the local control
plane served in this process (its backend the stand-in staging server of
``test_cloud_run``). The registry's versions are signed, as register signs them."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from modelrail.adapters.google.cloudrun import CloudRunDeployer
from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain.leases import Leases
from modelrail.domain.registry import Registry
from modelrail.kernel.errors import DeploymentFailed, IntegrityError
from modelrail.kernel.events import ModelRegistered
from modelrail.kernel.ports import Candidate
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.service.reconcile import Reconciler, roll_out
from modelrail.service.stages import deploy
from tests.integration.test_cloud_run import (
    EXAMPLES,
    MODEL,
    PROJECT,
    REGION,
    SERVICE,
    StandInStaging,
    control_plane,
    staging,
)
from tests.integration.test_cloud_run import (
    deploy as deploy_version,
)
from tests.manifests import describe

__all__ = ["control_plane", "staging"]  # the fixtures, shared with test_cloud_run


@pytest.fixture
def signer(tmp_path: Path) -> LocalManifestSigner:
    return LocalManifestSigner(tmp_path / "keys" / "signing.pem")


@pytest.fixture
def registry(tmp_path: Path, signer: LocalManifestSigner) -> Registry:
    registry = Registry(FilesystemStore(tmp_path / "buckets", "artifacts"), signer=signer)
    for version in (1, 2, 3):
        files = {"model.txt": b"tree %d" % version}
        run_id = f"run-{version}"
        registry.register(
            MODEL, run_id, lambda _, f=files: f, describe(MODEL, run_id, examples=EXAMPLES),
        )  # fmt: skip
    return registry


@pytest.fixture
def deployer(control_plane: tuple[ControlPlane, str], registry: Registry) -> CloudRunDeployer:
    return CloudRunDeployer(PROJECT, REGION, SERVICE, control_plane[1])


def registered(version: int) -> ModelRegistered:
    return ModelRegistered(
        run_id=f"run-{version}", causation_id=f"evaluated-{version}", lineage={},
        model=MODEL, version=version, manifest_uri="m", manifest_sha256="0" * 64,
    )  # fmt: skip


def _deploy(
    version: int, registry: Registry, deployer: CloudRunDeployer, signer: LocalManifestSigner
) -> object:
    leases = Leases(registry.store)
    return deploy.handle(registered(version), registry=registry, leases=leases, deployer=deployer)


@pytest.mark.fault
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_a_failed_rollout_restores_what_the_alias_names_then_not_what_it_saw_at_its_start(
    registry: Registry,
    deployer: CloudRunDeployer,
    staging: StandInStaging,
    signer: LocalManifestSigner,
    attempt: int,
) -> None:
    """v2's smoke test fails; while it rolled out, staging's alias moved on to v3 (a
    rollout that took the lease over). The restore serves v3, not v1's revision."""
    _deploy(1, registry, deployer, signer)
    staging.broken.add(2)
    started = staging.start

    def alias_moves_meanwhile(model: str, version: int) -> Candidate:
        if version == 2:
            registry.move_alias(MODEL, "staging", 3)
        return started(model, version)

    staging.start = alias_moves_meanwhile  # type: ignore[method-assign]

    with pytest.raises(DeploymentFailed, match="serves v3"):
        _deploy(2, registry, deployer, signer)

    assert registry.aliases(MODEL)["staging"] == 3
    assert staging.serving == (MODEL, 3)
    current = deployer.current()
    assert current is not None
    assert current.version == 3


@pytest.mark.fault
def test_a_tampered_version_is_refused_before_any_rollout(
    registry: Registry,
    deployer: CloudRunDeployer,
    staging: StandInStaging,
    signer: LocalManifestSigner,
) -> None:
    _deploy(1, registry, deployer, signer)
    registry.move_alias(MODEL, "staging", 1)
    key = f"models/{MODEL}/versions/2/manifest.json"
    registry.store.write(key, registry.store.read(key).data.replace(b"tree", b"TREE", 1) + b" ")

    with pytest.raises(IntegrityError, match="v2"):
        _deploy(2, registry, deployer, signer)
    with pytest.raises(IntegrityError):
        roll_out(MODEL, 2, registry=registry, deployer=deployer)

    assert staging.deploys == [1]  # nothing rolled out
    assert staging.serving == (MODEL, 1)


@pytest.mark.fault
def test_an_unsigned_version_is_refused_with_the_reason(
    registry: Registry,
    deployer: CloudRunDeployer,
    staging: StandInStaging,
    signer: LocalManifestSigner,
    tmp_path: Path,
) -> None:
    (tmp_path / "buckets" / "artifacts" / f"models/{MODEL}/versions/2/manifest.sig").unlink()

    with pytest.raises(IntegrityError, match="no signature"):
        _deploy(2, registry, deployer, signer)
    assert staging.deploys == []


@pytest.mark.fault
@pytest.mark.parametrize("attempt", [1, 2])
def test_the_reconciler_converges_the_service_to_the_alias(
    registry: Registry,
    deployer: CloudRunDeployer,
    staging: StandInStaging,
    signer: LocalManifestSigner,
    attempt: int,
) -> None:
    """A deploy that died after its rollout, before its alias move: the service serves
    v2, the alias names v1. While a live rollout holds the lease the reconciler leaves
    it alone; once the lease is free it converges, through the Cloud Run API."""
    _deploy(1, registry, deployer, signer)
    deploy_version(deployer, 2)  # the dead deploy's rollout
    leases = Leases(registry.store)
    reconciler = Reconciler(MODEL, registry=registry, leases=leases, deployer=deployer)

    with leases.hold(MODEL, "staging", "a live rollout", ttl_s=60, wait_s=0):
        assert reconciler.reconcile().status == "deferred"
    assert staging.serving == (MODEL, 2)

    outcome = reconciler.reconcile()

    assert (outcome.status, outcome.alias_version, outcome.served_version) == ("converged", 1, 2)
    assert staging.serving == (MODEL, 1)
    current = deployer.current()
    assert current is not None
    assert current.version == 1
    assert reconciler.reconcile().status == "in_step"


@pytest.mark.fault
def test_a_lease_left_by_a_killed_deploy_lapses_and_the_reconciler_takes_it(
    registry: Registry,
    deployer: CloudRunDeployer,
    staging: StandInStaging,
    signer: LocalManifestSigner,
) -> None:
    _deploy(1, registry, deployer, signer)
    deploy_version(deployer, 2)
    # What a killed holder leaves: a lease nobody renews, past its expiry.
    lease = f"models/{MODEL}/leases/staging.json"
    registry.store.write(
        lease,
        b'{"holder": "killed", "taken_at": 0, "expires_at": 1}',
        if_generation_match=registry.store.read(lease).generation,
    )

    leases = Leases(registry.store)
    outcome = Reconciler(MODEL, registry=registry, leases=leases, deployer=deployer).reconcile()

    assert outcome.status == "converged"
    assert staging.serving == (MODEL, 1)


@pytest.mark.fault
def test_the_control_plane_puts_its_ready_revision_back_when_the_server_died(
    control_plane: tuple[ControlPlane, str],
    deployer: CloudRunDeployer,
    staging: StandInStaging,
) -> None:
    plane = control_plane[0]
    deploy_version(deployer, 1)
    deploy_version(deployer, 2)
    staging.stop()  # the staging server (or its supervisor) died

    plane.keep_serving()

    assert staging.serving == (MODEL, 2)
    assert staging.deploys == [1, 2, 2]
    plane.keep_serving()  # in step: nothing to do
    assert staging.deploys == [1, 2, 2]


@pytest.mark.fault
def test_a_rollout_cut_short_by_a_restart_is_failed_and_the_ready_revision_serves(
    control_plane: tuple[ControlPlane, str],
    deployer: CloudRunDeployer,
    staging: StandInStaging,
    tmp_path: Path,
) -> None:
    deploy_version(deployer, 1)
    staging.held.add(2)
    rollout = threading.Thread(target=lambda: _ignore_errors(deployer, 2), daemon=True)
    rollout.start()
    try:
        deadline = time.monotonic() + 60
        while staging.deploys[-1:] != [2] and time.monotonic() < deadline:
            time.sleep(0.02)  # polling for the rollout to begin
        # The control plane dies here: its state file says the rollout is in progress.
        restarted = ControlPlane(
            project=PROJECT, region=REGION,
            services=lambda short: (MODEL, staging.url) if short == SERVICE else None,
            backend=lambda model: staging, job_command=["true"], job_env={},
            state_dir=tmp_path / "stack",
        )  # fmt: skip
    finally:
        staging.release.set()
        rollout.join(60)
    staging.serving = None  # the restart found nothing serving
    service = restarted.get_service(deployer.service_name)

    assert service["reconciling"] is False
    assert service["terminalCondition"]["state"] == "CONDITION_FAILED"
    restarted.keep_serving()
    assert staging.serving == (MODEL, 1)


def _ignore_errors(deployer: CloudRunDeployer, version: int) -> None:
    with contextlib.suppress(Exception):  # the rollout's outcome is not what is checked
        deploy_version(deployer, version)


@pytest.mark.fault
def test_a_control_plane_that_does_not_answer_is_a_transient_error_within_the_timeout() -> None:
    """An API endpoint that accepts connections and never answers (a paused control
    plane): each call gives up at its timeout, as a transient error (redelivered)."""
    import socket

    from modelrail.kernel.errors import TransientError

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        deployer = CloudRunDeployer(PROJECT, REGION, SERVICE, endpoint, call_timeout_s=1.0)
        started = time.monotonic()

        with pytest.raises(TransientError, match="reading service"):
            deployer.current()

    assert time.monotonic() - started < 30  # the 1 s timeout, not a hang
