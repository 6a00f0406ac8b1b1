"""The local cloud as a user drives it: `modelrail up --emulators`, the real `gcloud` CLI,
a poison message, a crash, `modelrail down`.

One stack for the module (started on free 127.0.0.1 ports under a temporary home); the
tests run in file order on one xdist worker. The topology is the project's own file
with only the retry backoff shortened (the emulator honours it), so a poison message
reaches the dead-letter topic after the configured attempts in seconds, not minutes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import urllib3
import yaml

from modelrail.adapters.google.artifact_registry import ArtifactRegistryPackages
from modelrail.adapters.local.staging import LocalStagingDeployer
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.leases import registration_name
from modelrail.domain.registry import (
    MANIFEST,
    REFERENCE_FILE,
    FileEntry,
    Manifest,
    sha256,
)
from modelrail.kernel import errors
from modelrail.kernel.events import derive_run_id
from modelrail.kernel.processes import group_members, port_in_use, wait_until
from modelrail.localcloud.emulators import free_port
from modelrail.service import reconcile
from modelrail.service.container import Container
from modelrail.service.sweep import sweep
from modelrail.settings.process import Settings
from modelrail.ui import create_app
from tests.conftest import PENGUINS, REPO, STATE_DEADLINE_S, settings_env
from tests.integration.emulator_support import require_emulators
from tests.unit.test_record_shapes import _kinds, write_failure_shapes

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

MODELRAIL = Path(sys.executable).parent / "modelrail"
PIPELINE_TIMEOUT_S = 240.0
_http = urllib3.PoolManager(retries=False, timeout=5.0)


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    staging_port: int
    up_output: str
    up_seconds: float

    def modelrail(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MODELRAIL), *args], env=self.env, capture_output=True, text=True,
            check=check, timeout=180,
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = orjson.loads((self.home / "stack" / "state.json").read_bytes())
        return state

    def gcloud(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **self.env,
            **self.state()["env"],
            "CLOUDSDK_CONFIG": str(self.home / "gcloud-config"),  # a throwaway gcloud profile
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        }
        project = self.state()["project"]
        return subprocess.run(
            ["gcloud", *args, f"--project={project}"], env=env, capture_output=True, text=True,
            check=True, timeout=120,
        )  # fmt: skip

    def json(self, *args: str) -> Any:
        """`modelrail <args> --json` with the stack's environment exported, as a user would."""
        result = subprocess.run(
            [str(MODELRAIL), *args, "--json"], env={**self.env, **self.state()["env"]},
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return orjson.loads(result.stdout)

    def runs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.json("runs")
        return found

    def upload_penguins(self) -> None:
        """The bundled penguins uploaded, and their run ended deployed (the first run)."""
        bucket = self.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")
        self.gcloud("storage", "cp", str(PENGUINS), f"gs://{bucket}/uploads/penguins/p.csv")
        assert wait_until(
            lambda: [r["outcome"] for r in self.runs()] == ["deployed"], PIPELINE_TIMEOUT_S, 1.0
        ), self.runs()

    def deployed_runs(self) -> int:
        """How many runs finished with a deploy."""
        return sum(run["outcome"] == "deployed" for run in self.runs())

    def served(self) -> dict[str, Any] | None:
        try:
            response = _http.request("GET", f"http://127.0.0.1:{self.staging_port}/readyz")
        except urllib3.exceptions.HTTPError:
            return None
        if response.status != 200:
            return None
        body: dict[str, Any] = orjson.loads(response.data)
        return body

    def served_version(self) -> int:
        body = self.served()
        return int(body["version"]) if body else 0

    def pull_dead_letters(self) -> list[dict[str, Any]]:
        base = f"http://{self.state()['env']['PUBSUB_EMULATOR_HOST']}/v1/projects/"
        base += self.state()["project"]
        response = _http.request(
            "POST",
            f"{base}/subscriptions/dead-letter--hold:pull",
            body=orjson.dumps({"maxMessages": 10, "returnImmediately": True}),
            headers={"Content-Type": "application/json"},
        )
        received: list[dict[str, Any]] = orjson.loads(response.data).get("receivedMessages", [])
        return received


def _fast_retry_topology(path: Path) -> Path:
    spec = yaml.safe_load((REPO / "topology.yaml").read_text())
    spec["defaults"]["retry"] = {"minimum_backoff": "0s", "maximum_backoff": "1s"}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack-home")) as started:
        yield started


@contextlib.contextmanager
def running_stack(
    home: Path, *, models: tuple[Path, ...] = (REPO / "pipeline.toml",), **settings: str
) -> Iterator[Stack]:
    """`modelrail up --emulators` on ``home`` with retries that come at once, and
    ``settings`` over the defaults, then `modelrail add` for each of ``models``; `down`
    after, whatever happened."""
    require_emulators(gcloud=True)
    staging_port = free_port()
    env = {
        **os.environ,
        **settings_env(home),
        "MODELRAIL_TOPOLOGY": str(_fast_retry_topology(home / "topology.yaml")),
        "MODELRAIL_STAGING_PORT": str(staging_port),
        **settings,
    }
    started = time.monotonic()
    up = subprocess.run(
        [str(MODELRAIL), "up", "--emulators", "--free-ports"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    handle = Stack(home, env, staging_port, up.stdout, time.monotonic() - started)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        for config in models:
            subprocess.run(
                [str(MODELRAIL), "add", str(config)], env={**env, **handle.state()["env"]},
                capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
        yield handle
    finally:
        handle.modelrail("down", check=False)


def test_up_records_its_start_time_and_prints_what_to_export(stack: Stack) -> None:
    # How long start-up takes is measured, not asserted: these machines' speed swings.
    assert stack.state()["ready_s"] > 0
    for name in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "MODELRAIL_RUN_API_ENDPOINT",
                 "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE"):  # fmt: skip
        assert f"export {name}=" in stack.up_output


def test_status_shows_every_process_up(stack: Stack) -> None:
    status = orjson.loads(stack.modelrail("status", "--json").stdout)

    assert status["up"] is True
    names = {row["name"] for row in status["processes"] if row["alive"]}
    assert {"pubsub-emulator", "fake-gcs-server", "control-plane"} <= names
    assert {f"function-{s}" for s in ("validate", "launch_training", "evaluate", "register",
                                      "deploy")} <= names  # fmt: skip
    assert "watchdog" in names


def test_up_again_is_a_no_op(stack: Stack) -> None:
    before = [p["pid"] for p in stack.state()["processes"]]

    again = stack.modelrail("up", "--emulators", "--free-ports")

    assert "already up" in again.stdout
    assert [p["pid"] for p in stack.state()["processes"]] == before


def test_gcloud_storage_cp_runs_the_pipeline_to_a_served_version(stack: Stack) -> None:
    bucket = stack.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")

    stack.gcloud("storage", "cp", str(PENGUINS), f"gs://{bucket}/uploads/penguins/penguins.csv")

    assert wait_until(lambda: stack.served_version() >= 1, PIPELINE_TIMEOUT_S, 0.2)
    # Then the run's own record: the deploy stage finished, not only the rollout.
    runs = stack.deployed_runs
    assert wait_until(lambda: runs() == 1, STATE_DEADLINE_S, 1.0), stack.modelrail(
        "runs", check=False
    ).stdout
    served = stack.served() or {}
    assert (served.get("model"), served.get("version")) == ("penguins", 1)


def test_the_run_published_v1_to_the_control_planes_artifact_registry(stack: Stack) -> None:
    env = {**stack.env, **stack.state()["env"]}
    endpoint = env["MODELRAIL_ARTIFACT_REGISTRY_ENDPOINT"]
    packages = ArtifactRegistryPackages(
        env["GOOGLE_CLOUD_PROJECT"], env["MODELRAIL_REGION"],
        env["MODELRAIL_ARTIFACT_REPOSITORY"], endpoint,
    )  # fmt: skip
    models = subprocess.run(
        [str(MODELRAIL), "models", "--json"], env=env, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    [model] = orjson.loads(models.stdout)
    [version] = model["versions"]

    assert packages.versions("penguins") == ["v1"]
    assert packages.files("penguins", "v1") == version["published"]["files"]
    # The manifest and its signature (the control plane's Cloud KMS made it; the staging
    # server verified it through the same API before serving v1).
    assert set(version["published"]["files"]) == {
        *version["files"],
        "manifest.json",
        "manifest.sig",
    }
    assert version["published"]["uri"].startswith(f"{endpoint}/v1/projects/")


def test_gcloud_pubsub_publish_starts_a_retrain(stack: Stack) -> None:
    before = stack.served_version()
    # As a person types it: the topic says what it is, no event_type or schema_version.
    message = orjson.dumps({"request_id": "gcloud-1"}).decode()

    stack.gcloud("pubsub", "topics", "publish", "retrain-requested", f"--message={message}")

    assert wait_until(lambda: stack.served_version() > before, PIPELINE_TIMEOUT_S, 0.2)
    # Then the run's own record: the deploy stage finished, not only the rollout.
    runs = stack.deployed_runs
    assert wait_until(lambda: runs() == 2, STATE_DEADLINE_S, 1.0), stack.modelrail(
        "runs", check=False
    ).stdout
    assert stack.served_version() == before + 1


def test_rollback_redeploys_the_previous_version_through_cloud_run(stack: Stack) -> None:
    env = {**stack.env, **stack.state()["env"]}

    def modelrail(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MODELRAIL), *args], env=env, capture_output=True, text=True, check=True,
            timeout=STATE_DEADLINE_S,
        )  # fmt: skip

    back = modelrail("rollback", "--reason", "emulator test")

    assert "staging moved from v2 to v1" in back.stdout, back.stdout + back.stderr
    assert stack.served_version() == 1  # the control plane's revision serves v1
    runs = orjson.loads(modelrail("runs", "--json").stdout)
    assert (runs[-1]["outcome"], runs[-1]["trigger"]["kind"]) == ("rolled-back", "rollback")

    modelrail("rollback", "--to", "2")

    assert stack.served_version() == 2
    [model] = orjson.loads(modelrail("models", "--json").stdout)
    assert model["aliases"]["staging"] == 2


@pytest.mark.fault
def test_a_burst_of_registrations_ends_in_one_outcome_each_and_the_newest_served(
    stack: Stack,
) -> None:
    """Five model-registered events published at once: the deploy function takes them
    all, rolls out one at a time (the staging lease), records an outcome for each, and
    staging ends on the newest version; nothing is dead-lettered."""
    with Staging(stack) as staging:
        container = staging.container
        registry, model = container.registry, container.config.model_name
        events = _register_like_register(container, 5)
        newest = max(event["version"] for event in events)

        _publish(stack, "model-registered", events)

        def outcomes() -> list[str]:
            records = [container.runs.stage_record(e["run_id"], "deploy") for e in events]
            return [r.status for r in records if r is not None]

        def written() -> list[tuple[str, bytes]]:
            """What the burst's runs hold: a failure names its reason."""
            return [
                (info.key, container.artifacts.read(info.key).data[:600])
                for e in events
                for info in container.artifacts.list(f"runs/{e['run_id']}/")
            ]

        assert wait_until(lambda: len(outcomes()) == 5, PIPELINE_TIMEOUT_S, 1.0), written()
        assert set(outcomes()) <= {"succeeded", "skipped"}, outcomes()
        assert registry.aliases(model)["staging"] == newest
    assert stack.served_version() == newest
    assert stack.pull_dead_letters() == []


def _publish(stack: Stack, topic: str, events: list[dict[str, Any]]) -> None:
    env = stack.state()["env"]
    publish = _http.request(
        "POST",
        f"http://{env['PUBSUB_EMULATOR_HOST']}/v1/projects/{stack.state()['project']}"
        f"/topics/{topic}:publish",
        body=orjson.dumps({"messages": [
            {"data": base64.b64encode(orjson.dumps(e)).decode(),
             "attributes": {"event_type": e["event_type"]}} for e in events
        ]}),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert publish.status == 200, publish.data


def _penguins_uri(stack: Stack) -> str:
    """The valid upload, named: the newest CSV in the bucket (what a retrain without a
    data URI takes) is a file an earlier test uploaded to be refused."""
    bucket = stack.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")
    return f"gs://{bucket}/uploads/penguins/penguins.csv"


def _job_process(request_id: str) -> int | None:
    """The training job execution started for ``request_id`` (its event is in its env)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if b"MODELRAIL_EVENT=" in environ and request_id.encode() in environ:
                return int(entry.name)
    return None


def _register_like_register(container: Container, count: int) -> list[dict[str, Any]]:
    """``count`` new versions registered and signed as register does (v2's files), and
    the model-registered event of each."""
    registry, model = container.registry, container.config.model_name
    manifest = registry.manifest(model, 2)
    files = {name: registry.read_file(model, 2, name) for name in manifest.files}
    template = container.runs.stage_record(manifest.run_id, "register")
    assert template is not None
    assert template.event is not None
    events = []
    for _ in range(count):
        run_id = f"run-{uuid.uuid4().hex[:20]}"  # a run id's shape, no trigger's

        def describe(
            version: int, entries: Mapping[str, FileEntry], run_id: str = run_id
        ) -> Manifest:
            return dataclasses.replace(manifest, version=version, run_id=run_id, files=entries)

        version, manifest_bytes = registry.register(model, run_id, lambda _: files, describe)
        events.append(
            {**template.event, "run_id": run_id, "event_id": uuid.uuid4().hex,
             "version": version, "manifest_sha256": sha256(manifest_bytes),
             "manifest_uri": registry.manifest_uri(model, version)}
        )  # fmt: skip
    return events


def _process(stack: Stack, name: str) -> dict[str, Any]:
    """The stack's record of its member ``name`` (the watchdog replaces it on a restart)."""
    found: dict[str, Any] = next(p for p in stack.state()["processes"] if p["name"] == name)
    return found


def _kill(stack: Stack, name: str) -> int:
    """SIGKILL the process group of the stack's member ``name``; return its pid."""
    pid = int(_process(stack, name)["pid"])
    os.killpg(pid, signal.SIGKILL)
    return pid


def _restarted(stack: Stack, name: str, killed: int) -> bool:
    """The stack's member ``name`` runs again, as a new process, and answers."""
    row = next(
        r for r in orjson.loads(stack.modelrail("status", "--json").stdout)["processes"]
        if r["name"] == name
    )  # fmt: skip
    return bool(row["pid"] != killed and row["alive"] and row["listening"])


class Staging:
    """The stack's registry, staging alias and local staging supervisor, as the test
    process reaches them (the stack's environment)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.env = {**stack.env, **stack.state()["env"]}
        self.settings = Settings.from_env(self.env)

    def __enter__(self) -> Staging:
        self._patch = pytest.MonkeyPatch()
        for name in ("STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):  # read by the clients
            self._patch.setenv(name, self.env[name])
        self.container = bootstrap(self.settings).for_model("penguins")
        self.model = self.container.model
        self.supervisor = LocalStagingDeployer(self.settings, self.model)
        return self

    def __exit__(self, *_: Any) -> None:
        self._patch.undo()

    def alias(self) -> int:
        return self.container.registry.aliases(self.model)["staging"]

    def rolling_out(self) -> int | None:
        """The version the control plane is rolling its service out to, if it is."""
        deployer = self.container.deployer
        service = deployer.client.get_service(name=deployer.service_name)  # type: ignore[attr-defined]
        if not service.reconciling:
            return None
        env = {var.name: var.value for var in service.template.containers[0].env}
        return int(env["MODELRAIL_MODEL_VERSION"])

    def converged(self) -> bool:
        """Every one of ten fresh connections is answered with the alias's version."""
        alias = self.alias()
        return all(self.stack.served_version() == alias for _ in range(10))


def _timed_convergence(staging: Staging, what: str) -> float:
    """Seconds until every answer names the alias's version (printed for the record)."""
    started = time.monotonic()
    assert wait_until(staging.converged, STATE_DEADLINE_S, 0.2), (
        f"{what}: staging serves v{staging.stack.served_version()}, its alias v{staging.alias()}"
    )
    elapsed = time.monotonic() - started
    print(f"converged after {what} in {elapsed:.1f} s")
    return elapsed


@pytest.mark.fault
def test_a_retrain_naming_a_path_outside_the_bucket_is_refused_on_its_first_delivery(
    stack: Stack,
) -> None:
    """Published as a person would, through the real emulator: '..' in the data URI is
    an invalid event, not five retried deliveries ending in retries_exhausted."""
    bucket = stack.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")
    request_id = f"outside-{uuid.uuid4().hex[:8]}"
    message = orjson.dumps(
        {
            "request_id": request_id,
            "data_uri": f"gs://{bucket}/uploads/penguins/../../etc/passwd.csv",
        }
    ).decode()

    stack.gcloud("pubsub", "topics", "publish", "retrain-requested", f"--message={message}")

    def refused() -> dict[str, Any] | None:
        for run in stack.runs():
            if run["trigger"].get("key") == f"request:{request_id}" and run["outcome"] == "failed":
                return dict(run)
        return None

    assert wait_until(lambda: refused() is not None, STATE_DEADLINE_S, 0.5)
    error = (refused() or {})["stages"]["validate"]["error"]
    assert error["kind"] == "invalid_event", error
    assert stack.pull_dead_letters() == []


@pytest.mark.fault
def test_a_header_of_120k_columns_is_refused_and_its_failure_published_small(
    stack: Stack, tmp_path: Path
) -> None:
    """Through the real emulators: the failure of a 1.2 MB file whose header names
    120,000 columns is published (Pub/Sub refuses a message over 10 MB), and what the
    run records stays small."""
    project = stack.state()["project"]
    base = f"http://{stack.state()['env']['PUBSUB_EMULATOR_HOST']}/v1/projects/{project}"
    created = _http.request(
        "PUT", f"{base}/subscriptions/pipeline-failed--wide-check",
        body=orjson.dumps({"topic": f"projects/{project}/topics/pipeline-failed"}),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert created.status == 200, created.data
    columns = 120_000
    wide = tmp_path / "wide.csv"
    wide.write_text(
        ",".join(f"c{i:05d}" for i in range(columns)) + "\n" + ",".join("1" * columns) + "\n"
    )
    assert wide.stat().st_size > 2**20
    bucket = stack.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")

    stack.gcloud("storage", "cp", str(wide), f"gs://{bucket}/uploads/penguins/wide.csv")

    def wide_run() -> dict[str, Any] | None:
        for run in stack.runs():
            if (
                run["trigger"]
                .get("key", "")
                .startswith(f"gs://{bucket}/uploads/penguins/wide.csv#")
            ):
                return dict(run) if run["outcome"] == "failed" else None
        return None

    assert wait_until(lambda: wide_run() is not None, STATE_DEADLINE_S, 0.5)
    error = (wide_run() or {})["stages"]["validate"]["error"]
    assert error["kind"] == "contract_violation"
    published: list[bytes] = []

    def failure_published() -> bool:
        pulled = _http.request(
            "POST", f"{base}/subscriptions/pipeline-failed--wide-check:pull",
            body=orjson.dumps({"maxMessages": 10, "returnImmediately": True}),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        for received in orjson.loads(pulled.data).get("receivedMessages", []):
            published.append(base64.b64decode(received["message"]["data"]))
        return any(b"uploads/penguins/wide.csv" in data for data in published)

    assert wait_until(failure_published, STATE_DEADLINE_S, 0.5)
    [event] = [data for data in published if b"uploads/penguins/wide.csv" in data]
    assert len(event) < 64 * 2**10, len(event)
    record = stack.json("runs", (wide_run() or {})["run_id"])
    assert len(orjson.dumps(record)) < 256 * 2**10
    assert stack.pull_dead_letters() == []


@pytest.mark.fault
def test_sweep_ends_a_run_whose_training_job_was_killed(stack: Stack) -> None:
    request_id = f"killed-{uuid.uuid4().hex[:8]}"
    message = orjson.dumps({"request_id": request_id, "data_uri": _penguins_uri(stack)}).decode()

    stack.gcloud("pubsub", "topics", "publish", "retrain-requested", f"--message={message}")
    assert wait_until(lambda: _job_process(request_id) is not None, STATE_DEADLINE_S, 0.02)
    os.kill(_job_process(request_id) or 0, signal.SIGKILL)

    def swept() -> dict[str, Any] | None:
        ended: list[dict[str, Any]] = stack.json("sweep")
        return next((r for r in ended if r["stage"] == "train"), None)

    record: dict[str, Any] | None = None

    def ended() -> bool:
        nonlocal record
        record = swept()
        return record is not None

    assert wait_until(ended, STATE_DEADLINE_S, 1.0)
    assert record is not None
    assert record["error"]["kind"] == "job_failed"
    assert "exit status -9" in record["error"]["message"]
    [run] = [r for r in stack.runs() if r["trigger"].get("key") == f"request:{request_id}"]
    assert run["outcome"] == "failed"


@pytest.mark.fault
def test_a_killed_function_is_restarted_and_processes_the_next_message(
    stack: Stack, tmp_path: Path
) -> None:
    """The validate function's process group SIGKILLed, and no `modelrail up`: the
    watchdog starts it again on its port, and a file uploaded afterwards is validated
    by it (refused, here: its columns are not the contract's)."""
    killed = _kill(stack, "function-validate")

    assert wait_until(lambda: _restarted(stack, "function-validate", killed), 30.0, 0.2)
    # The watchdog records the new process before its health check, and logs the
    # restart once it answers.
    log = stack.home / "stack" / "logs" / "watchdog.log"
    line = f"function-validate (pid {killed}) died; restarted as pid"
    assert wait_until(lambda: line in log.read_text(), STATE_DEADLINE_S, 0.2), log.read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("colour,size\nred,1\nblue,2\n")
    bucket = stack.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")
    stack.gcloud("storage", "cp", str(bad), f"gs://{bucket}/uploads/penguins/after-restart.csv")

    def validated() -> dict[str, Any] | None:
        for run in stack.runs():
            key = run["trigger"].get("key", "")
            if key.startswith(f"gs://{bucket}/uploads/penguins/after-restart.csv#"):
                return dict(run) if "validate" in run["stages"] else None
        return None

    assert wait_until(lambda: validated() is not None, STATE_DEADLINE_S, 0.5)
    run = validated() or {}
    assert run["outcome"] == "failed"
    assert run["stages"]["validate"]["error"]["kind"] == "contract_violation"


def _ack_dead_letters_of(stack: Stack, run_id: str) -> bool:
    """Whether a dead-lettered message names ``run_id``; each one found is acknowledged,
    so the hold stays empty for the checks that follow."""
    project = stack.state()["project"]
    base = f"http://{stack.state()['env']['PUBSUB_EMULATOR_HOST']}/v1/projects/{project}"
    ours = [
        m["ackId"]
        for m in stack.pull_dead_letters()
        if run_id.encode() in base64.b64decode(m["message"]["data"])
    ]
    if ours:
        acked = _http.request(
            "POST", f"{base}/subscriptions/dead-letter--hold:acknowledge",
            body=orjson.dumps({"ackIds": ours}), headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert acked.status == 200, acked.data
    return bool(ours)


def _retrain(stack: Stack, staging: Staging, request_id: str) -> str:
    """Publish a retrain of the valid upload, as a person would; return its run id."""
    message = orjson.dumps({"request_id": request_id, "data_uri": _penguins_uri(stack)}).decode()
    stack.gcloud("pubsub", "topics", "publish", "retrain-requested", f"--message={message}")
    return derive_run_id(f"request:{request_id}", staging.container.config.sha256)


def _labels_swapped(staging: Staging, parquet: bytes) -> bytes:
    """The reference set ``parquet`` with Adelie and Gentoo swapped in its target column."""
    table = pq.read_table(io.BytesIO(parquet))
    target = staging.container.config.contract.target
    swap = {"Adelie": "Gentoo", "Gentoo": "Adelie"}
    labels = [swap.get(v, v) for v in table.column(target).to_pylist()]
    column = pa.array(labels).cast(table.schema.field(target).type)
    sink = io.BytesIO()
    pq.write_table(table.set_column(table.schema.get_field_index(target), target, column), sink)
    return sink.getvalue()


@pytest.mark.fault
def test_a_champion_whose_reference_set_was_rewritten_fails_the_run_in_evaluate(
    stack: Stack,
) -> None:
    """The champion's reference set replaced in fake-gcs (labels swapped) and its
    manifest's sha256 rewritten to match, once validate has recorded and before the
    evaluate function (SIGSTOPped meanwhile) can read it (so evaluate's own check is the
    one tested, as in the embedded case): the manifest's signature no
    longer verifies through the control plane's Cloud KMS, evaluate ends the run as an
    integrity error, and no version, alias or served version changes. The champion's
    bytes are put back afterwards."""
    with Staging(stack) as staging:
        container, registry, model = staging.container, staging.container.registry, staging.model
        store = container.artifacts
        champion = registry.aliases(model)["champion"]
        prefix = f"models/{model}/versions/{champion}/"
        original = {name: store.read(prefix + name).data for name in (REFERENCE_FILE, MANIFEST)}
        versions, aliases = registry.versions(model), registry.aliases(model)
        assert wait_until(staging.converged, STATE_DEADLINE_S, 0.2)
        served = stack.served_version()
        swapped = _labels_swapped(staging, original[REFERENCE_FILE])
        manifest = orjson.loads(original[MANIFEST])
        manifest["files"][REFERENCE_FILE] = {"sha256": sha256(swapped), "size": len(swapped)}

        # The evaluate function paused until the champion is rewritten: no race with it.
        evaluate = int(_process(stack, "function-evaluate")["pid"])
        os.killpg(evaluate, signal.SIGSTOP)
        try:
            run_id = _retrain(stack, staging, f"tampered-{uuid.uuid4().hex[:8]}")
            try:
                assert wait_until(
                    lambda: container.runs.stage_record(run_id, "validate") is not None,
                    PIPELINE_TIMEOUT_S, 0.05,
                )  # fmt: skip
                store.write(prefix + REFERENCE_FILE, swapped)
                store.write(prefix + MANIFEST, orjson.dumps(manifest))
            finally:
                os.killpg(evaluate, signal.SIGCONT)
            assert wait_until(
                lambda: container.runs.stage_record(run_id, "evaluate") is not None,
                PIPELINE_TIMEOUT_S, 0.2,
            )  # fmt: skip
        finally:
            store.write(prefix + REFERENCE_FILE, original[REFERENCE_FILE])
            store.write(prefix + MANIFEST, original[MANIFEST])

        record = container.runs.stage_record(run_id, "evaluate")
        assert record is not None
        assert record.error is not None, record
        assert record.status == "failed", record
        assert record.error["kind"] == "integrity_error", record.error
        assert "signature" in record.error["message"], record.error
        [run] = [r for r in stack.runs() if r["run_id"] == run_id]
        assert run["outcome"] == "failed"
        assert registry.versions(model) == versions
        assert registry.aliases(model) == aliases
        assert stack.served_version() == served
        registry.signed_manifest(model, champion)  # valid again
    assert stack.pull_dead_letters() == []


@pytest.mark.fault
def test_a_register_function_killed_after_claiming_its_number_resumes_it_or_names_the_gap(
    stack: Stack,
) -> None:
    """The register function's process group SIGKILLed right after it claimed its
    version number. The pause point: the control plane (the Cloud KMS register signs
    with) is SIGSTOPped once the run's training job recorded, so register blocks at
    signing, after its claim; a stopped process is alive to the watchdog, which leaves
    it alone. The watchdog restarts the function. Then either the redelivery, once the
    dead delivery's registration lease (60 s) lapsed, took the run's claim over and
    resumed its number (no gap: the run is deployed with that version), or the
    emulator, retrying on the closed port, dead-lettered the message: then the sweep,
    451 s after the lease lapsed, ends the run `stuck` naming the number
    (`orphaned_version`)."""
    control_plane = int(_process(stack, "control-plane")["pid"])
    with Staging(stack) as staging:
        container, registry, model = staging.container, staging.container.registry, staging.model
        before = registry.versions(model)
        run_id = _retrain(stack, staging, f"claimed-{uuid.uuid4().hex[:8]}")
        assert wait_until(
            lambda: container.runs.stage_record(run_id, "train") is not None,
            PIPELINE_TIMEOUT_S, 0.05,
        )  # fmt: skip
        os.kill(control_plane, signal.SIGSTOP)
        try:
            assert wait_until(
                lambda: registry.orphaned_number(model, run_id) is not None,
                STATE_DEADLINE_S, 0.02,
            ), "register claimed no number"  # fmt: skip
            killed = _kill(stack, "function-register")
        finally:
            os.kill(control_plane, signal.SIGCONT)
        started = time.monotonic()
        claimed = registry.orphaned_number(model, run_id)
        assert claimed == max(before) + 1
        assert container.runs.stage_record(run_id, "evaluate") is not None
        assert wait_until(lambda: _restarted(stack, "function-register", killed), 60.0, 0.2)

        def settled() -> bool:
            """The redelivery registered, or the message was dead-lettered."""
            recorded = container.runs.stage_record(run_id, "register") is not None
            return recorded or _ack_dead_letters_of(stack, run_id)

        assert wait_until(settled, STATE_DEADLINE_S, 0.5)
        record = container.runs.stage_record(run_id, "register")
        print(
            "the killed register's message: "
            f"{'dead-lettered' if record is None else 'redelivered'} after "
            f"{time.monotonic() - started:.1f} s"
        )
        if record is None:
            state = container.leases.state(model, registration_name(run_id))
            assert state is not None
            lapsed = datetime.fromtimestamp(state.until, UTC)
            swept = sweep(container, now=lapsed + timedelta(seconds=451))
            [ended] = [r for r in swept if r.run_id == run_id]
            assert ended.error is not None
            assert (ended.stage, ended.error["kind"]) == ("register", "stuck")
            assert ended.error["details"]["orphaned_version"] == claimed
            assert f"v{claimed}, stays unused" in ended.error["message"]
            [run] = [r for r in stack.runs() if r["run_id"] == run_id]
            assert run["outcome"] == "failed"
            assert registry.versions(model) == before
            assert registry.orphaned_number(model, run_id) == claimed  # the gap, named
        else:
            assert record.status == "succeeded", record
            assert record.output["version"] == claimed
            assert registry.versions(model) == [*before, claimed]  # no gap, one version
            assert wait_until(
                lambda: container.runs.stage_record(run_id, "deploy") is not None,
                STATE_DEADLINE_S, 0.5,
            )  # fmt: skip
            [run] = [r for r in stack.runs() if r["run_id"] == run_id]
            assert run["outcome"] == "deployed", run
            assert staging.alias() == claimed
            assert registry.orphaned_number(model, run_id) is None
        _timed_convergence(staging, "the register function killed after its claim")


@pytest.mark.fault
def test_every_record_shape_in_the_emulator_stacks_run_store_is_read_by_runs_and_the_ui(
    stack: Stack,
) -> None:
    """Each kind of failure, with the details its raiser gives (`test_record_shapes`),
    and a record written before problems had one shape, stored in the stack's run store
    (fake-gcs) beside what the earlier tests' runs wrote: `modelrail runs`, `runs --json`
    and `runs RUN --json` read them all. The stack serves no UI (`modelrail ui` is a
    command of its own), so the UI is the app that command serves, over the same store."""
    with Staging(stack) as staging:
        container = staging.container
        written = write_failure_shapes(container, uuid.uuid4().hex[:16])

        env = {**stack.env, **stack.state()["env"]}
        for args in (["runs"], *(["runs", run] for run in written)):
            shown = subprocess.run(
                [str(MODELRAIL), *args], env=env, capture_output=True, text=True, check=False,
                timeout=120,
            )  # fmt: skip
            assert shown.returncode == 0, (args, shown.stdout, shown.stderr)
        listed = {run["run_id"]: run for run in stack.runs()}
        assert set(written) <= set(listed)
        assert {listed[r]["outcome"] for r in written} <= {"failed", "rejected"}
        for run_id in [*written, *(r for r in listed if r not in written)]:
            assert stack.json("runs", run_id)["run_id"] == run_id
        smoke = written[_kinds().index(errors.DeploymentFailed)]

        client = create_app(container).test_client()
        for path in ("/", *(f"/runs/{run}" for run in listed), "/models"):
            assert client.get(path).status_code == 200, path
        assert b"/readyz answered 503" in client.get(f"/runs/{smoke}").data


@pytest.mark.fault
def test_a_stage_failing_on_every_delivery_ends_its_run_failed(stack: Stack) -> None:
    # The control plane goes away (the Cloud Run API, and the Cloud KMS that validate
    # verifies the signed champion with): a stage fails on every delivery. The watchdog
    # first (nothing restarts it), so the control plane stays dead.
    _kill(stack, "watchdog")
    _kill(stack, "control-plane")
    request_id = f"poison-{uuid.uuid4().hex[:8]}"
    message = orjson.dumps(
        {
            "schema_version": 1,
            "event_type": "retrain-requested",
            "request_id": request_id,
            "data_uri": _penguins_uri(stack),
        }
    ).decode()

    stack.gcloud("pubsub", "topics", "publish", "retrain-requested", f"--message={message}")

    def failed_run() -> dict[str, Any] | None:
        for run in stack.runs():
            if run["trigger"].get("key") == f"request:{request_id}" and run["outcome"] == "failed":
                return dict(run)
        return None

    # Pub/Sub counts the deliveries (the subscriptions have a dead-letter policy); the
    # last one records the run as failed instead of leaving it "running".
    assert wait_until(lambda: failed_run() is not None, STATE_DEADLINE_S, 0.5)
    stages = (failed_run() or {})["stages"]
    [(stage, error)] = [(name, s["error"]) for name, s in stages.items() if s.get("error")]
    # validate needs the control plane's KMS unless its process already holds the public
    # key; then launch_training fails on the Cloud Run API instead.
    assert stage in ("validate", "launch_training"), stages
    assert error["kind"] == "retries_exhausted"
    assert error["details"]["attempts"] == 5  # topology.yaml
    assert stack.pull_dead_letters() == []


@pytest.mark.fault
def test_up_after_a_crash_restarts_and_restores_staging(stack: Stack) -> None:
    served = stack.served_version()
    assert served >= 1
    dead = {
        row["name"]
        for row in orjson.loads(stack.modelrail("status", "--json").stdout)["processes"]
        if not row["alive"]
    }
    assert {"watchdog", "control-plane"} <= dead  # a killed watchdog stays dead

    stack.modelrail("up", "--emulators", "--free-ports")

    status = orjson.loads(stack.modelrail("status", "--json").stdout)
    assert status["up"] is True
    assert wait_until(lambda: stack.served_version() == served, STATE_DEADLINE_S, 0.2)


@pytest.mark.fault
def test_a_deploy_function_killed_mid_rollout_leaves_staging_converging_to_the_alias(
    stack: Stack,
) -> None:
    """The deploy function's process group SIGKILLed while its rollout runs: the control
    plane finishes the rollout (a version the alias does not name serves), the run's
    lease lapses (no heartbeat renews it), and staging converges to the alias. The
    watchdog restarts the function, so the message's redelivery (unless the emulator
    spent its attempts on the dead port first and dead-lettered it) then finishes the
    deploy: staging and its alias end on the event's version."""
    with Staging(stack) as staging:
        [event] = _register_like_register(staging.container, 1)
        before = staging.alias()
        assert wait_until(staging.converged, STATE_DEADLINE_S, 0.2)
        _publish(stack, "model-registered", [event])
        assert wait_until(
            lambda: staging.rolling_out() == event["version"], STATE_DEADLINE_S, 0.02
        ), "the deploy's rollout did not start"
        deploy_function = next(
            p for p in stack.state()["processes"] if p["name"] == "function-deploy"
        )
        os.killpg(deploy_function["pid"], signal.SIGKILL)
        # The control plane finishes the rollout it was asked for.
        assert wait_until(
            lambda: stack.served_version() == event["version"], STATE_DEADLINE_S, 0.05
        ), "the killed deploy's rollout did not switch"

        _timed_convergence(staging, "a deploy function killed mid-rollout")

        def settled() -> bool:
            """The message's redelivery deployed, or it was dead-lettered."""
            record = staging.container.runs.stage_record(event["run_id"], "deploy")
            return record is not None or any(
                event["run_id"].encode() in base64.b64decode(m["message"]["data"])
                for m in stack.pull_dead_letters()
            )

        assert wait_until(settled, STATE_DEADLINE_S, 0.5)
        assert wait_until(staging.converged, STATE_DEADLINE_S, 0.2)
        record = staging.container.runs.stage_record(event["run_id"], "deploy")
        print(f"the killed deploy's message: {'dead-lettered' if record is None else 'deployed'}")
        if record is None:  # dead-lettered: the alias never moved
            assert staging.alias() == before
        else:
            assert record.status == "succeeded", record
            assert staging.alias() == event["version"]
        assert stack.served_version() == staging.alias()


@pytest.mark.fault
def test_a_killed_supervisor_is_replaced_and_serves_the_alias(stack: Stack) -> None:
    with Staging(stack) as staging:
        supervisor = staging.supervisor.servers()["supervisor"]
        os.killpg(supervisor, signal.SIGKILL)  # it and its servers

        _timed_convergence(staging, "the staging supervisor killed")
        assert staging.supervisor.servers()["supervisor"] != supervisor


def _switch_then_kill_the_control_plane(staging: Staging) -> int:
    """A deploy's rollout switches staging to a version the alias does not name, then
    the control plane is SIGKILLed before the deploy moves the alias (the deploy,
    failing, then releases its lease). Returns the alias's version."""
    alias = staging.alias()
    other = next(v for v in staging.container.registry.versions(staging.model) if v != alias)
    deploy_lease = staging.container.leases.hold(
        staging.model, "staging", "a deploy in progress", ttl_s=600, wait_s=60
    )
    with deploy_lease:  # the deploy's lease: the control plane's loop leaves it alone
        examples = staging.container.registry.manifest(staging.model, other).examples
        reconcile.deploy(staging.container.deployer, staging.model, other, examples)
        assert staging.stack.served_version() == other
        _kill(staging.stack, "control-plane")
    return alias


@pytest.mark.fault
def test_a_control_plane_killed_after_its_switch_converges_to_the_alias_by_itself(
    stack: Stack,
) -> None:
    """No `modelrail up`: the watchdog starts the control plane again (it also serves the
    KMS that staging servers verify manifests with, so nothing else could start one),
    and its reconciliation converges the service to the alias, not to the version its
    template was left pinned to."""
    with Staging(stack) as staging:
        killed = int(_process(stack, "control-plane")["pid"])
        alias = _switch_then_kill_the_control_plane(staging)

        _timed_convergence(staging, "the control plane killed after its switch")
        assert stack.served_version() == alias
        assert _restarted(stack, "control-plane", killed)


@pytest.mark.fault
def test_a_control_plane_killed_with_the_watchdog_converges_to_the_alias_on_up(
    stack: Stack,
) -> None:
    """The watchdog killed first: nothing restarts it or the control plane; `up`
    restarts both, and the control plane's reconciliation converges the service."""
    with Staging(stack) as staging:
        _kill(stack, "watchdog")
        alias = _switch_then_kill_the_control_plane(staging)
        dead = {
            row["name"]
            for row in orjson.loads(stack.modelrail("status", "--json").stdout)["processes"]
            if not row["alive"]
        }
        assert {"watchdog", "control-plane"} <= dead
        stack.modelrail("up", "--emulators", "--free-ports")

    with Staging(stack) as staging:  # the restarted stack's endpoints
        _timed_convergence(staging, "the control plane killed after its switch, then up")
        assert stack.served_version() == alias
    assert orjson.loads(stack.modelrail("status", "--json").stdout)["up"] is True


@pytest.mark.fault
def test_down_leaves_no_process_or_port_behind(stack: Stack) -> None:
    state = stack.state()
    pids = [pid for p in state["processes"] for pid in group_members(p["pid"])]
    ports = [p["port"] for p in state["processes"] if p["port"]] + [stack.staging_port]
    assert pids
    assert port_in_use(stack.staging_port)

    stack.modelrail("down")

    assert [pid for pid in pids if _running(pid)] == []
    assert [port for port in ports if port_in_use(port)] == []
    assert not (stack.home / "stack" / "state.json").exists()
    assert "not up" in stack.modelrail("status").stdout


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
