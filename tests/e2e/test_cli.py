"""The CLI as a user runs it: demo, a second upload, a broken upload, retries, history."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from tests.conftest import PENGUINS, REPO, STATE_DEADLINE_S, settings_env

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

MODELRAIL = Path(sys.executable).with_name("modelrail")
# A client's instance: every feature present, null where a value is missing.
INSTANCE = {
    "island": "Dream",
    "bill_length_mm": 46.5,
    "bill_depth_mm": 17.9,
    "flipper_length_mm": None,
    "body_mass_g": 3500,
    "sex": "female",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class User:
    """Runs ``modelrail`` commands in the repository, with its own state directory."""

    def __init__(self, home: Path) -> None:
        self.env = {
            **os.environ,
            **settings_env(home, MODELRAIL_STAGING_PORT=str(_free_port())),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(MODELRAIL), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"modelrail {args} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def json(self, *args: str) -> object:
        return orjson.loads(self.run(*args, "--json").stdout)

    @property
    def staging_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MODELRAIL_STAGING_PORT']}"


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    user = User(tmp_path_factory.mktemp("e2e") / "home")
    try:
        demo = user.run("demo")
        user.demo_output = demo.stdout  # type: ignore[attr-defined]
        yield user
    finally:
        user.run("down", check=False)


def promoted(user: User, run_id: str) -> bool:
    """Whether the gate made the run's candidate the champion (its verdict's word)."""
    full = user.json("runs", run_id)
    assert isinstance(full, dict)
    return bool(full["reports"]["evaluation"]["verdict"]["promote"])


def _served_version(user: User) -> int:
    response = requests.post(
        f"{user.staging_url}/predict",
        json={"instances": [INSTANCE]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["model"]["version"])


def test_demo_registers_version_1_and_staging_answers(user: User) -> None:
    output = user.demo_output  # type: ignore[attr-defined]

    for stage in ("validate", "train", "evaluate", "register", "deploy"):
        assert f" {stage} " in output
    assert "version 1 of 'penguins' is registered" in output
    assert '"label": "Adelie"' in output  # the printed prediction for the first example
    assert _served_version(user) == 1


def test_a_second_valid_upload_becomes_version_2_in_staging(user: User, tmp_path: Path) -> None:
    # Next month's export: the same kind of data, rows in another order.
    header, *rows = PENGUINS.read_text().splitlines()
    second = tmp_path / "penguins-2.csv"
    second.write_text("\n".join([header, *rows[::-1]]) + "\n")

    user.run("upload", str(second))

    assert _served_version(user) == 2
    [model] = user.json("models")  # type: ignore[misc]
    assert [v["version"] for v in model["versions"]] == [1, 2]
    # Staging follows every blessed candidate; the champion only one at least as good.
    champion = 2 if promoted(user, user.json("runs")[-1]["run_id"]) else 1  # type: ignore[index]
    assert model["aliases"] == {"champion": champion, "staging": 2}
    data = model["versions"][1]["lineage"]["data"]
    assert data["uri"].startswith("gs://modelrail-data/uploads/penguins/penguins-2.csv#")
    snapshot = data["snapshot"]  # the typed data train and evaluate read
    assert snapshot["rows"] == 344
    assert snapshot["uri"].endswith("/snapshot/index.json")  # it names the parts
    assert len(snapshot["sha256"]) == 64


def test_synthetic_data_unlike_the_champions_is_refused_as_drift(
    user: User, tmp_path: Path
) -> None:
    before = user.json("models")
    synthetic = tmp_path / "synthetic.csv"
    user.run("synth", "--rows", "1500", "--seed", "5", "--out", str(synthetic))

    result = user.run("upload", str(synthetic), check=False)

    assert result.returncode == 1
    assert "validate failed (data_drift)" in result.stdout
    assert "bill_length_mm PSI" in result.stdout
    assert user.json("models") == before


def test_a_broken_upload_fails_with_every_problem_and_changes_nothing(
    user: User, tmp_path: Path
) -> None:
    before = user.json("models")
    staged = _served_version(user)
    broken = tmp_path / "broken.csv"
    text = PENGUINS.read_text().replace(",year", ",season")
    text = text.replace(
        "Adelie,Torgersen,39.1,18.7,181,3750", "Adelie,Atlantis,39.1,18.7,181,99999"
    )
    broken.write_text(text)

    result = user.run("upload", str(broken), check=False)

    assert result.returncode == 1
    assert "[missing_column] required column 'year' is missing" in result.stdout
    assert "[category] column 'island'" in result.stdout
    assert "[range] column 'body_mass_g'" in result.stdout
    assert "rows [1]" in result.stdout
    assert user.json("models") == before
    assert _served_version(user) == staged
    runs = user.json("runs")
    assert runs[-1]["outcome"] == "failed"  # type: ignore[index]


def test_the_same_retrain_request_twice_is_one_run(user: User) -> None:
    runs_before = len(user.json("runs"))  # type: ignore[arg-type]

    # The newest CSV may be a broken one (another test uploads it): the outcome does
    # not matter here, only that both requests report the same single run.
    first = user.run("retrain", "--request-id", "e2e-retrain", check=False)
    second = user.run("retrain", "--request-id", "e2e-retrain", check=False)

    runs = user.json("runs")
    assert len(runs) == runs_before + 1  # type: ignore[arg-type]
    assert runs[-1]["trigger"]["request_id"] == "e2e-retrain"  # type: ignore[index]
    reported = [
        [line for line in result.stdout.splitlines() if line.startswith("run run-")]
        for result in (first, second)
    ]
    assert reported[0] == reported[1] == [f"run {runs[-1]['run_id']}: {runs[-1]['outcome']}"]  # type: ignore[index]


def test_down_and_serve_stop_and_start_the_staging_server(tmp_path: Path) -> None:
    user = User(tmp_path / "home")
    try:
        user.run("demo")
        assert _served_version(user) == 1

        user.run("down")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{user.staging_url}/healthz", timeout=2)

        with subprocess.Popen(
            [str(MODELRAIL), "serve"], cwd=REPO, env=user.env, stdout=subprocess.PIPE, text=True
        ) as serve:
            assert serve.stdout is not None
            line = serve.stdout.readline()  # blocks until the server is deployed
            assert line.startswith("staging serves penguins v1 at"), line
            assert _served_version(user) == 1

            serve.terminate()  # SIGTERM, as a process manager stops it
            assert serve.wait(timeout=STATE_DEADLINE_S) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{user.staging_url}/healthz", timeout=2)
    finally:
        user.run("down", check=False)  # a no-op when the test got that far


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs.csv", "a/./b.csv", "."])
def test_an_upload_name_outside_uploads_is_refused_plainly(user: User, name: str) -> None:
    result = user.run("upload", str(PENGUINS), "--name", name, check=False)

    assert result.returncode == 2  # a usage error, before anything is written
    assert "is not an object name under uploads/penguins/" in result.stderr
    assert "Traceback" not in result.stderr


def test_reconcile_brings_staging_back_to_what_its_alias_names(user: User) -> None:
    [in_step] = user.json("reconcile")  # type: ignore[misc]
    assert in_step["status"] == "in_step"
    user.run("down")  # staging stopped: nothing serves, the alias still names a version

    [converged] = user.json("reconcile")  # type: ignore[misc]

    assert isinstance(converged, dict)
    assert (converged["status"], converged["served_version"]) == ("converged", None)
    assert _served_version(user) == converged["alias_version"]
