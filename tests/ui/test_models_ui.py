"""The UI over an installation of two models: every model listed, each with its own
runs and versions, and the run list filtered by model."""

from __future__ import annotations

from importlib import resources

import pytest
from flask.testing import FlaskClient

from modelrail.composition.bootstrap import bootstrap
from modelrail.entry import init
from modelrail.settings.process import Settings
from modelrail.ui import create_app
from tests.conftest import PENGUINS, installed, settings_env
from tests.fakes import FakeDeployer
from tests.ui.conftest import _upload


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlaskClient, dict[str, str]]:
    """penguins and grunfeld installed in one home, one run of each: the client, and
    each model's run."""
    home = tmp_path_factory.mktemp("ui-models")
    csv_path = home / "grunfeld.csv"
    grunfeld = resources.files("statsmodels.datasets") / "grunfeld" / "grunfeld.csv"
    csv_path.write_bytes(grunfeld.read_bytes())
    config_path, _ = init.write(init.infer(csv_path, "invest"), home / "grunfeld")
    settings = Settings.from_env(settings_env(home / "state"))
    container = installed(bootstrap(settings, deployer_factory=lambda _model: FakeDeployer()))
    installed(container, config_path)
    runs = {
        "penguins": _upload(container, "uploads/penguins/p.csv", PENGUINS.read_bytes()),
        "grunfeld": _upload(container, "uploads/grunfeld/g.csv", csv_path.read_bytes()),
    }
    return create_app(container).test_client(), runs


def test_every_model_is_listed_with_its_own_versions_and_runs(
    two: tuple[FlaskClient, dict[str, str]],
) -> None:
    client, _ = two
    page = client.get("/models").get_data(as_text=True)

    assert 'href="/models/penguins"' in page
    assert 'href="/models/grunfeld"' in page
    assert "regression" in page
    assert "multiclass" in page
    assert 'href="/?model=grunfeld"' in page
    grunfeld = client.get("/models/grunfeld").get_data(as_text=True)
    assert 'id="v1"' in grunfeld
    assert "uploads/grunfeld/g.csv" in grunfeld
    assert "uploads/penguins/" not in grunfeld


def test_the_run_list_filters_by_model(two: tuple[FlaskClient, dict[str, str]]) -> None:
    client, runs = two
    every = client.get("/").get_data(as_text=True)
    only = client.get("/?model=grunfeld").get_data(as_text=True)

    assert runs["penguins"] in every
    assert runs["grunfeld"] in every
    assert runs["grunfeld"] in only
    assert runs["penguins"] not in only
    assert client.get("/?model=diamonds").status_code == 404
