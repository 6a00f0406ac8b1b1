"""Emulator mode training on Dask: `modelrail up --emulators` starts a `dask scheduler`
and the configured workers beside the emulators when pipeline.toml trains on Dask,
the training job (run by the local control plane) joins that cluster, whose workers
read the snapshot's parts from fake-gcs-server themselves, and `modelrail down` leaves
no process and no port taken."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelrail.kernel.processes import port_in_use, wait_until
from modelrail.localcloud.emulators import free_port
from tests.conftest import PENGUINS, settings_env
from tests.integration.emulator_support import require_emulators
from tests.integration.test_dask_training import dask_config

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

MODELRAIL = Path(sys.executable).parent / "modelrail"
PIPELINE_TIMEOUT_S = 300.0


def _modelrail(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [str(MODELRAIL), *args], env=env, capture_output=True, text=True, check=False,
        timeout=240,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def dask_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_emulators()
    home = tmp_path_factory.mktemp("dask-stack")
    config = dask_config(home / "config", "workers = 2")
    env = {
        **os.environ,
        **settings_env(home),
        "MODELRAIL_STAGING_PORT": str(free_port()),
    }
    try:
        _modelrail(env, "up", "--emulators", "--free-ports", "--dask-workers", "2")
        state = orjson.loads((home / "stack" / "state.json").read_bytes())
        _modelrail({**env, **state["env"]}, "add", str(config))
        yield {**env, **state["env"]}
    finally:
        _modelrail(env, "down", check=False)


def _processes(env: dict[str, str]) -> list[dict[str, Any]]:
    status: dict[str, Any] = orjson.loads(_modelrail(env, "status", "--json"))
    return list(status["processes"])


def test_up_starts_a_scheduler_and_the_workers_asked_for(dask_stack: dict[str, str]) -> None:
    alive = {p["name"] for p in _processes(dask_stack) if p["alive"]}

    assert {"dask-scheduler", "dask-worker-0", "dask-worker-1"} <= alive
    assert dask_stack["MODELRAIL_DASK_SCHEDULER"].startswith("tcp://127.0.0.1:")


def test_an_upload_trains_on_the_stacks_cluster_and_deploys(dask_stack: dict[str, str]) -> None:
    _modelrail(dask_stack, "upload", str(PENGUINS))

    def ended() -> bool:
        runs = orjson.loads(_modelrail(dask_stack, "runs", "--json"))
        return bool(runs) and runs[-1]["outcome"] not in ("running", "registered")

    assert wait_until(ended, PIPELINE_TIMEOUT_S, 1.0)
    [run] = orjson.loads(_modelrail(dask_stack, "runs", "--json"))
    assert run["outcome"] == "deployed", run
    shown = _modelrail(dask_stack, "runs", run["run_id"])
    assert "engine: dask" in shown
    assert "2 Dask workers, each at most" in shown


def test_down_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    require_emulators()
    home = tmp_path / "home"
    env = {
        **os.environ,
        **settings_env(home, MODELRAIL_STACK_DASK_WORKERS="2"),
        "MODELRAIL_STAGING_PORT": str(free_port()),
    }
    try:
        _modelrail(env, "up", "--emulators", "--free-ports")
        processes = _processes(env)
    finally:
        _modelrail(env, "down", check=False)

    pids = [p["pid"] for p in processes if p["name"].startswith("dask-")]
    ports = [p["port"] for p in processes if p["name"].startswith("dask-") and p["port"]]
    assert len(pids) == 3

    def gone() -> bool:
        return not any(_alive(pid) for pid in pids) and not any(map(port_in_use, ports))

    assert wait_until(gone, 30.0, 0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
