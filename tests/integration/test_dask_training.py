"""Training on Dask: the embedded pipeline with ``[training] engine = "dask"``, on a
local cluster the training job starts and on a scheduler and two workers started by
hand (the real ``dask scheduler`` / ``dask worker`` commands), fed a snapshot of
several parts."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss

from modelrail.adapters.local.dask import DaskClusters
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain import distributed, training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks, snapshot
from modelrail.kernel.processes import wait_until
from modelrail.localcloud.emulators import free_port
from modelrail.settings.process import Settings
from tests.conftest import PENGUINS, REPO, STATE_DEADLINE_S, installed, settings_env
from tests.fakes import FakeDeployer
from tests.unit.conftest import Harness

# Dask's processes listen on ports the kernel picks, from the same range as the free
# ports the emulator stacks choose and then bind: never beside a stack starting up.
pytestmark = pytest.mark.xdist_group("emulators")

BIN = Path(sys.executable).parent


def dask_config(directory: Path, dask: str) -> Path:
    """The bundled pipeline.toml, training on Dask (``dask``: the [training.dask]
    table's lines), and validate cutting the upload into parts of a few KiB."""
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('contract = "schemas/', f'contract = "{REPO}/schemas/', 1)
    for old, new in (('engine = "auto"', 'engine = "dask"'), ("workers = 2", dask)):
        assert old in text
        text = text.replace(old, new, 1)
    assert "batch_mb = 64\n" in text
    text = text.replace("batch_mb = 64\n", "batch_mb = 0.004\n", 1)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pipeline.toml").write_text(text)
    return directory / "pipeline.toml"


def _harness(tmp_path: Path, config: Path) -> Harness:
    env = settings_env(tmp_path / "home")
    settings = Settings.from_env(env)
    deployer = FakeDeployer()
    container = installed(bootstrap(settings, deployer_factory=lambda _model: deployer), config)
    return Harness(container, container.storage, deployer)  # type: ignore[arg-type]


def _deployed_on_dask(harness: Harness) -> None:
    harness.upload(PENGUINS.read_bytes())
    harness.run()
    [run] = harness.runs()
    assert run.outcome == "deployed", run.failure
    validated = run.stages["validate"].event
    assert validated is not None
    parts = snapshot.parts(harness.container.artifacts, validated["dataset"]["snapshot"])
    assert len(parts) > 1  # the workers were fed several parts
    train = run.stages["train"]
    assert train.output["engine"] == "dask"
    assert train.resources is not None
    workers = train.resources["workers"]
    assert len(workers) == 2
    assert all(w["peak_rss_bytes"] > 0 for w in workers)
    # The same hold-out and gate as one process: the model is judged on the rows the
    # single-process split holds out, and passes the bundled gate.
    assert run.stages["evaluate"].status == "succeeded"
    evaluated = run.stages["evaluate"].output
    assert evaluated["metrics"]["accuracy"] >= 0.9


def test_a_run_trains_on_a_local_cluster_the_job_starts(tmp_path: Path) -> None:
    harness = _harness(tmp_path, dask_config(tmp_path / "config", "workers = 2"))

    _deployed_on_dask(harness)


@pytest.fixture
def hand_started_cluster(tmp_path: Path) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes, as a user starts them;
    every process group stopped after, whatever happened."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                ":0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "scheduler.log").open("wb"),
            start_new_session=True,
        )
    ]
    try:
        for n in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--dashboard-address",
                        ":0",
                        "--local-directory",
                        str(tmp_path / f"w{n}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / f"worker{n}.log").open("wb"),
                    start_new_session=True,
                )
            )
        from distributed import Client

        def two_workers() -> bool:
            try:
                with Client(address, timeout=5) as client:
                    return len(client.scheduler_info()["workers"]) == 2
            except OSError:
                return False

        assert wait_until(two_workers, STATE_DEADLINE_S, 0.5), (
            tmp_path / "scheduler.log"
        ).read_text()
        yield address
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_run_trains_on_a_scheduler_and_workers_started_by_hand(
    tmp_path: Path, hand_started_cluster: str
) -> None:
    config = dask_config(tmp_path / "config", f'scheduler = "{hand_started_cluster}"')
    harness = _harness(tmp_path, config)

    _deployed_on_dask(harness)


def test_auto_trains_in_one_process_while_the_data_fits() -> None:
    config = PipelineConfig.load(REPO / "pipeline.toml")

    per_value = training.LOCAL_PEAK_BYTES_PER_VALUE
    columns = len(config.contract.columns)

    assert config.engine.name == "auto"
    assert not config.engine.chooses_dask(344 * columns * per_value)  # the penguins
    assert not config.engine.chooses_dask(10_000_000 * columns * per_value)  # 4 GB
    assert config.engine.chooses_dask(50_000_000 * columns * per_value)  # 19 GiB measured


def test_parts_holding_one_side_alone_train_and_pick_rounds_on_every_validation_row(
    tmp_path: Path,
) -> None:
    """A worker whose parts hold no training rows, and one whose parts hold no
    validation rows: training still runs, and the rounds are chosen on the whole
    validation side (the loss checked here by scikit-learn)."""
    config = PipelineConfig.load(dask_config(tmp_path / "config", "workers = 2"))
    _, parsed = checks.validate(PENGUINS.read_bytes(), config.contract)
    whole = snapshot.arrow(parsed, config.contract)
    split = training.split(parsed, config)
    held = np.sort(np.concatenate([split.validation, split.holdout]))
    halves = [np.array_split(np.sort(split.train), 2), np.array_split(held, 2)]
    urls = []
    for n, rows in enumerate([halves[0][0], halves[1][0], halves[0][1], halves[1][1]]):
        path = tmp_path / f"part-{n}.parquet"
        pq.write_table(whole.take(pa.array(rows)), path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        urls.append(distributed.PartURL(path.as_uri(), digest, len(rows)))

    with DaskClusters().client(None, workers=2) as client:
        candidate = distributed.train(client, urls, config).candidate

    schema = candidate.schema
    validation = {name: values[split.validation] for name, values in parsed.columns.items()}
    booster = lgb.Booster(model_str=candidate.model_text.decode())
    probabilities = booster.predict(np.asarray(schema.encode_columns(validation)))
    labels = schema.encode_target(validation[schema.target])
    expected = log_loss(labels, probabilities, labels=range(probabilities.shape[1]))
    assert booster.current_iteration() == candidate.best_iteration
    assert candidate.train_metrics["validation_multi_logloss"] == pytest.approx(expected, rel=1e-6)
