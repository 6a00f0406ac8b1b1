"""The gate corrupted data cannot fool: the champion's reference set, and drift."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.lineage import Lineage
from modelrail.settings.process import Settings
from tests.conftest import REPO, installed, settings_env
from tests.fakes import FakeDeployer, InMemoryStorage
from tests.manifests import describe
from tests.unit.conftest import Harness

# Absolute minimums set loose, as a user might: only the comparison with the champion
# can catch a candidate trained on corrupted labels.
LOOSE = {"min = 0.90": "min = 0.0", "max = 0.35": "max = 50.0"}


def _harness(tmp_path: Path, replacements: dict[str, str]) -> Harness:
    pipeline = (REPO / "pipeline.toml").read_text()
    pipeline = pipeline.replace('"schemas/datasets/', f'"{REPO}/schemas/datasets/')
    for old, new in replacements.items():
        assert old in pipeline
        pipeline = pipeline.replace(old, new)
    (tmp_path / "pipeline.toml").write_text(pipeline)
    settings = Settings.from_env(settings_env(tmp_path / "home"))
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    deployer = FakeDeployer()
    container = installed(
        bootstrap(
            settings, storage_factory=lambda: storage, deployer_factory=lambda _model: deployer
        ),
        tmp_path / "pipeline.toml",
    )
    return Harness(container, storage, deployer)


def _with_champion(
    tmp_path: Path, penguins_csv: bytes, replacements: dict[str, str] = LOOSE
) -> tuple[Harness, pd.DataFrame]:
    """A pipeline whose v1 was trained on the bundled data, and that data as a frame
    to corrupt."""
    harness = _harness(tmp_path, replacements)
    harness.upload(penguins_csv, "uploads/penguins/clean.csv")
    harness.run()
    return harness, pd.read_csv(io.BytesIO(penguins_csv), keep_default_na=False, na_values=["NA"])


def _csv(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, na_rep="NA")
    return buffer.getvalue().encode()


@pytest.mark.fault
def test_shuffled_labels_are_rejected_on_the_champions_reference_set(
    tmp_path: Path, penguins_csv: bytes
) -> None:
    harness, frame = _with_champion(tmp_path, penguins_csv)
    frame["species"] = np.random.default_rng(0).permutation(frame["species"].to_numpy())

    harness.upload(_csv(frame), "uploads/penguins/shuffled.csv")
    harness.run()

    first, second = harness.runs()
    assert (first.outcome, second.outcome) == ("deployed", "rejected")
    error = second.stages["evaluate"].error
    assert "on v1's reference set" in error["message"]
    assert "accuracy=" in error["message"]
    registry = harness.container.registry
    assert registry.versions(harness.model) == [1]
    assert registry.aliases(harness.model) == {"champion": 1, "staging": 1}
    report = harness.container.runs.report(second.run_id, "evaluation")
    # On the new, corrupted hold-out the two models look alike; only the reference tells.
    assert report["reference"]["champion_metrics"]["accuracy"] > 0.9
    assert report["reference"]["metrics"]["accuracy"] < 0.6


@pytest.mark.parametrize(
    ("shift_sd", "outcome", "status"), [(4.0, "failed", "fail"), (0.25, "deployed", "warn")]
)
@pytest.mark.fault
def test_a_shifted_column_is_drift_that_warns_or_fails_naming_it(
    tmp_path: Path, penguins_csv: bytes, shift_sd: float, outcome: str, status: str
) -> None:
    # Loose change limits too: this test is about validate, not the gate after it.
    loose = {**LOOSE, "max_change_rel = 0.25": "max_change_rel = 5.0"}
    harness, frame = _with_champion(tmp_path, penguins_csv, loose)
    depth = frame["bill_depth_mm"]
    frame["bill_depth_mm"] = (depth + shift_sd * depth.std()).clip(upper=25).round(1)

    harness.upload(_csv(frame), "uploads/penguins/shifted.csv")
    harness.run()

    run = harness.runs()[-1]
    assert run.outcome == outcome
    report = harness.container.runs.report(run.run_id, "validation")
    statuses = {row["column"]: row["status"] for row in report["drift"]["columns"]}
    assert statuses["bill_depth_mm"] == status
    assert {s for c, s in statuses.items() if c != "bill_depth_mm"} == {"ok"}
    if status == "fail":
        error = run.stages["validate"].error
        assert error["kind"] == "data_drift"
        assert "['bill_depth_mm']" in error["message"]
        [failed] = [e for e in harness.published("pipeline-failed") if e["run_id"] == run.run_id]
        assert failed["error"]["kind"] == "data_drift"
    else:
        manifest = harness.container.registry.manifest(harness.model, 2)
        [warning] = manifest.lineage.drift["warnings"]
        assert (warning["column"], warning["status"]) == ("bill_depth_mm", "warn")


def test_the_card_shows_classes_reference_drift_and_history(
    tmp_path: Path, penguins_csv: bytes
) -> None:
    harness, frame = _with_champion(tmp_path, penguins_csv)
    harness.upload(_csv(frame.sample(frac=1.0, random_state=1)), "uploads/penguins/reordered.csv")
    harness.run()

    registry = harness.container.registry
    assert registry.versions(harness.model) == [1, 2]
    card = registry.read_file(harness.model, 2, "card.html")
    assert card is not None
    html = card.decode()
    for section in (
        "Per class (hold-out)",
        "Confusion matrix",
        "On v1's reference set",
        "Drift against v1's training data",
        "Metrics across versions",
        "Validated snapshot",
    ):
        assert section in html, section
    assert "<script" not in html
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch
    manifest = registry.manifest(harness.model, 2)
    per_class = manifest.diagnostics["per_class"]
    assert set(per_class) == {"Adelie", "Chinstrap", "Gentoo"}
    assert sum(c["support"] for c in per_class.values()) == manifest.champion["reference"]["rows"]


def test_a_regression_card_plots_predicted_against_actual() -> None:
    from modelrail.domain import card, evaluation

    actual = np.linspace(0, 10, 50)
    diagnostics = evaluation.diagnostics("regression", actual, actual + 0.5, ())
    manifest = describe(
        "m",
        "run-1",
        best_iteration=3,
        features={"objective": "regression", "target": "y"},
        metrics={"rmse": 0.5},
        lineage=Lineage(
            trigger={"kind": "upload", "key": "k"},
            config={"hash": "0" * 64, "model": "m"},
            data={"uri": "gs://b/k#1", "rows": 50, "sha256": "0" * 64},
            code={"version": "test"},
        ),
        diagnostics=diagnostics,
    )(1, {})

    html = card.render(manifest, [("x", 1.0)]).decode()

    assert "Predicted against actual" in html
    assert html.count("<circle") == 50
