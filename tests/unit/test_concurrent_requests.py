"""The same retrain request published by three processes at once (embedded mode: three
CLIs, each with its own in-process bus, over one state directory). One delivery does
each stage's work; the others wait out Pub/Sub's backoff and find it done, or, on their
last attempt, are acknowledged without a record: the run is one run, deployed, never
recorded failed."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from modelrail.composition.bootstrap import bootstrap
from modelrail.kernel.events import RetrainRequested
from modelrail.settings.process import Settings
from tests.conftest import installed, settings_env
from tests.fakes import FakeDeployer
from tests.unit.conftest import ManualClock

PROCESSES = 3


@pytest.mark.fault
@pytest.mark.parametrize("round_", range(3))  # a race: several rounds
def test_the_same_request_three_times_at_once_is_one_run_deployed_never_failed(
    tmp_path: Path, penguins_csv: bytes, round_: int
) -> None:
    settings = Settings.from_env(settings_env(tmp_path / "home"))
    deployer = FakeDeployer()
    containers = [
        installed(bootstrap(settings, deployer_factory=lambda _model: deployer))
        for _ in range(PROCESSES)
    ]
    # The data lands once; each "process" then asks for a retrain with one request id.
    data = containers[0].storage.bucket(settings.data_bucket)
    data.write("uploads/penguins/data.csv", penguins_csv)
    request = RetrainRequested(
        request_id="same-request", data_uri=data.uri("uploads/penguins/data.csv")
    )
    start = threading.Barrier(PROCESSES)

    def one_cli(index: int) -> list[dict[str, object]]:
        bus = containers[index].bus
        clock = ManualClock()  # backoff waits cost nothing; the race stays real
        bus.clock, bus.sleep = clock, clock.sleep  # type: ignore[attr-defined]
        start.wait()
        bus.publish("retrain-requested", orjson.dumps(request.to_body()), {})
        bus.drain()
        return [orjson.loads(m.data) for t, m in bus.history if t == "pipeline-failed"]  # type: ignore[attr-defined]

    with ThreadPoolExecutor(PROCESSES) as pool:
        failures = [f for published in pool.map(one_cli, range(PROCESSES)) for f in published]

    [run] = containers[0].runs.runs()
    assert failures == []
    assert [s.stage for s in run.stages.values() if s.status == "failed"] == []
    assert run.outcome == "deployed"
    registry = containers[0].registry
    assert registry.versions(containers[0].config.model_name) == [1]
    assert registry.aliases(containers[0].config.model_name) == {"champion": 1, "staging": 1}
