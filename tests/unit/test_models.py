"""Several models in one installation: each trigger reaches its own model, and nothing
of one model (its data, runs, aliases, staging) is another's."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from modelrail.domain.models import Definition, Models
from modelrail.entry import init
from modelrail.kernel.errors import ConfigError, UnknownModel
from modelrail.service.rollback import rollback
from tests.conftest import REPO, installed
from tests.unit.conftest import Harness

GRUNFELD = "grunfeld"  # statsmodels: 220 firm-years, investment by firm (regression)


@pytest.fixture(scope="module")
def grunfeld_csv() -> bytes:
    return (resources.files("statsmodels.datasets") / "grunfeld" / "grunfeld.csv").read_bytes()


@pytest.fixture
def two(harness: Harness, grunfeld_csv: bytes, tmp_path: Path) -> Harness:
    """The harness's installation holding penguins (installed) and grunfeld."""
    csv_path = tmp_path / "grunfeld.csv"
    csv_path.write_bytes(grunfeld_csv)
    config_path, _ = init.write(init.infer(csv_path, "invest", name=GRUNFELD), tmp_path / "g")
    installed(harness.container, config_path)
    assert harness.container.models.names() == [GRUNFELD, "penguins"]
    return harness


def _only(harness: Harness, model: str | None) -> list:
    return [run for run in harness.runs() if run.model == model]


def test_each_upload_folder_reaches_its_own_model(
    two: Harness, penguins_csv: bytes, grunfeld_csv: bytes
) -> None:
    two.upload(penguins_csv, "uploads/penguins/p.csv")
    two.upload(grunfeld_csv, f"uploads/{GRUNFELD}/g.csv")
    two.run()

    registry = two.container.registry
    for model, key in (("penguins", "p.csv"), (GRUNFELD, "g.csv")):
        [run] = _only(two, model)
        assert run.outcome == "deployed", run.failure
        assert run.lineage is not None
        assert run.lineage.data is not None
        assert run.lineage.data["uri"].startswith(f"gs://modelrail-data/uploads/{model}/{key}#")
        assert registry.aliases(model) == {"champion": 1, "staging": 1}
    manifests = {m: registry.manifest(m, 1) for m in ("penguins", GRUNFELD)}
    assert manifests["penguins"].features["objective"] == "multiclass"
    assert manifests[GRUNFELD].features["objective"] == "regression"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("uploads/data.csv", "is not in a model's upload folder"),
        ("uploads/diamonds/data.csv", "no model 'diamonds' is installed"),
        ("elsewhere/penguins/data.csv", "is not in a model's upload folder"),
    ],
)
def test_an_upload_no_model_owns_is_refused_with_a_recorded_reason(
    two: Harness, penguins_csv: bytes, name: str, why: str
) -> None:
    two.upload(penguins_csv, name)
    two.run()

    [run] = two.runs()
    assert run.model is None
    assert run.outcome == "failed"
    record = run.stages["validate"]
    assert record.error is not None
    assert record.error["kind"] == "unknown_model"
    assert why in record.error["message"]
    assert f"installed: {GRUNFELD}, penguins" in record.error["message"]
    assert two.published("pipeline-failed")  # said on the bus as every failure is
    assert two.container.registry.aliases("penguins") == {}


def test_a_retrain_trains_on_its_own_models_newest_upload_never_anothers(
    two: Harness, penguins_csv: bytes, grunfeld_csv: bytes
) -> None:
    two.upload(penguins_csv, "uploads/penguins/p.csv")
    two.upload(grunfeld_csv, f"uploads/{GRUNFELD}/g.csv")
    two.run()
    # Penguins' upload is older than grunfeld's: the bucket's newest is grunfeld's.
    two.retrain("again", model="penguins")
    two.run()

    runs = _only(two, "penguins")
    assert [run.outcome for run in runs] == ["deployed", "deployed"]
    lineage = runs[-1].lineage
    assert lineage is not None
    assert lineage.data is not None
    assert lineage.data["uri"].startswith("gs://modelrail-data/uploads/penguins/p.csv#")
    assert lineage.trigger["kind"] == "retrain"
    assert two.container.registry.versions(GRUNFELD) == [1]


def test_a_retrain_naming_no_model_is_refused_while_several_are_installed(
    two: Harness, penguins_csv: bytes
) -> None:
    two.upload(penguins_csv, "uploads/penguins/p.csv")
    two.run()
    two.retrain("which")
    two.run()

    [refused] = _only(two, None)
    record = refused.stages["validate"]
    assert record.error is not None
    assert record.error["kind"] == "unknown_model"
    assert "2 models are installed (grunfeld, penguins): name one" in record.error["message"]
    assert two.container.registry.versions("penguins") == [1]


def test_one_models_rollback_and_failures_leave_the_others_alone(
    two: Harness, penguins_csv: bytes, grunfeld_csv: bytes
) -> None:
    two.upload(penguins_csv, "uploads/penguins/p.csv")
    two.upload(penguins_csv, "uploads/penguins/again.csv")
    two.upload(grunfeld_csv, f"uploads/{GRUNFELD}/g.csv")
    two.run()
    # A grunfeld upload that breaks its contract (a column gone) fails grunfeld's run.
    broken = grunfeld_csv.replace(b",capital", b",assets")
    two.upload(broken, f"uploads/{GRUNFELD}/broken.csv")
    two.run()
    registry = two.container.registry
    assert registry.aliases("penguins") == {"champion": 2, "staging": 2}

    record = rollback(two.container.for_model("penguins"), to=1, reason="test", requested_by="t")

    assert record.status == "succeeded", record.error
    assert registry.aliases("penguins")["staging"] == 1
    assert registry.aliases(GRUNFELD) == {"champion": 1, "staging": 1}
    assert [run.outcome for run in _only(two, GRUNFELD)] == ["deployed", "failed"]
    assert two.deployer.current() is not None


def test_definitions_are_checked_named_and_kept_whole(harness: Harness, tmp_path: Path) -> None:
    models = harness.container.models
    definition = Definition.from_files(REPO / "pipeline.toml")

    assert models.add(definition) is False  # installed already, unchanged
    assert models.config("penguins").sha256 == harness.container.config.sha256
    with pytest.raises(UnknownModel, match="no model 'cars' is installed"):
        models.config("cars")
    text = (REPO / "pipeline.toml").read_text().replace('name = "penguins"', 'name = "Pen_guins"')
    contract = f'contract = "{REPO}/schemas/'
    (tmp_path / "pipeline.toml").write_text(text.replace('contract = "schemas/', contract))
    with pytest.raises(ConfigError, match="model name 'Pen_guins' must be"):
        Definition.from_files(tmp_path / "pipeline.toml")
    assert Models(harness.container.artifacts).names() == ["penguins"]


def test_models_shows_a_service_that_serves_other_than_its_alias_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from modelrail.adapters.local.staging import LocalStagingDeployer
    from modelrail.entry import cli
    from modelrail.kernel.ports import Deployment
    from modelrail.service import smoke
    from tests.conftest import install, settings_env

    env = settings_env(tmp_path / "home")
    install(env)
    url = "http://127.0.0.1:9"
    # A service that still serves v1 while the alias names no version at all.
    monkeypatch.setattr(
        LocalStagingDeployer,
        "current",
        lambda self: Deployment(url=url, revision="r1", model="penguins", version=1),
    )
    monkeypatch.setattr(smoke, "served", lambda at: {"model": "penguins", "version": 1})

    result = CliRunner().invoke(cli.main, ["models"], env=env)

    assert result.exit_code == 0, result.output
    assert f"staging {url}: DISAGREES: the service says it serves penguins v1" in result.output
    assert "its staging alias names no version" in result.output
