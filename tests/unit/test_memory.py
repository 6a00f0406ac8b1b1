"""Each stage record says how much memory its stage's process held at its peak."""

from __future__ import annotations

import numpy as np
import orjson

from modelrail.kernel.memory import PeakMemory
from tests.unit.conftest import Harness


def test_the_peak_is_the_stages_own_not_what_came_before() -> None:
    before = PeakMemory.start()
    held = np.ones(2**25)  # 256 MiB, touched
    big = before.peak_bytes()
    del held

    after = PeakMemory.start()

    assert after.scope == before.scope == "stage"  # Linux resets the high-water mark
    assert big - after.peak_bytes() > 200 * 2**20
    assert after.peak_bytes() > 0


def test_every_stage_run_records_its_peak_and_the_cli_shows_it(
    harness: Harness, penguins_csv: bytes
) -> None:
    harness.upload(penguins_csv)
    harness.run()

    [run] = harness.runs()
    assert run.outcome == "deployed"
    for record in run.stages.values():
        assert record.resources is not None, record.stage
        assert record.resources["scope"] == "stage"
        assert 10 * 2**20 < record.resources["peak_rss_bytes"] < 8 * 2**30
        assert record.memory is not None
        assert record.memory.startswith("peak RSS ")
    stored = orjson.loads(
        harness.container.artifacts.read(f"runs/{run.run_id}/stages/train.json").data
    )
    assert stored["resources"]["peak_rss_bytes"] == run.stages["train"].resources["peak_rss_bytes"]  # type: ignore[index]
