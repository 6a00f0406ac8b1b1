"""Retrains on a schedule: each time a model's [retrain] schedule names fires once, on
its newest upload, the run's trigger saying so; the clock is moved, never waited for."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelrail.kernel.errors import ConfigError
from modelrail.service.schedules import fire_due
from tests.conftest import REPO, installed
from tests.unit.conftest import Harness

MODELS = ["penguins"]


def _definition(tmp_path: Path, retrain: str) -> Path:
    contract = Path("schemas") / "datasets" / "penguins.json"
    (tmp_path / contract).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / contract, tmp_path / contract)
    text = (REPO / "pipeline.toml").read_text() + f"\n[retrain]\n{retrain}\n"
    (tmp_path / "pipeline.toml").write_text(text)
    return tmp_path / "pipeline.toml"


def test_each_time_the_schedule_names_fires_once_on_the_newest_upload(
    harness: Harness, penguins_csv: bytes, tmp_path: Path
) -> None:
    installed(harness.container, _definition(tmp_path, 'schedule = "0 3 * * *"'))
    harness.upload(penguins_csv)
    harness.run()
    day = datetime(2026, 12, 6, tzinfo=UTC)

    # Seen for the first time at 02:00: counting starts now, nothing fires for the past.
    [first] = fire_due(harness.container, MODELS, day + timedelta(hours=2))
    assert (first["fired"], first["why"]) == (False, "a new schedule: from now on")
    assert (
        fire_due(harness.container, MODELS, day + timedelta(hours=2, minutes=50))[0]["fired"]
        is False
    )

    [at_three] = fire_due(harness.container, MODELS, day + timedelta(hours=3, minutes=4))
    assert at_three["fired"]
    assert at_three["request_id"] == "schedule:penguins:20261206T0300Z"
    # Later sweeps of the same day see a time that has fired.
    assert fire_due(harness.container, MODELS, day + timedelta(hours=9))[0]["fired"] is False
    harness.run()
    [run] = [r for r in harness.runs() if r.trigger.get("kind") == "schedule"]
    assert run.trigger["key"] == "request:schedule:penguins:20261206T0300Z"
    assert "'0 3 * * *' (UTC)" in run.trigger["reason"]
    assert run.lineage is not None
    assert run.lineage.data is not None
    assert run.lineage.data["key"] == "uploads/penguins/data.csv"

    # The next day's time fires again; a sweep that missed days fires the latest only.
    assert fire_due(harness.container, MODELS, day + timedelta(days=3, hours=5))[0]["fired"]
    assert len(harness.published("retrain-requested")) == 2


def test_a_changed_schedule_starts_counting_again(harness: Harness, tmp_path: Path) -> None:
    installed(harness.container, _definition(tmp_path / "a", 'schedule = "0 3 * * *"'))
    day = datetime(2026, 12, 6, tzinfo=UTC)
    fire_due(harness.container, MODELS, day + timedelta(hours=2))
    installed(harness.container, _definition(tmp_path / "b", 'schedule = "30 3 * * *"'))

    [seen] = fire_due(harness.container, MODELS, day + timedelta(hours=4))

    assert (seen["fired"], seen["why"]) == (False, "a new schedule: from now on")
    assert harness.published("retrain-requested") == []


def test_a_schedule_that_is_not_cron_is_refused_when_the_definition_is_read(
    harness: Harness, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"schedule 'at three' is not a cron expression"):
        installed(harness.container, _definition(tmp_path, 'schedule = "at three"'))
