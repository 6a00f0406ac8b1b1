"""Two models on the emulator stack: uploads by gcloud into each model's folder, a
retrain and a rollback of one, each model served by its own Cloud Run service (the
local control plane's) at its own URL, answering its own schema."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import requests

from modelrail.entry import init
from modelrail.kernel.processes import wait_until
from tests.conftest import PENGUINS, REPO, STATE_DEADLINE_S
from tests.e2e.test_cli import INSTANCE
from tests.e2e.test_models import GRUNFELD_ROW
from tests.integration.test_emulator_stack import PIPELINE_TIMEOUT_S, Stack, running_stack

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("models-stack")
    csv_path = home / "grunfeld.csv"
    grunfeld = resources.files("statsmodels.datasets") / "grunfeld" / "grunfeld.csv"
    csv_path.write_bytes(grunfeld.read_bytes())
    config_path, _ = init.write(init.infer(csv_path, "invest"), home / "grunfeld")
    with running_stack(home, models=(REPO / "pipeline.toml", config_path)) as started:
        bucket = started.env.get("MODELRAIL_DATA_BUCKET", "modelrail-data")
        started.gcloud("storage", "cp", str(PENGUINS), f"gs://{bucket}/uploads/penguins/p.csv")
        started.gcloud("storage", "cp", str(csv_path), f"gs://{bucket}/uploads/grunfeld/g.csv")
        assert wait_until(lambda: _ended(started, 2), PIPELINE_TIMEOUT_S, 1.0), started.runs()
        yield started


def _ended(stack: Stack, count: int) -> bool:
    runs = stack.runs()
    return len(runs) >= count and all(
        run["outcome"] not in ("running", "registered") for run in runs
    )


def _models(stack: Stack) -> dict[str, dict[str, Any]]:
    return {model["model"]: model for model in stack.json("models")}


def _predict(url: str, row: dict[str, Any]) -> requests.Response:
    return requests.post(f"{url}/predict", json={"instances": [row]}, timeout=30)


def test_each_model_is_deployed_to_its_own_service(stack: Stack) -> None:
    assert [run["outcome"] for run in stack.runs()] == ["deployed", "deployed"]
    models = _models(stack)

    urls = {name: model["staging_url"] for name, model in models.items()}
    assert sorted(urls) == ["grunfeld", "penguins"]
    assert urls["penguins"] != urls["grunfeld"]
    for name, row in (("penguins", INSTANCE), ("grunfeld", GRUNFELD_ROW)):
        assert (models[name]["served"]["model"], models[name]["served"]["version"]) == (name, 1)
        answer = _predict(urls[name], row)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == {"name": name, "version": 1}
    assert _predict(urls["grunfeld"], INSTANCE).status_code == 422


def test_a_retrain_and_a_rollback_of_one_model_leave_the_other_alone(
    stack: Stack, tmp_path: Path
) -> None:
    env = {**stack.env, **stack.state()["env"]}
    stack.env = env
    before = _models(stack)["grunfeld"]

    stack.modelrail("retrain", "--model", "penguins", "--request-id", "emulated-retrain")
    assert wait_until(lambda: _ended(stack, 3), PIPELINE_TIMEOUT_S, 1.0), stack.runs()
    [retrained] = [r for r in stack.runs() if r["trigger"]["key"] == "request:emulated-retrain"]
    assert retrained["outcome"] == "deployed"
    shown = stack.modelrail("runs", retrained["run_id"]).stdout
    assert "/uploads/penguins/p.csv#" in shown

    back = stack.modelrail("rollback", "--model", "penguins", "--to", "1")

    assert "staging moved from v2 to v1" in back.stdout, back.stdout + back.stderr
    models = _models(stack)
    assert models["penguins"]["served"]["version"] == 1
    assert wait_until(
        lambda: (
            _predict(models["penguins"]["staging_url"], INSTANCE).json()["model"]["version"] == 1
        ),
        STATE_DEADLINE_S,
        0.5,
    )
    after = models["grunfeld"]
    assert (after["aliases"], after["served"], after["staging_url"]) == (
        before["aliases"],
        before["served"],
        before["staging_url"],
    )
