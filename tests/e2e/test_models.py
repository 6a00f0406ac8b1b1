"""Two models in one installation, as a team uses them from the command line: each
with its own data, versions, staging service and history, commands run from a
directory of their own (no checkout, no pipeline.toml beside them)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.conftest import PENGUINS, REPO, STATE_DEADLINE_S
from tests.e2e.test_cli import INSTANCE, MODELRAIL, _free_port
from tests.e2e.test_own_data import OwnUser

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("models")]

GRUNFELD_ROW = {"value": 3078.5, "capital": 2.8, "firm": "General Motors", "year": 1935}


class Team(OwnUser):
    """Runs ``modelrail`` in a directory of its own, on one home, several models."""

    def models(self) -> dict[str, dict[str, Any]]:
        return {m["model"]: m for m in orjson.loads(self.run("models", "--json").stdout)}

    def runs(self, model: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = orjson.loads(
            self.run("runs", "--model", model, "--json").stdout
        )
        return runs


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """penguins (the bundled definition, added) and grunfeld (a regression on
    statsmodels' firm investments, from `init`), each uploaded once."""
    team = Team(tmp_path_factory.mktemp("team"))
    grunfeld = resources.files("statsmodels.datasets") / "grunfeld" / "grunfeld.csv"
    (team.workdir / "grunfeld.csv").write_bytes(grunfeld.read_bytes())
    try:
        team.run("add", str(REPO / "pipeline.toml"))
        team.run("init", "grunfeld.csv", "--target", "invest")
        team.run("upload", str(PENGUINS), "--model", "penguins")
        team.run("upload", "grunfeld.csv", "--model", "grunfeld")
        yield team
    finally:
        team.run("down", check=False)


def _predict(url: str, row: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{url}/predict", json={"instances": [row]}, timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_each_model_is_served_at_its_own_url_with_what_its_alias_names(team: Team) -> None:
    models = team.models()

    assert sorted(models) == ["grunfeld", "penguins"]
    urls = {name: model["staging_url"] for name, model in models.items()}
    assert urls["penguins"] != urls["grunfeld"]
    for name, row in (("penguins", INSTANCE), ("grunfeld", GRUNFELD_ROW)):
        staged = models[name]["aliases"]["staging"]
        assert models[name]["served"]["model"] == name
        assert models[name]["served"]["version"] == staged
        assert _predict(urls[name], row)["model"] == {"name": name, "version": staged}
    # Each service answers only its own schema: a penguin is no firm.
    wrong = requests.post(f"{urls['grunfeld']}/predict", json={"instances": [INSTANCE]}, timeout=30)
    assert wrong.status_code == 422, wrong.text


def test_a_command_naming_no_model_lists_them(team: Team) -> None:
    for args in (("upload", str(PENGUINS)), ("retrain",), ("rollback",), ("serve",)):
        result = team.run(*args, check=False)
        assert result.returncode == 1, (args, result.stdout)
        assert "2 models are installed (grunfeld, penguins): name one" in result.stderr


def test_retrain_trains_on_its_models_own_upload(team: Team) -> None:
    # grunfeld's upload is the newest object in the data bucket.
    team.run("retrain", "--model", "penguins", "--request-id", "penguins-again")

    [*_, run] = team.runs("penguins")
    assert run["outcome"] == "deployed"
    assert run["trigger"]["key"] == "request:penguins-again"
    shown = team.run("runs", run["run_id"]).stdout
    assert '"uri": "gs://modelrail-data/uploads/penguins/penguins.csv#' in shown
    assert all(r["run_id"] != run["run_id"] for r in team.runs("grunfeld"))


def test_a_rollback_moves_its_own_models_staging_and_says_so(team: Team) -> None:
    staged = team.models()["penguins"]["aliases"]["staging"]
    assert staged >= 2  # the upload, then the retrain
    grunfeld_before = team.models()["grunfeld"]

    result = team.run("rollback", "--model", "penguins", "--to", "1")

    assert f"staging moved from v{staged} to v1" in result.stdout
    models = team.models()
    assert models["penguins"]["served"]["version"] == 1
    assert _predict(models["penguins"]["staging_url"], INSTANCE)["model"]["version"] == 1
    grunfeld = models["grunfeld"]
    assert (grunfeld["aliases"], grunfeld["served"]) == (
        grunfeld_before["aliases"],
        grunfeld_before["served"],
    )


def test_a_changed_staging_port_setting_keeps_each_models_recorded_url(team: Team) -> None:
    before = {name: model["staging_url"] for name, model in team.models().items()}
    team.env["MODELRAIL_STAGING_PORT"] = str(_free_port())

    team.run("upload", "grunfeld.csv", "--model", "grunfeld", "--name", "again.csv")

    models = team.models()
    assert {name: model["staging_url"] for name, model in models.items()} == before
    staged = models["grunfeld"]["aliases"]["staging"]
    assert _predict(before["grunfeld"], GRUNFELD_ROW)["model"]["version"] == staged


def test_runs_models_and_the_ui_work_from_any_directory(team: Team, tmp_path: Path) -> None:
    elsewhere = Team(tmp_path)
    elsewhere.env = {**team.env}

    assert sorted(elsewhere.models()) == ["grunfeld", "penguins"]
    assert elsewhere.runs("grunfeld")
    listed = elsewhere.run("runs").stdout
    assert "grunfeld" in listed
    assert "penguins" in listed
    port = _free_port()
    ui = subprocess.Popen(
        [str(MODELRAIL), "ui", "--port", str(port)], cwd=tmp_path, env=elsewhere.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        page = _when_up(f"http://127.0.0.1:{port}/models", ui)
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)
    assert 'href="/models/grunfeld"' in page
    assert 'href="/models/penguins"' in page


def _when_up(url: str, process: subprocess.Popen[bytes]) -> str:
    """``url``'s page once the server ``process`` answers (its stderr if it exits)."""
    deadline = time.monotonic() + STATE_DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr and process.stderr.read()
        try:
            return requests.get(url, timeout=5).text
        except requests.ConnectionError:
            time.sleep(0.1)  # polling until the server listens
    raise AssertionError(f"{url} did not answer within {STATE_DEADLINE_S:.0f} s")
