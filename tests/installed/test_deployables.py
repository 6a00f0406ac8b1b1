"""The staging service, the training job and a stage function, each started from what
its image or staged folder holds, with the environment Terraform gives it: no file of
the checkout is importable (see conftest.py)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from modelrail.kernel.events import DataUploaded
from modelrail.kernel.ports import Message
from modelrail.kernel.processes import ProcessRecord, spawn, stop_groups
from modelrail.localcloud.emulators import free_port
from tests.conftest import PENGUINS, REPO, STATE_DEADLINE_S, wait_for
from tests.infra.infra_checks import Module
from tests.infra.test_infra_stage import load_stage_script
from tests.installed.conftest import (
    DATA_BUCKET,
    PROJECT,
    Cloud,
    assert_outside_checkout,
    base_env,
    fresh_venv,
    locked_closure,
    terraform_env,
)

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("installed")]

_http = urllib3.PoolManager(retries=False, timeout=30.0)
ROW = {
    "island": "Dream", "bill_length_mm": 46.5, "bill_depth_mm": 17.9,
    "flipper_length_mm": 192, "body_mass_g": 3500, "sex": "female",
}  # fmt: skip


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    """The ``ENV`` of a Dockerfile's last stage (``KEY=value`` pairs, continued lines)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    last_stage = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


@pytest.fixture
def started() -> Iterator[list[ProcessRecord]]:
    records: list[ProcessRecord] = []
    yield records
    stop_groups(records)


@pytest.mark.timeout(1200)
def test_the_staging_image_serves_from_the_installed_wheel(
    cloud: Cloud, wheel: Path, dev: Module, tmp_path: Path,
    started: list[ProcessRecord],
) -> None:  # fmt: skip
    closure = locked_closure(REPO / "services" / "staging" / "requirements.lock")
    python = fresh_venv(tmp_path / "venv", closure)
    subprocess.run(
        [str(closure / "bin" / "python"), "-m", "pip", "--python", str(python), "install",
         "--quiet", "--disable-pip-version-check", "--no-deps", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    image = dockerfile_env(REPO / "services" / "staging" / "Dockerfile")
    service = dev.module_calls["staging_service"]
    port = free_port()
    env = {
        **base_env(tmp_path),
        **{name: value for name, value in image.items() if name != "PATH"},
        **terraform_env(service["environment_variables"], cloud.values()),
        **cloud.env(),
        "PORT": str(port),  # Cloud Run's, instead of the image's 8080
    }
    workdir = tmp_path / "app"  # the image's WORKDIR: empty
    workdir.mkdir()
    assert_outside_checkout(python, env, workdir, tmp_path / "venv")

    # The image's CMD, from its WORKDIR.
    record, process = spawn(
        "staging", [str(python), "-m", "modelrail.serving.server"], env=env,
        log_path=tmp_path / "staging.log", port=port, cwd=workdir,
    )  # fmt: skip
    started.append(record)

    def ready() -> bool:
        log = (tmp_path / "staging.log").read_text()
        assert process.poll() is None, f"the staging service exited:\n{log[-4000:]}"
        try:
            return _http.request("GET", f"http://127.0.0.1:{port}/readyz").status == 200
        except urllib3.exceptions.HTTPError:
            return False

    wait_for(ready, "the installed staging service to be ready")
    answer = _http.request(
        "POST", f"http://127.0.0.1:{port}/predict", body=orjson.dumps({"instances": [ROW]}),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert answer.status == 200, answer.data
    assert len(orjson.loads(answer.data)["predictions"]) == 1
    ready = orjson.loads(_http.request("GET", f"http://127.0.0.1:{port}/readyz").data)
    assert ready["version"] == 1, ready


def validated_event(cloud: Cloud) -> dict[str, Any]:
    """A new run's ``dataset-validated`` event: the upload validated in this process,
    its training left to the job under test."""
    from modelrail.service import pipeline

    store = cloud.container.storage.bucket(DATA_BUCKET)
    name = f"uploads/penguins/{uuid.uuid4().hex}.csv"
    generation = store.write(name, PENGUINS.read_bytes())
    upload = DataUploaded(bucket=DATA_BUCKET, name=name, generation=generation)
    before = len(cloud.harness.published("dataset-validated"))
    pipeline.consume(
        cloud.container, "validate",
        Message(orjson.dumps(upload.to_body()), {}, topic="data-uploaded"),
    )  # fmt: skip
    published = cloud.harness.published("dataset-validated")
    assert len(published) == before + 1
    return published[-1]


@pytest.mark.timeout(1200)
def test_the_training_job_trains_from_its_image_layout(
    cloud: Cloud, dev: Module, tmp_path: Path
) -> None:
    closure = locked_closure(REPO / "services" / "train-job" / "requirements.lock")
    python = fresh_venv(tmp_path / "venv", closure)
    # services/train-job/Dockerfile: the package and its files under /app.
    app = tmp_path / "app"
    app.mkdir()
    shutil.copytree(REPO / "src" / "modelrail", app / "modelrail",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copyfile(REPO / "topology.yaml", app / "topology.yaml")
    image = dockerfile_env(REPO / "services" / "train-job" / "Dockerfile")
    train_env = dev.locals["common_env"]
    env = {
        **base_env(tmp_path),
        **{name: value.replace("/app", str(app)) for name, value in image.items()
           if name != "PATH"},
        **terraform_env(train_env, cloud.values()),
        **cloud.env(),
        "MODELRAIL_HOME": str(tmp_path / "job-home"),
        "MODELRAIL_TOPOLOGY": str(app / "topology.yaml"),
    }  # fmt: skip
    assert env["PYTHONPATH"] == str(app)
    assert_outside_checkout(python, env, app, app)
    cloud.subscribe("model-trained", "trained--installed-check")
    event = validated_event(cloud)

    job = subprocess.run(
        [str(python), "-m", "modelrail.entry.train_job"],
        env={**env, "MODELRAIL_EVENT": orjson.dumps(event).decode()},
        cwd=app, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    trained: list[dict[str, Any]] = []

    def published() -> bool:
        trained.extend(cloud.pull("trained--installed-check"))
        return any(t["run_id"] == event["run_id"] for t in trained)

    wait_for(published, "the job's model-trained event", STATE_DEADLINE_S)
    [mine] = [t for t in trained if t["run_id"] == event["run_id"]]
    assert mine["event_type"] == "model-trained"


@pytest.mark.timeout(1200)
def test_a_staged_function_validates_an_upload_from_its_folder(
    cloud: Cloud, dev: Module, tmp_path: Path
) -> None:
    stage_script = load_stage_script()
    assert stage_script.main(["--out", str(tmp_path / "staged"), "--only", "validate"]) == 0
    folder = tmp_path / "staged" / "validate"
    closure = locked_closure(folder / "requirements.txt")
    python = fresh_venv(tmp_path / "venv", closure)
    function = dev.module_calls["functions"]
    terraform = terraform_env(
        {
            **dev.locals["common_env"],
            # merge(local.common_env, local.vertex_env, {...}): Vertex AI is off here.
            "MODELRAIL_TOPOLOGY": "topology.yaml",
        },
        cloud.values(),
    )
    assert "local.common_env" in function["environment_variables"]
    env = {**base_env(tmp_path), **terraform, **cloud.env()}
    assert_outside_checkout(python, {**env, "PYTHONPATH": str(folder)}, folder, folder)
    cloud.subscribe("dataset-validated", "validated--installed-check")
    store = cloud.container.storage.bucket(DATA_BUCKET)
    generation = store.write("uploads/penguins/staged.csv", PENGUINS.read_bytes())
    upload = DataUploaded(
        bucket=DATA_BUCKET, name="uploads/penguins/staged.csv", generation=generation
    )

    # What the buildpack runs: functions-framework with the folder's main.py, behind
    # which Pub/Sub pushes the notification.
    port = free_port()
    record, _ = spawn(
        "function", [str(python), "-m", "functions_framework", "--target=handle",
                     "--signature-type=cloudevent", f"--port={port}", "--host=127.0.0.1"],
        env=env, log_path=tmp_path / "function.log", port=port, cwd=folder,
    )  # fmt: skip
    try:
        push = {
            "message": {
                "data": base64.b64encode(orjson.dumps(upload.to_body())).decode(),
                "attributes": {"eventType": "OBJECT_FINALIZE"},
                "messageId": "1",
                "publishTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "subscription": f"projects/{PROJECT}/subscriptions/data-uploaded--validate",
        }

        def answered() -> bool:
            try:
                response = _http.request(
                    "POST", f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/data-uploaded",
                    body=orjson.dumps(push), headers={"Content-Type": "application/json"},
                )  # fmt: skip
            except urllib3.exceptions.HTTPError:
                return False
            assert response.status in (200, 204), (tmp_path / "function.log").read_text()
            return True

        wait_for(answered, "the staged function to take the push")
    finally:
        stop_groups([record])
    keys = [
        event["lineage"]["trigger"]["key"] for event in cloud.pull("validated--installed-check")
    ]
    assert keys == [f"gs://{DATA_BUCKET}/uploads/penguins/staged.csv#{generation}"]
