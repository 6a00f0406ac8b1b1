"""The data-path benchmark runs end to end at a tiny size, so it cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e]


def test_bench_pipeline_measures_every_case_at_a_tiny_size(tmp_path: Path) -> None:
    results_path = tmp_path / "results.json"

    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "pipeline.py"),
            "--sizes",
            "2000",
            "--rounds",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(results_path),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=240,
    )

    at_size = orjson.loads(results_path.read_bytes())["sizes"]["2000"]
    assert at_size["validate"]["pandas-c"]["ratio_median"] > 0
    # The stage against a script doing all it does, and the checks alone like for like.
    assert at_size["validate"]["pandas-c+profile+parquet"]["ratio_median"] > 0
    assert at_size["checks"]["pandas-c"]["ratio_median"] > 0
    run = at_size["run"]
    assert run["bare-script"]["ratio_median"] > 0
    # Both sides trained the same model: same encoding, split, parameters, stopping.
    assert (
        run["modelrail"]["rounds"][0]["best_iteration"]
        == run["bare-script"]["rounds"][0]["best_iteration"]
    )
    assert set(at_size["stages"]) == {"validate", "train", "evaluate", "register"}
    assert all(stage["peak_rss_mb"] > 0 for stage in at_size["stages"].values())
    assert not (tmp_path / "work" / "scratch").exists()  # every scratch home removed
