"""Validation at size in emulator mode: with the stack's settings naming a validate job
and a threshold below the upload's size, the validate function hands the upload to the
local control plane, which runs ``python -m modelrail.entry.validate_job`` as Cloud Run
runs the job; the job records validate and the run goes on to a served version.

A stack of its own (the module's settings differ from test_emulator_stack's), on free
127.0.0.1 ports under a temporary home, in the same xdist group: one stack at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.kernel.processes import wait_until
from tests.conftest import PENGUINS, STATE_DEADLINE_S
from tests.integration.test_emulator_stack import (
    PIPELINE_TIMEOUT_S,
    Stack,
    Staging,
    running_stack,
)

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

JOB = "modelrail-validate"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Anything above 1 KiB goes to the job: the bundled CSV is 15 KiB.
    home = tmp_path_factory.mktemp("validate-job-home")
    settings = {"MODELRAIL_VALIDATE_JOB": JOB, "MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB": str(1 / 1024)}
    with running_stack(home, **settings) as started:
        yield started


def test_an_upload_above_the_threshold_is_validated_by_the_job_and_deployed(
    stack: Stack,
) -> None:
    bucket = stack.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")

    stack.gcloud("storage", "cp", str(PENGUINS), f"gs://{bucket}/uploads/penguins/penguins.csv")

    assert wait_deployed(stack), stack.modelrail("runs", check=False).stdout
    [run] = stack.runs()
    assert run["stages"]["validate"]["status"] == "succeeded"
    # The claim names the job's execution on the control plane ...
    with Staging(stack) as staging:  # the stack's buckets and control plane, from here
        handoff = staging.container.runs.handoff(run["run_id"], "validate")
        assert handoff is not None
        assert handoff.job == JOB
        assert handoff.execution is not None
        assert f"/jobs/{JOB}/executions/" in handoff.execution
        assert staging.container.launcher.state(handoff.execution).status == "succeeded"
    # ... a subprocess of modelrail.entry.validate_job, which recorded validate; the
    # function only handed it off.
    short = handoff.execution.rsplit("/", 1)[-1]
    job_log = (stack.home / "stack" / "logs" / "executions" / f"{short}.log").read_text()
    assert "validate succeeded" in job_log, job_log
    function_log = _log(stack.home, "function-validate")
    assert "handed to a job" in function_log
    assert "validate succeeded" not in function_log


def wait_deployed(stack: Stack) -> bool:
    if not wait_until(lambda: stack.served_version() >= 1, PIPELINE_TIMEOUT_S, 0.2):
        return False
    return wait_until(lambda: stack.deployed_runs() == 1, STATE_DEADLINE_S, 1.0)


def _log(home: Path, name: str) -> str:
    return (home / "stack" / "logs" / f"{name}.log").read_text()
