"""The train stage against bare LightGBM, and training on Dask against one process,
side by side in one run, one machine.

    .venv/bin/python benchmarks/training.py [--rows 1000000] [--dask-rows 10000000]
                                            [--rounds 40] [--json build/bench-training.json]

What it measures (synthetic CSVs of the bundled contract, ``modelrail synth``, written
once per size under ``build/bench-training/``; each validated once by modelrail's own
validate stage into a snapshot of parts, then every measurement reads that snapshot):

1. **the train stage's overhead** at ``--rows``, ``--repeat`` rounds alternating which
   side goes first (the median ratio is reported): modelrail's train stage (engine
   ``local``) in a fresh Python, consuming the validated event as the training job does,
   against a bare script in a fresh Python that reads the same snapshot's parts with
   pyarrow, encodes them as numpy, and calls ``lightgbm.train`` with the same
   parameters, the same validation rows and early stopping. The stage also splits by
   row hash, drops duplicate rows, checks every part's sha256, and writes the model and
   its candidate record: the ratio says what that costs.
2. **Dask against one process** at ``--dask-rows``: the train stage with engine
   ``local`` and with engine ``dask`` on a local cluster of 2 single-threaded workers,
   each in a fresh Python, then evaluate's hold-out metrics for each model on the same
   hold-out (evaluate stage, in process), wall time, and peak RSS: the job's and each
   worker's.

Both use ``--rounds`` boosting rounds (early stopping patience above it, so both
engines train every round and the comparison is of the same work).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelrail.kernel import memory

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench-training"


def synth(rows: int) -> Path:
    path = BUILD / "data" / f"synth-{rows}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        modelrail = Path(sys.executable).with_name("modelrail")
        subprocess.run(
            [
                str(modelrail),
                "synth",
                "--rows",
                str(rows),
                "--out",
                str(path),
                "--config",
                str(ROOT / "pipeline.toml"),
            ],
            check=True,
        )
    return path


def config_file(engine: str, rounds: int) -> Path:
    """The bundled pipeline.toml with ``engine`` and ``rounds`` (and patience above)."""
    text = (ROOT / "pipeline.toml").read_text()
    for old, new in (
        ('contract = "schemas/', f'contract = "{ROOT}/schemas/'),
        ('engine = "auto"', f'engine = "{engine}"'),
        ("num_boost_round = 500", f"num_boost_round = {rounds}"),
        ("early_stopping_rounds = 30", f"early_stopping_rounds = {rounds + 1}"),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    path = BUILD / "config" / f"{engine}-{rounds}" / "pipeline.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def env_of(home: Path, config: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MODELRAIL_MODE": "embedded",
        "MODELRAIL_HOME": str(home),
        "BENCH_CONFIG": str(config),  # the child installs it (``_container``)
        "MODELRAIL_TOPOLOGY": str(ROOT / "topology.yaml"),
        "MODELRAIL_CODE_VERSION": "bench",
    }


def child(role: str, env: dict[str, str], **spec: Any) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "child", role, json.dumps(spec)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall_s"] = round(time.perf_counter() - started, 3)
    return report


def _peak_mb() -> float:
    return memory.process_peak_bytes() / 2**20


def _container() -> Any:
    """This home's container, acting for the benchmark's model (installed here, as
    ``modelrail add`` installs it)."""
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.domain.models import Definition
    from modelrail.settings.process import Settings

    container = bootstrap(Settings.from_env())
    definition = Definition.from_files(Path(os.environ["BENCH_CONFIG"]))
    container.models.add(definition)
    return container.for_model(definition.name)


def child_validate(spec: dict[str, Any]) -> dict[str, Any]:
    """Upload the CSV and run validate in process; the run's id."""
    import orjson

    from modelrail.domain.models import upload_prefix
    from modelrail.kernel.events import DataUploaded
    from modelrail.kernel.ports import Message
    from modelrail.service.pipeline import consume

    container = _container()
    store = container.storage.bucket(container.settings.data_bucket)
    path = Path(spec["csv"])
    key = f"{upload_prefix(container.model)}{path.name}"
    with path.open("rb") as data:
        generation = store.write(key, data.read())
    event = DataUploaded(bucket=store.bucket, name=key, generation=generation)
    record = consume(container, "validate", Message(orjson.dumps(event.to_body()), {}))
    assert record is not None
    assert record.status == "succeeded", record
    return {"run_id": record.run_id}


def child_train(spec: dict[str, Any]) -> dict[str, Any]:
    """The train stage on the validated event, as the training job runs it."""
    import lightgbm  # noqa: F401  (loaded before the clock, as on the bare side)
    import orjson

    from modelrail.kernel.ports import Message
    from modelrail.service.pipeline import consume

    container = _container()
    validated = container.runs.stage_record(spec["run_id"], "validate")
    assert validated is not None
    started = time.perf_counter()
    record = consume(container, "train", Message(orjson.dumps(validated.event), {}))
    seconds = time.perf_counter() - started
    assert record is not None
    assert record.status == "succeeded", record
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(_peak_mb(), 1),
        "output": dict(record.output),
        "resources": dict(record.resources or {}),
        "model_sha256": record.event["model_sha256"] if record.event else None,
    }


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """Read the parts with pyarrow, encode as numpy, lightgbm.train with the same
    parameters, validation rows and early stopping."""
    import lightgbm as lgb
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modelrail.domain import training
    from modelrail.domain.config import PipelineConfig
    from modelrail.domain.features import FeatureSchema

    config = PipelineConfig.load(Path(os.environ["BENCH_CONFIG"]))
    schema = FeatureSchema.from_contract(config.contract, config.objective)
    started = time.perf_counter()
    table = pa.concat_tables(pq.read_table(path) for path in spec["parts"])
    columns = {
        name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
    }
    features = np.column_stack(
        [
            _codes(columns[f.name], f.categories)
            if f.is_categorical
            else columns[f.name].astype(float)
            for f in schema.features
        ]
    )
    target = _codes(columns[schema.target], schema.classes)
    side = np.random.default_rng(config.seed).random(len(target))  # a split, no hashing
    fit, check = side >= config.validation_fraction, side < config.validation_fraction
    params = training.lgb_params(config, schema, int(fit.sum()))
    train_set = lgb.Dataset(
        features[fit],
        target[fit],
        feature_name=schema.names,
        categorical_feature=schema.categorical_names,
    )
    valid = lgb.Dataset(features[check], target[check], reference=train_set)
    lgb.train(
        params, train_set, num_boost_round=config.num_boost_round, valid_sets=[valid],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )  # fmt: skip
    return {"seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": round(_peak_mb(), 1)}


def _codes(values: Any, categories: Any) -> Any:
    import numpy as np

    index = {c: float(i) for i, c in enumerate(categories)}
    return np.fromiter((index.get(v, np.nan) for v in values), np.float64, len(values))


def child_evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    """evaluate on the train record's event: the hold-out metrics."""
    import orjson

    from modelrail.kernel.ports import Message
    from modelrail.service.pipeline import consume

    container = _container()
    trained = container.runs.stage_record(spec["run_id"], "train")
    assert trained is not None
    record = consume(container, "evaluate", Message(orjson.dumps(trained.event), {}))
    assert record is not None, record
    # The report has the hold-out metrics whether the gate blessed the model or not.
    report = container.runs.report(spec["run_id"], "evaluation")
    return {"metrics": dict(report["metrics"]), "status": record.status}


def parts_of(home: Path, run_id: str) -> list[str]:
    import orjson

    index = home / "buckets" / "modelrail-artifacts" / "runs" / run_id / "snapshot" / "index.json"
    root = home / "buckets" / "modelrail-artifacts"
    return [str(root / part["key"]) for part in orjson.loads(index.read_bytes())["parts"]]


def validated_home(
    rows: int, engine: str, rounds: int, name: str
) -> tuple[Path, dict[str, str], str]:
    home = BUILD / "homes" / name
    shutil.rmtree(home, ignore_errors=True)
    env = env_of(home, config_file(engine, rounds))
    run_id = child("validate", env, csv=str(synth(rows)))["run_id"]
    return home, env, run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dask-rows", type=int, default=10_000_000, help="0: skip Dask")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the overhead case")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "rows": args.rows,
        "dask_rows": args.dask_rows,
        "rounds": args.rounds,
    }

    home, env, run_id = validated_home(args.rows, "local", args.rounds, "overhead")
    rounds = []
    for n in range(args.repeat):
        # Side by side, alternating which goes first: the machine's speed swings.
        order = ("stage", "bare") if n % 2 == 0 else ("bare", "stage")
        measured: dict[str, Any] = {
            side: _train_afresh(home, env, run_id)
            if side == "stage"
            else child("bare", env, parts=parts_of(home, run_id))
            for side in order
        }
        measured["ratio"] = round(measured["stage"]["seconds"] / measured["bare"]["seconds"], 2)
        rounds.append(measured)
        stage_s, bare_s = measured["stage"]["seconds"], measured["bare"]["seconds"]
        print(f"round {n + 1}: train stage {stage_s} s, bare lightgbm.train {bare_s} s: "
              f"{measured['ratio']}x", flush=True)  # fmt: skip
    ratios = sorted(r["ratio"] for r in rounds)
    results["overhead"] = {"rounds": rounds, "median_ratio": ratios[len(ratios) // 2]}
    print(f"train stage / bare lightgbm.train at {args.rows:,} rows: median "
          f"{results['overhead']['median_ratio']}x of {ratios}", flush=True)  # fmt: skip

    if not args.dask_rows:  # --dask-rows 0: the overhead alone
        _write(args.json, results)
        return
    engines = {}
    for engine in ("local", "dask"):
        home, env, run_id = validated_home(args.dask_rows, engine, args.rounds, f"engine-{engine}")
        trained = child("train", env, run_id=run_id)
        evaluated = child("evaluate", env, run_id=run_id)
        engines[engine] = {"train": trained, "evaluate": evaluated}
        print(f"{engine}: {trained['seconds']} s, job peak {trained['peak_rss_mb']} MB, "
              f"workers {trained['resources'].get('workers')}, metrics {evaluated['metrics']}",
              flush=True)  # fmt: skip
    local, dask = (engines[e]["evaluate"]["metrics"] for e in ("local", "dask"))
    results["engines"] = engines
    results["holdout_relative_difference"] = {
        name: round(abs(dask[name] - local[name]) / abs(local[name]), 4)
        for name in local if local[name]
    }  # fmt: skip
    print("hold-out metric difference (relative):", results["holdout_relative_difference"])
    _write(args.json, results)


def _train_afresh(home: Path, env: dict[str, str], run_id: str) -> dict[str, Any]:
    """The train stage on a copy of the validated home: a stage that already recorded
    would only re-publish its event."""
    copy = home.with_name(f"{home.name}-train")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(home, copy)
    try:
        return child("train", {**env, "MODELRAIL_HOME": str(copy)}, run_id=run_id)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _write(path: Path | None, results: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))


def child_main(role: str, spec: dict[str, Any]) -> None:
    report = {"validate": child_validate, "train": child_train, "bare": child_bare,
              "evaluate": child_evaluate}[role](spec)  # fmt: skip
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
