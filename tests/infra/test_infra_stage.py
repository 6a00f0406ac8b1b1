"""`make stage`: self-contained Cloud Functions source folders, byte-for-byte
reproducible, that install and serve from their own requirements.txt alone."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import venv
from pathlib import Path
from types import ModuleType

import pytest

from tests.infra.infra_checks import REPO_ROOT, load_topology

pytestmark = pytest.mark.infra

JOB_REQUIREMENTS = REPO_ROOT / "services" / "train-job" / "requirements.txt"
VENV_CACHE = REPO_ROOT / "build" / "tools" / "function-venvs"
SERVED_STAGE = "validate"


def load_stage_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stage_functions", REPO_ROOT / "scripts" / "stage_functions.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stage_script() -> ModuleType:
    return load_stage_script()


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, stage_script: ModuleType) -> Path:
    out = tmp_path_factory.mktemp("stage")
    assert stage_script.main(["--out", str(out)]) == 0
    return out


def consumers() -> list[str]:
    return sorted({s["consumer"] for s in load_topology()["subscriptions"] if s.get("consumer")})


@pytest.mark.parametrize("stage", consumers())
def test_each_function_folder_is_self_contained(staged: Path, stage: str) -> None:
    folder = staged / stage
    for name in ("main.py", "requirements.txt", "pipeline.toml", "topology.yaml"):
        assert (folder / name).is_file(), name
    assert (folder / "modelrail" / "__init__.py").is_file()
    assert (folder / "schemas" / "events" / "retrain-requested.json").is_file()
    assert not any(p.is_symlink() for p in folder.rglob("*"))
    assert not list(folder.rglob("__pycache__"))
    requirements = (folder / "requirements.txt").read_text().splitlines()
    pins = [line for line in requirements if line and not line.startswith("#")]
    assert all("==" in pin for pin in pins)
    names = {pin.split("==")[0] for pin in pins}
    assert {"functions-framework", "lightgbm", "pandas", "google-cloud-pubsub"} <= names
    assert "scikit-learn" not in names
    assert "pytest" not in names


def test_staging_is_reproducible(staged: Path, stage_script: ModuleType, tmp_path: Path) -> None:
    assert stage_script.main(["--out", str(tmp_path), "--only", SERVED_STAGE]) == 0
    again = stage_script.tree_digest(tmp_path / SERVED_STAGE)
    assert again == stage_script.tree_digest(staged / SERVED_STAGE)
    mtimes = {p.stat().st_mtime for p in (tmp_path / SERVED_STAGE).rglob("*")}
    assert mtimes == {stage_script.FIXED_MTIME}


def test_training_image_requirements_are_current(stage_script: ModuleType) -> None:
    expected = stage_script.requirements_text(stage_script.JOB_EXTRAS)
    assert JOB_REQUIREMENTS.read_text() == expected, (
        "regenerate: .venv/bin/python scripts/stage_functions.py --only validate "
        "--job-requirements services/train-job/requirements.txt"
    )
    names = {line.split("==")[0] for line in expected.splitlines() if "==" in line}
    assert not names & {"scikit-learn", "functions-framework", "flask", "gunicorn", "pytest"}


def function_venv(requirements: Path) -> Path:
    """A fresh virtual environment with only ``requirements``, cached by their hash."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    target = VENV_CACHE / digest
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    venv.create(target, with_pip=True)
    subprocess.run(
        [
            str(target / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
        check=True,
        timeout=900,
    )
    (target / ".complete").touch()
    return target


SERVE = r"""
import base64, datetime, json, sys
import functions_framework

folder = sys.argv[1]
app = functions_framework.create_app(
    target="handle", source=folder + "/main.py", signature_type="cloudevent"
)
import modelrail  # importable only through the function's own folder

assert modelrail.__file__.startswith(folder), modelrail.__file__
client = app.test_client()
event = {"schema_version": 1, "event_type": "retrain-requested", "request_id": "stage-check"}
push = {
    "message": {
        "data": base64.b64encode(json.dumps(event).encode()).decode(),
        "attributes": {"event_type": "retrain-requested"},
        "messageId": "1",
        "publishTime": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
    },
    "subscription": "projects/p/subscriptions/retrain-requested--validate",
}
response = client.post("/projects/p/topics/retrain-requested", json=push)
print(json.dumps({"status": response.status_code}))
"""


@pytest.mark.timeout(900)
def test_a_staged_function_installs_and_serves_in_a_fresh_venv(
    staged: Path, tmp_path: Path
) -> None:
    folder = staged / SERVED_STAGE
    python = function_venv(folder / "requirements.txt") / "bin" / "python"
    home = tmp_path / "home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "MODELRAIL_MODE": "embedded",
        "MODELRAIL_HOME": str(home),
        "MODELRAIL_CONFIG": str(folder / "pipeline.toml"),
        "MODELRAIL_TOPOLOGY": str(folder / "topology.yaml"),
        "MODELRAIL_CODE_VERSION": "stage-check",
    }
    # -I: nothing from the checkout or the project's environment leaks in.
    completed = subprocess.run(
        [str(python), "-I", "-c", SERVE, str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "ModuleNotFoundError" not in output, output
    assert "ImportError" not in output, output
    status = json.loads(completed.stdout.strip().splitlines()[-1])["status"]
    # The function ran the stage: a result (2xx) or a retryable failure (500), never a
    # framework-level refusal (400/404) of a real Pub/Sub push body.
    assert status in (200, 204, 500), output
