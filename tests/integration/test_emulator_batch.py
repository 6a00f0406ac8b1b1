"""Batch prediction on the emulator stack: `modelrail predict --cloud` publishes a
batch-requested event to the Pub/Sub emulator; the launch_batch function starts the
batch job on the local Cloud Run control plane, which runs its three tasks in parallel, each
scoring its share of the input's parts (a CSV, a gzip CSV and a Parquet file in
fake-gcs-server, with broken rows). The last task writes the manifest; every scored
row is the staging service's answer, every broken row is listed with its problems."""

from __future__ import annotations

import csv
import io
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from modelrail.kernel.processes import wait_until
from tests.e2e.test_batch import BROKEN, _broken_file, _instance
from tests.integration.test_emulator_stack import (
    MODELRAIL,
    Stack,
    running_stack,
)

pytestmark = [pytest.mark.emulator, pytest.mark.xdist_group("emulators")]

TASKS = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("batch-stack")
    with running_stack(home, MODELRAIL_BATCH_TASKS=str(TASKS)) as started:
        started.upload_penguins()
        yield started


def _object(stack: Stack, bucket: str, key: str) -> bytes | None:
    """An object of fake-gcs-server, or None while it does not exist."""
    host = stack.state()["env"]["STORAGE_EMULATOR_HOST"]
    quoted = urllib.parse.quote(key, safe="")
    response = requests.get(f"{host}/storage/v1/b/{bucket}/o/{quoted}?alt=media", timeout=10)
    return response.content if response.status_code == 200 else None


def _parts(tmp_path: Path) -> tuple[list[str], list[list[str]], list[Path]]:
    """The broken penguins in three parts: the gzip CSV, a plain CSV and a Parquet file
    of the same rows (the file's row numbers restart in each part)."""
    header, rows = _broken_file(tmp_path / "a.csv.gz")
    with (tmp_path / "b.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    columns: dict[str, list[Any]] = {name: [] for name in header}
    for row in rows:
        for name, cell in zip(header, row, strict=True):
            columns[name].append(_typed(name, cell))
    frame = pa.table(columns)
    pq.write_table(frame, tmp_path / "c.parquet")
    return header, rows, [tmp_path / "a.csv.gz", tmp_path / "b.csv", tmp_path / "c.parquet"]


def _typed(name: str, cell: str) -> Any:
    """A cell as a Parquet file types it: a number that is not one is NaN."""
    if cell in ("", "NA"):
        return None
    if name in ("island", "sex"):
        return cell
    try:
        return float(cell)
    except ValueError:
        return float("nan")


def test_parallel_tasks_score_the_parts_as_staging_answers(stack: Stack, tmp_path: Path) -> None:
    bucket = stack.state()["env"].get("MODELRAIL_ARTIFACT_BUCKET", "modelrail-artifacts")
    header, rows, files = _parts(tmp_path)
    for file in files:
        stack.gcloud("storage", "cp", str(file), f"gs://{bucket}/batch/in/{file.name}")

    launched = subprocess.run(
        [str(MODELRAIL), "predict", "--cloud", "--input", f"gs://{bucket}/batch/in/",
         "--output", f"gs://{bucket}/batch/out/"],
        env={**stack.env, **stack.state()["env"]}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip

    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "published batch-requested" in launched.stdout
    assert wait_until(
        lambda: _object(stack, bucket, "batch/out/_manifest.json") is not None, 120.0, 1.0
    ), launched.stdout
    manifest: dict[str, Any] = orjson.loads(_object(stack, bucket, "batch/out/_manifest.json"))
    assert manifest["tasks"] == TASKS
    assert (manifest["rows"], manifest["refused"]) == (3 * len(rows), 3 * len(BROKEN))
    assert [p["input"].rsplit("/", 1)[-1] for p in manifest["parts"]] == [
        "a.csv.gz", "b.csv", "c.parquet"
    ]  # fmt: skip
    records = [_object(stack, bucket, f"batch/out/_tasks/{i:05d}.json") for i in range(TASKS)]
    assert [orjson.loads(r or b"{}").get("task") for r in records] == list(range(TASKS))

    [model] = stack.json("models")
    for part in manifest["parts"]:
        [refused_object] = part["refused_objects"]
        refused = pq.read_table(io.BytesIO(_object(stack, bucket, refused_object["key"]) or b""))
        assert {r["row"]: {(p["column"], p["check"]) for p in r["problems"]}
                for r in refused.to_pylist()} == BROKEN  # fmt: skip
        scored = pa.concat_tables(
            pq.read_table(io.BytesIO(_object(stack, bucket, piece["key"]) or b""))
            for piece in part["objects"]
        ).to_pylist()
        good = [rows[r["row"] - 1] for r in scored]
        answer = requests.post(
            f"{model['staging_url']}/predict",
            json={"instances": [_instance(header, row) for row in good]},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        for row, expected in zip(scored, answer.json()["predictions"], strict=True):
            assert row["prediction"] == expected["label"]
            assert {c: row[f"probability_{c}"] for c in expected["probabilities"]} == (
                expected["probabilities"]
            )
    drift = orjson.loads(_object(stack, bucket, "batch/out/_drift.json") or b"{}")
    assert drift["instances"] == manifest["scored"] == 3 * (len(rows) - len(BROKEN))
