"""Production's canary on Cloud Run's API: the unchanged ``CloudRunDeployer`` (its
traffic split by revision percentages, Cloud Run Admin API v2) against the local
control plane, which splits new connections between the two revisions' servers (the
local production supervisor), and the per-revision numbers read from Cloud Monitoring's
``request_count`` and ``request_latencies`` (``CloudMonitoringMetrics``), which the
control plane answers from its counts. v1 in production; v2 (a server built to answer
500 to some rows) takes 10 % and breaches: the traffic goes back to v1 and the outcome
records the numbers; a healthy v3 then goes to 100 %. Traffic runs throughout, and
every answer names a version the records say was serving then."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.adapters.google.cloudrun import CANARY_TAG, CloudRunDeployer
from modelrail.adapters.google.monitoring import CloudMonitoringMetrics
from modelrail.adapters.local.staging import PRODUCTION, LocalStagingDeployer
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.promotion import Promotions
from modelrail.domain.rollout import CanaryPolicy
from modelrail.kernel.ports import Deployment
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.localcloud.emulators import free_port
from modelrail.service.container import Container
from modelrail.settings.process import Settings
from tests.conftest import installed, settings_env
from tests.e2e.test_canary import (
    Traffic,
    _every_answer_names_what_served,
    _healthy_v3_reaches_100,
    _promote,
    _retrain,
    _upload,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-canary")]

PROJECT, REGION, MODEL = "proj-local", "europe-west1", "penguins"
SERVICE = f"modelrail-production-{MODEL}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        settings_env(
            tmp_path / "home",
            MODELRAIL_STAGING_PORT=str(free_port()),
            MODELRAIL_PRODUCTION_PORT=str(free_port()),
        )
    )


@pytest.fixture
def production(settings: Settings) -> Iterator[LocalStagingDeployer]:
    backend = LocalStagingDeployer(
        settings,
        MODEL,
        role=PRODUCTION,
        server_module="tests.e2e.faulty_server",
        service_env={"MODELRAIL_TEST_FAULTY_VERSION": "2"},
    )
    yield backend
    backend.stop()


@pytest.fixture
def endpoint(
    tmp_path: Path, production: LocalStagingDeployer
) -> Iterator[tuple[ControlPlane, str]]:
    plane = ControlPlane(
        project=PROJECT,
        region=REGION,
        services=lambda short: (MODEL, production.url) if short == SERVICE else None,
        backend=lambda short: production,
        job_command=["true"],
        job_env={},
        state_dir=tmp_path / "stack",
    )
    port = free_port()
    server = plane.server(port)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    yield plane, f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    plane.close(10)  # a canary a failed test left running included


@pytest.fixture
def container(settings: Settings, endpoint: tuple[ControlPlane, str]) -> Container:
    url = endpoint[1]
    container = installed(
        bootstrap(
            settings,
            production_factory=lambda model: CloudRunDeployer(
                PROJECT,
                REGION,
                SERVICE,
                url,
                metrics=CloudMonitoringMetrics(PROJECT, url),
                observe_every_s=1.0,
            ),
        )
    )
    # Judged on errors (latency's judgement: tests/unit/test_rollout_policy.py).
    policy = CanaryPolicy(steps=(10.0, 100.0), hold_s=120.0, min_requests=20, p99_slack_ms=5000)
    container.__dict__["config"] = dataclasses.replace(container.config, canary=policy)
    return container


def _rolled_back(container: Container, plane: ControlPlane, kept: Deployment) -> None:
    """v2's step breached on errors, and all the traffic is on ``kept`` again."""
    [*_, v2] = Promotions(container.artifacts).history(MODEL)
    [step] = v2["outcome"]["steps"]
    assert step["percent"] == 10.0
    assert "error rate" in step["breach"]
    assert step["new"]["errors"] > 0
    assert step["old"]["errors"] == 0
    assert container.registry.aliases(MODEL)["production"] == 1
    service = plane.get_service(plane.resource_name("services", SERVICE))
    [back] = service["traffic"]
    assert (back["revision"], back["percent"]) == (kept.revision, 100)
    # The API calls the canary made: the smoke test at the tag's URL, the metrics.
    assert ("GET", f"/v3/projects/{PROJECT}/timeSeries") in plane.requests
    assert any(path.startswith(f"/tags/{SERVICE}/{CANARY_TAG}/") for _, path in plane.requests)


@pytest.mark.fault
def test_a_breaching_canary_on_cloud_run_rolls_back_and_a_healthy_one_reaches_100(
    settings: Settings, endpoint: tuple[ControlPlane, str], container: Container,
    penguins_csv: bytes,
) -> None:  # fmt: skip
    traffic = None
    try:
        _upload(container, settings.data_bucket, penguins_csv)
        assert _promote(container, "v1")[2] == "succeeded"
        current = container.production_deployer.current()
        assert current is not None
        assert current.version == 1
        traffic = Traffic(current.url)
        traffic.thread.start()

        _retrain(container, "second")
        v2_start, _, v2_status = _promote(container, "v2")

        assert v2_status == "failed"
        _rolled_back(container, endpoint[0], current)
        # Again: the service's template is v2's already, and a new revision is made.
        _, v2_end, v2_status = _promote(container, "v2 again")
        assert v2_status == "failed"
        _rolled_back(container, endpoint[0], current)

        v3_window, v3 = _healthy_v3_reaches_100(container, traffic)
        judged = v3["outcome"]["steps"][0]
        assert judged["new"]["requests"] >= 1
        # request_latencies' p99 of each revision, read as Cloud Monitoring gives it
        assert judged["new"]["p99_ms"] is not None
        assert judged["old"]["p99_ms"] is not None
        served = container.production_deployer.current()
        assert served is not None
        assert (served.version, served.revision) == (3, v3["outcome"]["revision"])
        _every_answer_names_what_served(traffic, (v2_start, v2_end), v3_window)
    finally:
        if traffic is not None:
            traffic.stop.set()
        container.deployer.stop()


@pytest.mark.fault
def test_a_canary_left_at_half_the_traffic_is_undone_by_the_next_rollout(
    endpoint: tuple[ControlPlane, str], container: Container, settings: Settings,
    penguins_csv: bytes,
) -> None:  # fmt: skip
    """A sweep that died with v2 at 50 % left the split (Cloud Run keeps it): the next
    pass (a new deployer) gives the old revision all the traffic back, then starts its
    own canary, which splits and is discarded as any."""
    plane, url = endpoint
    name = plane.resource_name("services", SERVICE)
    try:
        _upload(container, settings.data_bucket, penguins_csv)
        assert _promote(container, "v1")[2] == "succeeded"
        _retrain(container, "second")
        kept = container.production_deployer.current()
        assert kept is not None
        left = container.production_deployer.start(MODEL, 2)
        container.production_deployer.split(left, 50)  # ... and the pass dies here
        assert sorted(t["percent"] for t in plane.get_service(name)["traffic"]) == [50, 50]

        again = CloudRunDeployer(
            PROJECT, REGION, SERVICE, url, metrics=CloudMonitoringMetrics(PROJECT, url)
        )
        candidate = again.start(MODEL, 2)

        assert candidate.revision != left.revision
        again.split(candidate, 10)
        shares = {t["revision"]: t["percent"] for t in plane.get_service(name)["traffic"]}
        assert shares == {candidate.revision: 10, kept.revision: 90}
        again.discard(candidate)
        [back] = plane.get_service(name)["traffic"]
        assert (back["revision"], back["percent"]) == (kept.revision, 100)
    finally:
        container.deployer.stop()
