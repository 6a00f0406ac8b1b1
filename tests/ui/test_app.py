"""The UI's pages through Flask's test client: what each page says, and what it refuses."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from modelrail.ui import create_app
from tests.ui.conftest import History


@pytest.fixture(scope="module")
def client(history: History) -> FlaskClient:
    return create_app(history.container).test_client()


def test_the_run_list_shows_outcomes_stages_and_failure_reasons(
    client: FlaskClient, history: History
) -> None:
    page = client.get("/").get_data(as_text=True)

    assert history.deployed_run in page
    assert history.failed_run in page
    assert "contract_violation" in page
    assert "required column &#39;year&#39; is missing" in page
    assert "<svg" in page  # the stage timeline


def test_a_run_page_shows_records_reports_events_and_lineage(
    client: FlaskClient, history: History
) -> None:
    page = client.get(f"/runs/{history.deployed_run}").get_data(as_text=True)

    for stage in ("validate", "train", "evaluate", "register", "deploy"):
        assert f'id="stage-{stage}"' in page
    assert "model-deployed" in page
    assert "evaluation report" in page
    assert "validation report" in page
    assert "config" in page  # lineage


def test_the_model_page_plots_metrics_and_links_card_and_manifest(
    client: FlaskClient, history: History
) -> None:
    page = client.get("/models/penguins").get_data(as_text=True)

    assert 'id="v1"' in page
    # Where the version lives: its folder in the bucket, its package in the repository.
    assert "gs://modelrail-artifacts/models/penguins/versions/1/" in page
    published = history.container.registry.publication("penguins", 1)
    assert published is not None
    assert f"<code>penguins</code> <code>v1</code><br><code>{published.uri}</code>" in page
    # ... and its version of the Vertex AI model (embedded mode: a local directory).
    vertex = published.vertex
    assert vertex is not None
    assert vertex["model"].endswith("/models/penguins")
    assert f'<code class="vertex">{vertex["model"]}@{vertex["version_id"]}</code>' in page
    assert 'aria-label="accuracy by version"' in page
    card = client.get("/models/penguins/versions/1/card.html")
    assert card.status_code == 200
    assert card.mimetype == "text/html"
    assert "penguins — version 1" in card.get_data(as_text=True)
    manifest = client.get("/models/penguins/versions/1/manifest.json")
    assert manifest.get_json()["version"] == 1


def test_pages_load_nothing_from_elsewhere(client: FlaskClient) -> None:
    response = client.get("/")

    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "http://" not in response.get_data(as_text=True)
    assert "https://" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/runs/run-00000000000000000000",
        "/runs/..%2F..%2Fetc",
        "/models/nope",
        "/models/penguins/versions/9/card.html",
        "/models/penguins/versions/9/manifest.json",
    ],
)
def test_unknown_things_are_404(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_the_ui_is_read_only(client: FlaskClient, history: History) -> None:
    assert client.post("/").status_code == 405
    assert client.post(f"/runs/{history.deployed_run}").status_code == 405


def test_modelrail_models_shows_the_same_places(history: History) -> None:
    from click.testing import CliRunner

    from modelrail.entry.cli import main

    env = history.container.settings.to_env()
    output = CliRunner().invoke(main, ["models"], env=env, catch_exceptions=False).output

    published = history.container.registry.publication("penguins", 1)
    assert published is not None
    assert f"published penguins v1  {published.uri}" in output
    vertex = published.vertex
    assert vertex is not None
    assert f"vertex {vertex['model']}@{vertex['version_id']}" in output
