"""The prediction log and the monitor on the emulator stack: the staging service behind
the local Cloud Run control plane logs every request to fake-gcs-server, and
`modelrail monitor` names the one feature whose requests were shifted."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from modelrail.kernel.processes import wait_until
from tests.conftest import REPO, STATE_DEADLINE_S, penguin_rows
from tests.integration.test_emulator_stack import Stack, running_stack

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

SHIFTED, REQUESTS, ROWS = "flipper_length_mm", 10, 100


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("monitor-stack")
    config = home / "definition"
    contract = Path("schemas") / "datasets" / "penguins.json"
    (config / contract).parent.mkdir(parents=True)
    shutil.copy(REPO / contract, config / contract)
    pipeline = (REPO / "pipeline.toml").read_text()
    (config / "pipeline.toml").write_text(pipeline.replace("log_rate = 0.05", "log_rate = 1.0"))
    with running_stack(home, models=(config / "pipeline.toml",)) as started:
        started.upload_penguins()
        yield started


def _monitor(stack: Stack, since: str) -> dict[str, Any]:
    report: dict[str, Any] = stack.json("monitor", "--since", since)
    return report


def test_the_monitor_reads_what_the_cloud_run_service_logged(stack: Stack) -> None:
    [model] = stack.json("models")
    records = penguin_rows()
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    draw = random.Random(3)
    for _ in range(REQUESTS):
        rows = [dict(row) for row in draw.choices(records, k=ROWS)]
        for row in rows:
            if row[SHIFTED] is not None:
                row[SHIFTED] += 25.0
        answer = requests.post(
            f"{model['staging_url']}/predict", json={"instances": rows}, timeout=60
        )
        assert answer.status_code == 200, answer.text

    # The service's workers write a batch at the latest 10 s after its first record.
    assert wait_until(
        lambda: _monitor(stack, since)["requests"] == REQUESTS, STATE_DEADLINE_S, 1.0
    ), _monitor(stack, since)
    report = _monitor(stack, since)

    assert (report["version"], report["instances"]) == (1, REQUESTS * ROWS)
    assert report["judged"]
    assert report["drifted"] == [SHIFTED]
    assert report["report_uri"].startswith("gs://")
    assert "drift_detected" in report["actions"]
