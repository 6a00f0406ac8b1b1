"""The local control plane runs a job's parallel tasks as Cloud Run does: one process
per task, each told its ``CLOUD_RUN_TASK_INDEX`` of ``CLOUD_RUN_TASK_COUNT``, all at
once; the execution counts them and succeeds only when every task has. The count is
the job's (``job_tasks``, Terraform's ``task_count``) unless the run request overrides
it. Through the unchanged Cloud Run adapter, over the real REST API."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.adapters.google.cloudrun import CloudRunJobLauncher
from modelrail.kernel.processes import wait_until
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.localcloud.emulators import free_port
from tests.conftest import STATE_DEADLINE_S
from tests.fakes import FakeDeployer

PROJECT, REGION, JOB = "proj-local", "europe-west1", "batch"
# Each task writes its index and count, and fails where FAIL names its index.
PROGRAM = (
    "import os, pathlib, sys; index = os.environ['CLOUD_RUN_TASK_INDEX']; "
    "pathlib.Path(os.environ['OUT'], index).write_text(os.environ['CLOUD_RUN_TASK_COUNT']); "
    "sys.exit(3 if index == os.environ.get('FAIL') else 0)"
)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, str]]:
    (tmp_path / "out").mkdir()
    control = ControlPlane(
        project=PROJECT,
        region=REGION,
        services=lambda short: None,
        backend=lambda model: FakeDeployer(),
        job_command=[sys.executable, "-c", PROGRAM],
        job_env={"OUT": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"},
        state_dir=tmp_path / "stack",
        job_tasks={JOB: 3},
    )
    port = free_port()
    server = control.server(port)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    yield control, f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    control.wait_idle(10)


def test_each_task_runs_at_once_with_its_index_and_the_count(
    plane: tuple[ControlPlane, str], tmp_path: Path
) -> None:
    launcher = CloudRunJobLauncher(PROJECT, REGION, plane[1])

    execution = launcher.launch(JOB, b"{}")

    assert wait_until(lambda: launcher.state(execution).status == "succeeded", STATE_DEADLINE_S)
    written = {path.name: path.read_text() for path in (tmp_path / "out").iterdir()}
    assert written == {"0": "3", "1": "3", "2": "3"}
    resource = plane[0].get_execution(execution)
    assert (resource["taskCount"], resource["succeededCount"]) == (3, 3)


def test_an_execution_fails_when_one_of_its_tasks_does(
    plane: tuple[ControlPlane, str], tmp_path: Path
) -> None:
    plane[0].job_env["FAIL"] = "1"
    launcher = CloudRunJobLauncher(PROJECT, REGION, plane[1])

    execution = launcher.launch(JOB, b"{}")

    assert wait_until(lambda: launcher.state(execution).status == "failed", STATE_DEADLINE_S)
    resource = plane[0].get_execution(execution)
    assert (resource["succeededCount"], resource["failedCount"]) == (2, 1)


def test_the_run_request_overrides_the_task_count(plane: tuple[ControlPlane, str]) -> None:
    body = {"overrides": {"taskCount": 2}}

    operation = plane[0].run_job(f"projects/{PROJECT}/locations/{REGION}/jobs/train", "train", body)

    assert operation["metadata"]["taskCount"] == 2
