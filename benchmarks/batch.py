"""Batch prediction (``modelrail predict``) against bare ``lightgbm.Booster.predict``.

    .venv/bin/python benchmarks/batch.py [--rows 200000] [--threads N] [--repeat 3]
                                         [--json build/bench-batch.json]

    # 2.5M rows, and 10M for the memory (about 9 minutes of synthetic data the first
    # time, on 2 cores):
    .venv/bin/python benchmarks/batch.py --rows 2500000

What it measures, on a Parquet file of ``--rows`` synthetic penguins (``modelrail
synth``, the target column dropped; written once per size under ``build/bench-batch/``)
and version 1 of the bundled model, trained once in each of two embedded installations
there: one whose training builds the compiled predictor (``MODELRAIL_COMPILER=cc``, as
the training job's image does), so modelrail scores with it, and one whose does not,
so modelrail scores with LightGBM's own (the staging service's ``NativeBooster``):

1. **the ratio**, each side in a fresh Python, timed from before it reads the file to
   after it has written its output (imports and start-up excluded on both sides), the
   same ``--threads`` on both, ``--repeat`` rounds alternating which goes first (the
   median is reported): ``service.batch.predict`` (the manifest's signature and every
   sha256 checked, the compiled predictor where the version has one, every row checked
   against the contract, the answers, the refused rows' file, the drift report, the
   output in Parquet pieces and its manifest) against a bare script that reads the same
   file with pyarrow, encodes the categories as the model's codes, calls
   ``Booster.predict`` and writes the labels and probabilities with pyarrow. Reported
   as bare time / modelrail time: 1.0 is as fast as bare LightGBM (the target is 0.9).
2. **peak RSS** of modelrail's side at ``--rows`` and at four times as many: memory
   follows the batch (``[limits] batch_mb``, 2 here, so that both sizes are many
   batches) and the output piece, not the file, so the two should be close.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelrail.kernel import memory

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench-batch"
HOMES = {"lightgbm": BUILD / "home-lightgbm", "compiled": BUILD / "home-compiled"}
MODELRAIL = Path(sys.executable).with_name("modelrail")
BATCH_MB = 2


def _env(home: Path) -> dict[str, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MODELRAIL_")}
    env = {**inherited, "MODELRAIL_HOME": str(home), "MODELRAIL_STAGING_PORT": str(port)}
    if home == HOMES["compiled"]:
        env["MODELRAIL_COMPILER"] = "cc"  # as the training job's image builds it
    return env


def config_file() -> Path:
    path = BUILD / "pipeline.toml"
    text = (ROOT / "pipeline.toml").read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = text.replace('contract = "schemas/', f'contract = "{ROOT}/schemas/', 1)
    # Batches of 2 MiB (about 100,000 rows here) rather than 64: both sizes are many
    # batches, so their peak RSS shows what follows the batch and what the file.
    assert "batch_mb = 64" in text
    path.write_text(text.replace("batch_mb = 64", f"batch_mb = {BATCH_MB}", 1))
    return path


def installation(home: Path) -> None:
    """Version 1 of the penguins in an embedded home of its own (once)."""
    if (home / "buckets").exists():
        return
    env = _env(home)
    for args in (
        ["add", str(config_file())],
        ["upload", str(ROOT / "data" / "penguins.csv")],
        ["down"],
    ):
        subprocess.run([str(MODELRAIL), *args], env=env, check=True, capture_output=True)


def parquet(rows: int) -> Path:
    """``rows`` synthetic penguins without their target, as Parquet (once per size)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = BUILD / "data" / f"penguins-{rows}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        csv = path.with_suffix(".csv")
        subprocess.run(
            [str(MODELRAIL), "synth", "--rows", str(rows), "--out", str(csv),
             "--config", str(config_file())],
            env=_env(HOMES["lightgbm"]), check=True, capture_output=True,
        )  # fmt: skip
        # Missing values as nulls, as the contract reads them (a Parquet file holds no
        # "NA"): every row meets the contract, and takes the typed path.
        options = pacsv.ConvertOptions(null_values=["", "NA"], strings_can_be_null=True)
        table = pacsv.read_csv(csv, convert_options=options)
        pq.write_table(table.drop_columns(["species"]), path, row_group_size=100_000)
        csv.unlink()
    return path


# -- the two sides, each run in a fresh Python ---------------------------------------------


def ours(source: Path, output: Path, threads: int) -> float:
    """``service.batch.predict``, as ``modelrail predict`` calls it."""
    from modelrail.adapters.local.filesystem import FilesystemStore
    from modelrail.composition import batch as batch_job
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.entry.cli import _local_parts
    from modelrail.service import batch
    from modelrail.settings.process import Settings

    container = bootstrap(Settings.from_env())
    container = container.for_model(container.models.resolve(None))
    started = time.perf_counter()
    manifest = batch.predict(
        container,
        _local_parts(source),
        batch.Output(FilesystemStore(output.parent, output.name), "", str(output)),
        version=1,
        scorer_of=batch_job.scorer_of,
        threads=threads,
    )
    elapsed = time.perf_counter() - started
    assert manifest["refused"] == 0, manifest
    print(f"predictor: {manifest['predictor']}", file=sys.stderr)
    return elapsed


def bare(source: Path, output: Path, threads: int) -> float:
    """Read, encode, ``Booster.predict``, write: the least a batch scorer must do."""
    import lightgbm
    import numpy as np
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    home = Path(os.environ["MODELRAIL_HOME"])
    version = home / "buckets" / "modelrail-artifacts" / "models" / "penguins" / "versions" / "1"
    features = orjson.loads((version / "manifest.json").read_bytes())["features"]
    booster = lightgbm.Booster(model_file=str(version / "model.txt"))
    started = time.perf_counter()
    table = pq.read_table(source)
    matrix = np.empty((table.num_rows, len(features["features"])), dtype=np.float64)
    for index, feature in enumerate(features["features"]):
        column = table.column(feature["name"])
        if feature["type"] == "category":
            column = pc.index_in(column, value_set=pa.array(feature["categories"]))
        matrix[:, index] = column.to_numpy(zero_copy_only=False)
    probabilities = np.asarray(booster.predict(matrix, num_threads=threads))
    classes = features["classes"]
    columns = {"prediction": pa.array(np.asarray(classes)[probabilities.argmax(axis=1)])}
    for index, name in enumerate(classes):
        columns[f"probability_{name}"] = pa.array(probabilities[:, index])
    output.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), output / "part-0.parquet", compression="zstd")
    return time.perf_counter() - started


def _side(side: str, source: Path, threads: int, home: Path) -> dict[str, float]:
    """One side in a fresh Python: its seconds and its peak RSS."""
    output = BUILD / "out" / side
    shutil.rmtree(output, ignore_errors=True)
    env = _env(home)
    result = subprocess.run(
        [sys.executable, __file__, "--side", side, "--source", str(source),
         "--output", str(output), "--threads", str(threads)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--side", choices=("ours", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        seconds = (ours if args.side == "ours" else bare)(args.source, args.output, args.threads)
        peak_mb = memory.process_peak_bytes() / 2**20
        print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))
        return
    source = parquet(args.rows)
    results: dict[str, Any] = {"rows": args.rows, "threads": args.threads}
    for predictor, home in HOMES.items():
        installation(home)
        rounds = []
        for round_ in range(args.repeat):
            order = ("ours", "bare") if round_ % 2 == 0 else ("bare", "ours")
            rounds.append({side: _side(side, source, args.threads, home) for side in order})
        ratio = statistics.median(r["bare"]["seconds"] / r["ours"]["seconds"] for r in rounds)
        larger = _side("ours", parquet(4 * args.rows), args.threads, home)
        results[predictor] = {
            "rounds": rounds,
            "ratio_bare_over_ours": round(ratio, 3),
            "peak_rss_mb": {
                str(args.rows): round(statistics.median(r["ours"]["peak_rss_mb"] for r in rounds)),
                str(4 * args.rows): round(larger["peak_rss_mb"]),
            },
            "bare_peak_rss_mb": round(statistics.median(r["bare"]["peak_rss_mb"] for r in rounds)),
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
