"""What a record, a report, an event and a UI page hold is bounded, whatever the file
holds: a 1.2 MB file whose header names 120,000 columns is refused from its header,
in little memory, with a small record, report and event; a file within the limits but
full of problems lists the first ones and counts them all."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from modelrail.domain.dataset.checks import MAX_PROBLEMS_LISTED
from modelrail.service.pipeline import MAX_EVENT_PROBLEMS
from modelrail.ui import create_app
from tests.unit.conftest import Harness

KB = 2**10


def _wide_file(columns: int) -> bytes:
    header = ",".join(f"c{i:05d}" for i in range(columns))
    row = ",".join("1" for _ in range(columns))
    return f"{header}\n{row}\n".encode()


def _sizes(harness: Harness) -> dict[str, int]:
    """The encoded size of the run's stage records, its reports, each event published
    and the UI's pages about it."""
    [run] = harness.runs()
    runs, sizes = harness.container.runs, {}
    for stage in run.stages:
        sizes[f"record {stage}"] = len(orjson.dumps(runs.stage_record(run.run_id, stage)))
    for name, report in runs.reports(run.run_id).items():
        sizes[f"report {name}"] = len(orjson.dumps(report))
    for index, (topic, message) in enumerate(harness.bus.history):
        sizes[f"event {index} {topic}"] = len(message.data)
    client = create_app(harness.container).test_client()
    for path in ("/", f"/runs/{run.run_id}"):
        page = client.get(path)
        assert page.status_code == 200, path
        sizes[f"page {path}"] = len(page.data)
    return sizes


@pytest.mark.fault
def test_a_header_of_120k_columns_is_refused_from_its_header_with_everything_small(
    harness: Harness,
) -> None:
    data = _wide_file(120_000)
    header = data.index(b"\n")
    assert len(data) > 2**20
    assert header < 2**20  # under the line limit: only the header's own limits catch it
    tracemalloc.start()
    try:
        harness.upload(data, "uploads/penguins/wide.csv")
        harness.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    [run] = harness.runs()
    assert run.failure is not None
    assert run.failure["kind"] == "contract_violation"
    assert run.failure["reasons"][0].startswith("[header_length]"), run.failure["reasons"]
    sizes = _sizes(harness)
    assert max(sizes.values()) < 64 * KB, sizes
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


@pytest.mark.fault
def test_more_columns_than_the_limit_in_a_short_header_are_refused_before_parsing(
    harness: Harness,
) -> None:
    data = (",".join(f"c{i}" for i in range(5000)) + "\n" + "1," * 4999 + "1\n").encode()

    harness.upload(data, "uploads/penguins/wide.csv")
    harness.run()

    [run] = harness.runs()
    assert run.failure is not None
    assert run.failure["reasons"] == [
        "[column_count] the header names 5,000 columns, more than the 1,000 validate reads "
        "([limits] max_columns in pipeline.toml)"
    ]


@pytest.mark.fault
def test_a_file_within_the_limits_full_of_problems_lists_the_first_and_counts_all(
    harness: Harness, penguins_csv: bytes
) -> None:
    lines = penguins_csv.decode().splitlines()
    extra = [f"extra{i:03d}" for i in range(900)]
    wide = [",".join([lines[0], *extra])] + [",".join([line, *["x"] * 900]) for line in lines[1:]]

    harness.upload("\n".join(wide).encode(), "uploads/penguins/extra.csv")
    harness.run()

    [run] = harness.runs()
    report = harness.container.runs.report(run.run_id, "validation")
    assert report["problem_count"] == 900
    assert len(report["problems"]) == MAX_PROBLEMS_LISTED
    assert report["column_count"] == len(lines[0].split(",")) + 900
    [failed] = harness.published("pipeline-failed")
    assert failed["error"]["details"]["problem_count"] == 900
    assert len(failed["error"]["details"]["problems"]) == MAX_EVENT_PROBLEMS
    assert failed["report_uri"] == report_uri(harness, run.run_id)
    sizes = _sizes(harness)
    assert max(sizes.values()) < 256 * KB, sizes


def report_uri(harness: Harness, run_id: str) -> str:
    return harness.container.artifacts.uri(f"runs/{run_id}/reports/validation.json")
