"""The Cloud Run adapters against the local control plane, over the real REST API.

``CloudRunJobLauncher`` and ``CloudRunDeployer`` are the unchanged cloud adapters (the
google-cloud-run client, REST transport, anonymous credentials); the control plane is
served in-process on a free port. Its service backend here is a stand-in staging
server whose behaviour per version the tests choose (serves, serves the wrong model,
never becomes ready, takes a while, never finishes), and its job command a tiny Python
program, so these tests need neither the training stack nor a staging server.

The deployer waits for a rollout by polling the service, never the operation (reading
an operation needs a project-level permission the deploy account does not hold); the
control plane records request paths, so the tests check that too.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from modelrail.adapters.google.cloudrun import CloudRunDeployer, CloudRunJobLauncher
from modelrail.kernel.errors import DeploymentFailed, TransientError
from modelrail.kernel.ports import Candidate, Deployment
from modelrail.kernel.processes import wait_until
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.localcloud.emulators import free_port
from modelrail.service import reconcile
from modelrail.service.smoke import served
from tests.conftest import STATE_DEADLINE_S

PROJECT, REGION, SERVICE, JOB, MODEL = "proj-local", "europe-west1", "staging", "train", "penguins"
EXAMPLES = [{"bill_length_mm": 39.1, "island": "Torgersen"}]


def _unprobed(*_: object) -> tuple[int, bytes]:
    raise AssertionError("the control plane starts revisions; it never smoke-tests them")


class StandInStaging:
    """A staging server stand-in: serves whatever version ``deploy`` pinned.

    ``broken`` versions start but answer /predict with the wrong model version (the
    smoke test must catch it); ``unready`` versions never become ready; ``held``
    versions take until ``release`` is set; every rollout takes ``delay_s``.
    """

    def __init__(self) -> None:
        self.serving: tuple[str, int] | None = None
        self.broken: set[int] = set()
        self.unready: set[int] = set()
        self.held: set[int] = set()
        self.release = threading.Event()
        self.delay_s = 0.0
        self.deploys: list[int] = []
        self.stopped = 0
        staging = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply(200 if staging.serving else 503, {"status": "ready"})

            def do_POST(self) -> None:
                instances = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if staging.serving is None:
                    self._reply(503, {"title": "no model"})
                    return
                model, version = staging.serving
                if version in staging.broken:
                    version -= 1  # an old artifact baked into the revision by mistake
                self._reply(
                    200,
                    {
                        "predictions": [[0.9, 0.1]] * len(instances["instances"]),
                        "model": {"name": model, "version": version},
                    },
                )

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def start(self, model: str, version: int) -> Candidate:
        self.deploys.append(version)
        time.sleep(self.delay_s)
        if version in self.held:
            self.release.wait(30)
        if version in self.unready:
            raise DeploymentFailed(f"v{version} failed its readiness probe")
        return Candidate(model, version, f"r{version}", self.url, _unprobed)

    def promote(self, candidate: Candidate) -> Deployment:
        self.serving = (candidate.model, candidate.version)
        return Deployment(self.url, candidate.revision, candidate.model, candidate.version)

    def discard(self, candidate: Candidate) -> str:
        return "the revision before it still serves"

    def current(self) -> Deployment | None:
        if self.serving is None:
            return None
        return Deployment(self.url, "r", *self.serving)

    def stop(self) -> None:
        self.stopped += 1
        self.serving = None


def deploy(deployer: CloudRunDeployer, version: int) -> Deployment:
    """``version`` put on staging as the service layer does it (``reconcile.deploy``)."""
    return reconcile.deploy(deployer, MODEL, version, EXAMPLES)


@pytest.fixture
def staging() -> Iterator[StandInStaging]:
    server = StandInStaging()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def control_plane(tmp_path: Path, staging: StandInStaging) -> Iterator[tuple[ControlPlane, str]]:
    job_program = (
        "import os, pathlib, sys; "
        "pathlib.Path(os.environ['OUT']).write_text(os.environ.get('MODELRAIL_EVENT', '')); "
        "sys.exit(int(os.environ.get('EXIT', '0')))"
    )
    plane = ControlPlane(
        project=PROJECT,
        region=REGION,
        services=lambda short: (MODEL, staging.url) if short == SERVICE else None,
        backend=lambda model: staging,
        job_command=[sys.executable, "-c", job_program],
        job_env={"OUT": str(tmp_path / "job-event.json"), "PATH": "/usr/bin:/bin"},
        state_dir=tmp_path / "stack",
        service_env={"MODELRAIL_ARTIFACT_BUCKET": "artifacts"},
    )
    port = free_port()
    server = plane.server(port)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    yield plane, f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    plane.wait_idle(10)


@pytest.fixture
def deployer(control_plane: tuple[ControlPlane, str]) -> CloudRunDeployer:
    return CloudRunDeployer(PROJECT, REGION, SERVICE, control_plane[1])


def test_run_job_passes_the_event_as_an_env_override(
    control_plane: tuple[ControlPlane, str], tmp_path: Path
) -> None:
    from google.cloud import run_v2

    launcher = CloudRunJobLauncher(PROJECT, REGION, control_plane[1])
    event = b'{"event_type": "dataset-validated", "run_id": "run-1"}'

    execution = launcher.launch(JOB, event)

    assert execution.startswith(f"projects/{PROJECT}/locations/{REGION}/jobs/{JOB}/executions/")
    out = tmp_path / "job-event.json"
    assert wait_until(lambda: out.is_file() and out.read_bytes() == event, STATE_DEADLINE_S)
    executions = run_v2.ExecutionsClient(**_rest_kwargs(control_plane[1]))
    assert wait_until(
        lambda: executions.get_execution(name=execution).succeeded_count == 1, STATE_DEADLINE_S
    )


def test_run_job_operation_reports_a_failed_execution(
    control_plane: tuple[ControlPlane, str],
) -> None:
    from google.api_core import exceptions

    control_plane[0].job_env["EXIT"] = "3"
    launcher = CloudRunJobLauncher(PROJECT, REGION, control_plane[1])
    operation = launcher.client.run_job(name=launcher.job_name(JOB))

    with pytest.raises(exceptions.GoogleAPICallError, match="exit status 3"):
        operation.result(timeout=30)


def test_an_unreachable_api_is_a_transient_error() -> None:
    launcher = CloudRunJobLauncher(PROJECT, REGION, f"http://127.0.0.1:{free_port()}")

    with pytest.raises(TransientError):
        launcher.launch(JOB, b"{}")


def test_deploy_pins_the_version_and_current_reports_it(
    deployer: CloudRunDeployer, staging: StandInStaging
) -> None:
    assert deployer.current() is None

    first = deploy(deployer, 1)
    second = deploy(deployer, 2)

    assert (first.model, first.version, first.url) == (MODEL, 1, staging.url)
    assert second.version == 2
    assert second.revision != first.revision
    assert deployer.current() == second
    assert staging.serving == (MODEL, 2)
    env = {var.name: var.value for var in deployer.client.get_service(
        name=deployer.service_name).template.containers[0].env}  # fmt: skip
    assert env["MODELRAIL_MODEL_VERSION"] == "2"
    assert env["MODELRAIL_ARTIFACT_BUCKET"] == "artifacts"  # the rest of the template is kept


def test_what_the_service_serves_is_asked_as_its_invoker(
    deployer: CloudRunDeployer, staging: StandInStaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`modelrail models` reads the live service's /readyz through the deployment's
    probe: in the cloud with an ID token for the service (it has no public invoker),
    fetched when first asked, not when the deployment is read."""
    deploy(deployer, 1)
    fetched: list[str] = []
    seen: list[str | None] = []

    def token_for(url: str) -> dict[str, str]:
        fetched.append(url)
        return {"Authorization": f"Bearer token-for-{url}"}

    real_request = urllib3.PoolManager.request

    def request(self: Any, method: str, url: str, **kwargs: Any) -> Any:
        seen.append((kwargs.get("headers") or {}).get("Authorization"))
        return real_request(self, method, url, **kwargs)

    monkeypatch.setattr(deployer, "_auth_headers", token_for)
    monkeypatch.setattr(urllib3.PoolManager, "request", request)
    current = deployer.current()
    assert current is not None
    assert fetched == []  # reading the deployment fetched no token

    assert served(current)["status"] == "ready"
    assert served(current)["status"] == "ready"
    assert fetched == [staging.url]  # one token, for the service
    assert seen[-2:] == [f"Bearer token-for-{staging.url}"] * 2


def test_each_revision_trusts_the_key_register_signs_with(
    control_plane: tuple[ControlPlane, str], staging: StandInStaging
) -> None:
    key = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/2"
    deployer = CloudRunDeployer(PROJECT, REGION, SERVICE, control_plane[1], signing_key=key)

    deploy(deployer, 1)

    env = {var.name: var.value for var in deployer.client.get_service(
        name=deployer.service_name).template.containers[0].env}  # fmt: skip
    assert env["MODELRAIL_SIGNING_KEY"] == key


def test_a_redelivered_deploy_makes_no_new_revision(
    deployer: CloudRunDeployer, staging: StandInStaging
) -> None:
    first = deploy(deployer, 1)

    again = deploy(deployer, 1)

    assert again == first
    assert staging.deploys == [1]


def test_a_rollout_is_observed_by_polling_the_service_alone(
    control_plane: tuple[ControlPlane, str], deployer: CloudRunDeployer, staging: StandInStaging
) -> None:
    plane = control_plane[0]
    staging.delay_s = 0.5  # the first reads still see the rollout in progress

    deployed = deploy(deployer, 1)

    assert (deployed.version, staging.serving) == (1, (MODEL, 1))
    requests = list(plane.requests)
    service_path = f"/v2/{deployer.service_name}"
    patch = requests.index(("PATCH", service_path))
    assert requests[patch + 1 :].count(("GET", service_path)) >= 2
    assert _operation_reads(plane) == []


def test_the_service_resource_tells_a_rollout_as_cloud_run_does(
    deployer: CloudRunDeployer, staging: StandInStaging
) -> None:
    from google.cloud import run_v2

    deploy(deployer, 1)
    before = deployer.client.get_service(name=deployer.service_name)
    staging.held.add(2)
    outcome: list[Deployment] = []
    rollout = threading.Thread(target=lambda: outcome.append(deploy(deployer, 2)))
    rollout.start()
    try:
        assert wait_until(lambda: staging.deploys[-1:] == [2], STATE_DEADLINE_S)
        during = deployer.client.get_service(name=deployer.service_name)
    finally:
        staging.release.set()
        rollout.join(STATE_DEADLINE_S)
    after = deployer.client.get_service(name=deployer.service_name)

    assert during.reconciling
    assert during.generation == before.generation + 1
    assert during.observed_generation == before.generation
    assert during.latest_ready_revision == before.latest_ready_revision
    assert during.latest_created_revision not in ("", before.latest_created_revision)
    assert during.terminal_condition.state == run_v2.Condition.State.CONDITION_RECONCILING
    assert not after.reconciling
    assert after.observed_generation == after.generation == during.generation
    assert after.latest_ready_revision == after.latest_created_revision
    assert after.latest_created_revision == during.latest_created_revision
    assert after.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert [deployment.version for deployment in outcome] == [2]


def test_a_failed_smoke_test_rolls_back_to_the_previous_revision(
    control_plane: tuple[ControlPlane, str], deployer: CloudRunDeployer, staging: StandInStaging
) -> None:
    good = deploy(deployer, 1)
    staging.broken.add(2)

    with pytest.raises(DeploymentFailed, match="rolled back"):
        deploy(deployer, 2)

    current = deployer.current()
    assert current is not None
    assert (current.model, current.version) == (MODEL, 1)
    assert current.revision != good.revision  # the rollback is a new revision, as in Cloud Run
    assert staging.serving == (MODEL, 1)
    assert staging.deploys == [1, 2, 1]
    assert _operation_reads(control_plane[0]) == []


def test_a_revision_that_never_gets_ready_is_rolled_back(
    control_plane: tuple[ControlPlane, str], deployer: CloudRunDeployer, staging: StandInStaging
) -> None:
    from google.cloud import run_v2

    deploy(deployer, 1)
    staging.unready.add(3)

    with pytest.raises(DeploymentFailed, match="did not become ready") as failed:
        deploy(deployer, 3)

    assert "readiness probe" in failed.value.message  # the terminal condition's message
    current = deployer.current()
    assert current is not None
    assert current.version == 1
    assert staging.serving == (MODEL, 1)
    assert staging.deploys == [1, 3, 1]  # the template is put back: a new v1 revision
    service = deployer.client.get_service(name=deployer.service_name)
    env = {var.name: var.value for var in service.template.containers[0].env}
    assert env["MODELRAIL_MODEL_VERSION"] == "1"
    assert service.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert _operation_reads(control_plane[0]) == []


def test_a_rollout_that_never_finishes_is_a_transient_error_after_the_deadline(
    control_plane: tuple[ControlPlane, str], staging: StandInStaging
) -> None:
    deployer = CloudRunDeployer(PROJECT, REGION, SERVICE, control_plane[1], rollout_timeout_s=1.0)
    deploy(deployer, 1)
    staging.held.add(2)

    started = time.monotonic()
    try:
        with pytest.raises(TransientError, match="still running"):
            deploy(deployer, 2)
        waited = time.monotonic() - started
        still = deployer.client.get_service(name=deployer.service_name)
    finally:
        staging.release.set()

    assert waited >= 1.0  # gave up after its deadline, not before (a hang hits the test timeout)
    assert still.reconciling  # nothing was rolled back: the rollout may yet succeed
    assert _operation_reads(control_plane[0]) == []


def test_a_stale_etag_is_refused(
    control_plane: tuple[ControlPlane, str], deployer: CloudRunDeployer
) -> None:
    http = urllib3.PoolManager()
    name = deployer.service_name

    response = http.request(
        "PATCH",
        f"{control_plane[1]}/v2/{name}",
        body=orjson.dumps({"name": name, "etag": '"stale"', "template": {}}),
        headers={"Content-Type": "application/json"},
    )

    assert response.status == 409
    assert orjson.loads(response.data)["error"]["status"] == "ABORTED"


def test_the_control_plane_remembers_the_pinned_version_across_restarts(
    control_plane: tuple[ControlPlane, str],
    deployer: CloudRunDeployer,
    staging: StandInStaging,
    tmp_path: Path,
) -> None:
    deploy(deployer, 2)
    staging.stop()  # the machine restarted: nothing serves

    restarted = ControlPlane(
        project=PROJECT, region=REGION,
        services=lambda short: (MODEL, staging.url) if short == SERVICE else None,
        backend=lambda model: staging, job_command=["true"], job_env={},
        state_dir=tmp_path / "stack",
    )  # fmt: skip
    restarted.restore()

    assert staging.serving == (MODEL, 2)


_OLD, _NEW = "revisions/staging-00002-abc", "revisions/staging-00003-def"


@pytest.mark.parametrize(
    ("observed", "reconciling", "generation", "state", "ready", "created", "verdict"),
    [
        # the update is not visible yet, or Cloud Run is still acting on it
        (2, False, 2, "CONDITION_SUCCEEDED", _OLD, _OLD, None),
        (2, True, 3, "CONDITION_RECONCILING", _OLD, _NEW, None),
        # done: the new generation serves from the new revision
        (3, False, 3, "CONDITION_SUCCEEDED", _NEW, _NEW, True),
        # failed: observed generation and ready revision stay at the last serving one
        (2, False, 3, "CONDITION_FAILED", _OLD, _NEW, False),
        # failed, reported with the observed generation caught up
        (3, False, 3, "CONDITION_FAILED", _OLD, _NEW, False),
        # caught up and succeeded, yet the newest revision is not the one serving
        (3, False, 3, "CONDITION_SUCCEEDED", _OLD, _NEW, False),
        # an earlier rollout's failure, before this one's status is written
        (2, False, 3, "CONDITION_FAILED", _OLD, _OLD, None),
    ],
)
def test_the_rollout_verdict_follows_the_service_fields(
    observed: int,
    reconciling: bool,
    generation: int,
    state: str,
    ready: str,
    created: str,
    verdict: bool | None,
) -> None:
    from google.cloud import run_v2

    from modelrail.adapters.google.cloudrun import _rollout_outcome

    service = run_v2.Service(
        generation=generation,
        observed_generation=observed,
        reconciling=reconciling,
        terminal_condition=run_v2.Condition(type_="Ready", state=state),
        latest_ready_revision=ready,
        latest_created_revision=created,
    )

    assert _rollout_outcome(service, generation=3, created_before=_OLD) is verdict


def _operation_reads(plane: ControlPlane) -> list[tuple[str, str]]:
    return [(method, path) for method, path in plane.requests if "/operations/" in path]


def _rest_kwargs(endpoint: str) -> dict[str, Any]:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return {
        "credentials": AnonymousCredentials(),
        "transport": "rest",
        "client_options": ClientOptions(api_endpoint=endpoint),
    }


@pytest.mark.fault
def test_a_finished_job_process_is_reaped_without_being_asked_about(
    control_plane: tuple[ControlPlane, str], tmp_path: Path
) -> None:
    """No zombie under the control plane: an execution nobody reads is still reaped."""
    launcher = CloudRunJobLauncher(PROJECT, REGION, control_plane[1])
    execution = launcher.launch(JOB, b"{}")
    [process] = control_plane[0]._executions[execution].processes

    def reaped() -> bool:  # a zombie keeps its /proc entry until its parent waits
        return not Path(f"/proc/{process.pid}").exists()

    assert wait_until(reaped, STATE_DEADLINE_S)
