"""Rollouts of one staging service happen one at a time (the registry's lease): a burst
of registrations waits its turn, none is refused, and staging ends on the newest."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain.leases import Leases
from modelrail.domain.registry import Registry
from modelrail.kernel.errors import TransientError
from modelrail.kernel.events import ModelRegistered
from modelrail.kernel.ports import Candidate, Deployment
from modelrail.service.stages import Outcome, deploy
from tests.fakes import FakeDeployer, InMemoryStore
from tests.manifests import describe

MODEL = "penguins"


class OverlapCountingDeployer(FakeDeployer):
    """Deploys slowly enough for rollouts to overlap, and counts whether they did: a
    rollout is active from its candidate's start to its promotion or discard."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def start(self, model: str, version: int) -> Candidate:
        with self._lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(0.05)  # a rollout in progress, so that others would overlap it
        return super().start(model, version)

    def promote(self, candidate: Candidate) -> Deployment:
        with self._lock:
            self.active -= 1
            return super().promote(candidate)

    def discard(self, candidate: Candidate) -> str:
        with self._lock:
            self.active -= 1
        return super().discard(candidate)


@pytest.fixture
def signer(tmp_path: Path) -> LocalManifestSigner:
    return LocalManifestSigner(tmp_path / "key.pem")


@pytest.fixture
def registry(signer: LocalManifestSigner) -> Registry:
    registry = Registry(InMemoryStore("artifacts"), signer=signer)
    for version in range(1, 7):
        files = {"model.txt": b"tree %d" % version}
        run_id = f"run-{version}"
        examples = describe(MODEL, run_id, examples=[{"island": "Dream"}])
        registry.register(MODEL, run_id, lambda _, f=files: f, examples)
    registry.move_alias(MODEL, deploy.STAGING, 1)
    return registry


def registered(version: int) -> ModelRegistered:
    return ModelRegistered(
        run_id=f"run-{version}", causation_id=f"evaluated-{version}", lineage={},
        model=MODEL, version=version, manifest_uri="memory://m", manifest_sha256="0" * 64,
    )  # fmt: skip


@pytest.mark.fault
def test_a_burst_of_registrations_rolls_out_one_at_a_time_and_ends_on_the_newest(
    registry: Registry, signer: LocalManifestSigner
) -> None:
    deployer = OverlapCountingDeployer()

    def deliver(version: int) -> Outcome:
        return deploy.handle(
            registered(version), registry=registry, leases=Leases(registry.store), deployer=deployer
        )

    with ThreadPoolExecutor(max_workers=5) as pool:
        outcomes = list(pool.map(deliver, range(2, 7)))

    assert deployer.most_at_once == 1
    versions = [deployment.version for deployment in deployer.deployed]
    assert versions == sorted(versions)  # staging never moved back
    assert versions[-1] == 6
    assert registry.aliases(MODEL)[deploy.STAGING] == 6
    # Every delivery ends with an outcome: deployed, or overtaken by a newer version.
    deployed = {o.output["revision"] for o in outcomes if o.status == "succeeded"}
    assert deployed == {f"rev-{v}" for v in versions}
    skipped = [o.output["reason"] for o in outcomes if o.status == "skipped"]
    assert len(deployed) + len(skipped) == 5
    assert all(reason.startswith("staging already serves v") for reason in skipped)


@pytest.mark.fault
def test_a_lease_past_its_expiry_is_taken_over(registry: Registry) -> None:
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    held = Leases(registry.store).hold(MODEL, "staging", "died", ttl_s=60, wait_s=0, clock=clock)
    held.__enter__()  # its holder dies without releasing it

    with (
        pytest.raises(TransientError, match="held by died"),
        Leases(registry.store).hold(MODEL, "staging", "next", ttl_s=60, wait_s=0, clock=clock),
    ):
        pass
    now[0] += 61
    with Leases(registry.store).hold(MODEL, "staging", "next", ttl_s=60, wait_s=0, clock=clock):
        taken = orjson.loads(registry.store.read("models/penguins/leases/staging.json").data)
    assert (taken["holder"], taken["expires_at"]) == ("next", 1121.0)


def test_a_waiting_delivery_gets_the_lease_when_it_is_released(registry: Registry) -> None:
    released = threading.Event()
    order: list[str] = []

    def first() -> None:
        with Leases(registry.store).hold(MODEL, "staging", "first", ttl_s=60, wait_s=0):
            order.append("first")
            released.wait(timeout=30)

    holder = threading.Thread(target=first)
    holder.start()
    while not order:  # the first holds the lease
        time.sleep(0.01)
    threading.Timer(0.2, released.set).start()
    with Leases(registry.store).hold(MODEL, "staging", "second", ttl_s=60, wait_s=60):
        # In only once the first released it, not beside it.
        order.append(f"second, the first released: {released.is_set()}")
    holder.join()

    assert order == ["first", "second, the first released: True"]


def test_a_holder_that_outlived_its_lease_does_not_release_its_successors(
    registry: Registry,
) -> None:
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    with Leases(registry.store).hold(MODEL, "staging", "slow", ttl_s=60, wait_s=0, clock=clock):
        now[0] += 61
        successor = Leases(registry.store).hold(
            MODEL, "staging", "successor", ttl_s=60, wait_s=0, clock=clock
        )
        successor.__enter__()
    # "slow" has left its block: the successor's lease still stands.
    with (
        pytest.raises(TransientError, match="held by successor"),
        Leases(registry.store).hold(MODEL, "staging", "third", ttl_s=60, wait_s=0, clock=clock),
    ):
        pass


class FailingRestore(FakeDeployer):
    """Serves v1 (a crash left it behind the alias), and every rollout fails its smoke test."""

    def __init__(self) -> None:
        super().__init__(fail_versions=frozenset(range(1, 100)))
        self.promote(FakeDeployer().start(MODEL, 1))


def test_a_late_deploy_whose_repair_fails_is_skipped_not_failed(
    registry: Registry, signer: LocalManifestSigner
) -> None:
    """The run's own event redelivered after its alias moved: staging should serve v2,
    a crash left v1 and the repair fails. That failure is the alias's, for the next
    reconciliation to retry: the deployed run is not recorded failed for it."""
    registry.move_alias(MODEL, deploy.STAGING, 2)

    outcome = deploy.handle(
        registered(2), registry=registry, leases=Leases(registry.store), deployer=FailingRestore()
    )

    assert outcome.status == "skipped"
    assert outcome.output["convergence"].startswith("failed: smoke test of penguins v2")


def test_a_renewal_answered_with_an_error_after_it_committed_keeps_the_lease(
    registry: Registry,
) -> None:
    """A heartbeat whose write committed but whose answer was lost (a timeout after
    the commit) still holds the lease: nobody else takes it while the holder works."""
    store = registry.store
    write = store.write
    lost_once = threading.Event()

    def answer_lost_after_commit(key: str, data: bytes, **kwargs: object) -> int:
        generation = write(key, data, **kwargs)  # type: ignore[arg-type]
        renewal = key.endswith("leases/staging.json") and b'"released"' not in data
        first = renewal and not lost_once.is_set()
        if first and kwargs.get("if_generation_match") not in (None, 0):
            lost_once.set()
            raise TimeoutError("the answer was lost after the write committed")
        return generation

    store.write = answer_lost_after_commit  # type: ignore[method-assign]
    # A ttl twenty beats long: a busy machine may delay a beat, not twenty.
    with Leases(registry.store).hold(
        MODEL, "staging", "first", ttl_s=2.0, wait_s=0, heartbeat_s=0.1
    ) as lease:
        assert lost_once.wait(timeout=30)
        deadline = time.monotonic() + 4.0  # two ttls: a stopped heartbeat lets the lease lapse
        while time.monotonic() < deadline:
            time.sleep(0.05)  # polling interval: the lease must stay held throughout
            with (
                pytest.raises(TransientError, match="held by first"),
                Leases(registry.store).hold(MODEL, "staging", "second", ttl_s=60, wait_s=0),
            ):
                pass
        lease.check()
