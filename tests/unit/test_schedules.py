"""Retrains on a schedule: each time a model's [retrain] schedule names fires once, on
its newest upload, the run's trigger saying so; the clock is moved, never waited for."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelrail.adapters.local.inprocess import InProcessLauncher
from modelrail.domain.config import PipelineConfig
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


# -- [retrain] min_new_rows: a policy retrain only on enough new rows ----------------


def test_min_new_rows_is_read_and_must_be_a_positive_whole_number(tmp_path: Path) -> None:
    config = PipelineConfig.load(_definition(tmp_path / "ok", "min_new_rows = 500"))
    assert config.retrain_min_new_rows == 500
    assert PipelineConfig.load(_definition(tmp_path / "none", "")).retrain_min_new_rows == 0
    for wrong, why in (("0", "0 is less than the minimum of 1"), ("2.5", "2.5 is not of type")):
        with pytest.raises(ConfigError, match=rf"retrain\.min_new_rows.*{re.escape(why)}"):
            PipelineConfig.load(_definition(tmp_path / wrong, f"min_new_rows = {wrong}"))


def _half(csv: bytes) -> bytes:
    """The header and every other pair of rows: each species and sex as in the whole
    (the file lists a male and a female in turn), half the rows."""
    header, *rows = csv.splitlines(keepends=True)
    return b"".join([header, *(row for i, row in enumerate(rows) if i // 2 % 2 == 0)])


def test_a_schedule_retrains_only_on_an_upload_with_enough_new_rows(
    harness: Harness, penguins_csv: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retrain = 'schedule = "0 3 * * *"\nmin_new_rows = 100'
    installed(harness.container, _definition(tmp_path, retrain))
    half = _half(penguins_csv)
    harness.upload(half)  # v1 trains on half the penguins
    harness.run()
    day = datetime(2026, 12, 6, tzinfo=UTC)
    fire_due(harness.container, MODELS, day)
    # Later uploads are validated (their rows counted) but their training dies, so v1
    # stays the version staging serves.
    monkeypatch.setattr(InProcessLauncher, "launch", lambda self, job, event: f"{job}-dead")

    # The same rows again: nothing new to learn from; the time is spent all the same.
    harness.upload(half, name="uploads/penguins/again.csv")
    harness.run()
    [same] = fire_due(harness.container, MODELS, day + timedelta(hours=3, minutes=4))
    rows = half.count(b"\n") - 1
    assert (same["fired"], same["declined"]) == (False, True)
    assert same["why"].startswith("[retrain] min_new_rows = 100: the newest upload, gs://")
    assert same["why"].endswith(
        f"again.csv#2, holds {rows} rows, 0 more than the {rows} v1 trained on"
    )
    assert fire_due(harness.container, MODELS, day + timedelta(hours=5))[0]["why"] == (
        "its latest time has fired"
    )
    # An upload no run has validated yet (its notification is late): no count, no retrain.
    data = harness.storage.bucket(harness.container.settings.data_bucket)
    data.write("uploads/penguins/late.csv", penguins_csv)
    [late] = fire_due(harness.container, MODELS, day + timedelta(days=1, hours=3, minutes=1))
    assert late["declined"]
    assert late["why"].endswith("late.csv#3, has no row count yet (no run has validated it)")

    # All the penguins, validated: twice the rows v1 trained on. The retrain is pinned to it.
    full = harness.upload(penguins_csv, name="uploads/penguins/full.csv")
    harness.run()
    [fired] = fire_due(harness.container, MODELS, day + timedelta(days=2, hours=3, minutes=1))

    assert fired["fired"], fired
    [request] = harness.published("retrain-requested")
    assert request["data_uri"] == full.idempotency_key
    assert request["policy"] == "schedule"
