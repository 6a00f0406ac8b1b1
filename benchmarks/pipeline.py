"""modelrail's data path vs a bare pandas + LightGBM script, side by side, one machine.

    .venv/bin/python benchmarks/pipeline.py [--sizes 100000,1000000] [--rounds 3]
                                            [--large] [--json build/bench-pipeline/results.json]

What it measures, at each size (synthetic CSVs of the bundled contract, written once
per size by ``modelrail synth`` into ``build/bench-pipeline/data/``):

1. **validate vs baseline**: modelrail's validate stage on the uploaded CSV against a
   plain script that reads the same file with ``pd.read_csv`` (the default C engine,
   and the pyarrow engine when pyarrow is installed) and runs the contract's checks
   vectorised (header, types, nulls, ranges, categories, missing targets, row count).
   The stage does more than that (it hashes the upload, profiles the data for drift
   and writes the Parquet snapshot), so it is also measured against a script doing
   all of it with pandas (``pandas-c+profile+parquet``), and modelrail's read and
   checks alone (``checks.validate``) against the read-and-check script: like for
   like both ways;
2. **whole run vs bare script**: the embedded pipeline in one process, validate ->
   launch_training (which trains in-process, as embedded mode does) -> evaluate ->
   register (deploy is left out: it starts a server), against a bare script doing the
   same work: read, check, encode, the same seeded split, ``lightgbm.train`` with the
   same parameters and early stopping, score the hold-out, write the model;
3. **streaming validate vs bare pyarrow** (``--cases streaming``): the validate stage,
   which streams the upload batch by batch, against a bare pyarrow script doing the
   same kind of work in one streaming pass: ``pyarrow.csv.open_csv`` with a block of
   ``[limits] batch_mb``, the contract's checks per batch (nulls, ranges, integers,
   categories, missing targets), a fixed-bin histogram per numeric column and counts
   per category, a ``ParquetWriter``, and the sha256 of the bytes read; ratio and
   peak RSS of each;
4. **each stage alone**: validate, train, evaluate and register each in its own fresh
   Python on one shared ``MODELRAIL_HOME``, consuming the event the previous stage
   recorded in the run log, as a Cloud Function or the training job would: wall time
   and peak RSS per stage, and how both grow per row from one size to the next.

modelrail is driven only through its public entry points: ``modelrail synth``,
``bootstrap`` on an embedded ``MODELRAIL_HOME``, the storage port for the upload, and
``modelrail.service.pipeline.consume`` with the real events (the stages' internals may change
under it). The baseline reads ``pipeline.toml`` and the contract's JSON itself and
uses no modelrail code at all: it is what a competent hand-written script would do.

Every measurement runs in a fresh child process (the same file, ``child`` mode) that
reports its work time and its own peak RSS (``VmHWM``, not ``ru_maxrss``, which holds
the parent's peak on Linux); the parent also times the child from start to exit. Work
time excludes the interpreter's start and the import of pandas / numpy / LightGBM on
both sides (modelrail's own modules load inside the timed call, as in a cold
function). Each case runs modelrail and the baseline back to
back, ``--rounds`` times, alternating which goes first; a ratio is the median of the
rounds' ratios (this machine is shared, and its speed moves by up to 1.5x within
minutes: back-to-back runs share most of a mood, the rounds show the rest). Every
round is kept in the JSON. Not part of ``make test`` (a 2,000-row run is).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modelrail.kernel import memory

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pipeline.toml"
DEFAULT_SIZES = (100_000, 1_000_000)
LARGE_SIZE = 5_000_000
# The stages measured one per process, in pipeline order, and the event each consumes.
STAGES = ("validate", "train", "evaluate", "register")
FEED = {"train": "validate", "evaluate": "train", "register": "evaluate"}
SEED = 0  # of the synthetic data


# --- the parent: data, homes, rounds, tables -------------------------------------------


def synth_csv(rows: int, cache: Path) -> Path:
    """The synthetic CSV of ``rows`` rows, written once by ``modelrail synth``."""
    path = cache / f"synth-{rows}-seed{SEED}.csv"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        subprocess.run(
            [
                _modelrail(),
                "synth",
                "--rows",
                str(rows),
                "--out",
                str(partial),
                "--config",
                str(CONFIG),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        partial.rename(path)
    return path


def _modelrail() -> str:
    beside = Path(sys.executable).with_name("modelrail")
    return str(beside) if beside.exists() else "modelrail"


def home_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MODELRAIL_MODE": "embedded",
        "MODELRAIL_HOME": str(home),
        "MODELRAIL_CODE_VERSION": "bench",
    }


def upload(home: Path, csv_path: Path) -> Path:
    """Put the CSV in the bundled model's upload folder in a new home's data bucket, as
    ``modelrail upload`` does, and write the storage notification it would publish;
    return that message's file."""
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.domain.models import Definition, upload_prefix
    from modelrail.kernel.events import DataUploaded
    from modelrail.settings.process import Settings

    settings = Settings.from_env(home_env(home))
    container = bootstrap(settings)
    definition = Definition.from_files(CONFIG)
    store = container.storage.bucket(settings.data_bucket)
    key = f"{upload_prefix(definition.name)}{csv_path.name}"
    generation = store.write(key, csv_path.read_bytes(), content_type="text/csv")
    message = {
        "data": DataUploaded(bucket=store.bucket, name=key, generation=generation).to_body(),
        "attributes": {"eventType": "OBJECT_FINALIZE", "objectId": key},
    }
    path = home / "upload-message.json"
    path.write_text(json.dumps(message))
    return path


def run_child(role: str, env: Mapping[str, str], **spec: Any) -> dict[str, Any]:
    """One measurement in a fresh Python: its report plus its wall time."""
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "child", role, json.dumps(spec)],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"{role} child failed ({finished.returncode}):\n{finished.stderr}")
    report: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    report["wall_s"] = round(wall, 4)
    return report


def side_by_side(
    rounds: int, sides: Mapping[str, Callable[[], dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Every side once per round, back to back; the order turns each round."""
    names = list(sides)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            result = sides[name]()
            result["load_avg_1m"] = round(os.getloadavg()[0], 2)
            runs[name].append(result)
            print(f"    round {number + 1} {name}: {result['seconds']:.2f} s", flush=True)
    return runs


def summarise(runs: Mapping[str, list[dict[str, Any]]], ours: str) -> dict[str, dict[str, Any]]:
    """Medians per side and each baseline's ratio (median of the rounds' ratios)."""
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        seconds = [r["seconds"] for r in results]
        summary[name] = {
            "median_s": statistics.median(seconds),
            "rounds_s": seconds,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "rounds": results,
        }
        if name != ours:
            ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[ours], results, strict=True)]
            summary[name]["ratio_median"] = statistics.median(ratios)
            summary[name]["ratio_rounds"] = ratios
    return summary


def validate_stage(csv_path: Path, home: Path) -> dict[str, Any]:
    """The validate stage on ``csv_path``, uploaded to a fresh ``home``, in a child."""
    message = upload(_fresh(home), csv_path)
    try:
        return run_child("stage", home_env(home), stage="validate", message=str(message))
    finally:
        shutil.rmtree(home)


def validate_case(
    csv_path: Path, work: Path, rounds: int, engines: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """The stage against the read and checks alone (the issue's baseline) and against a
    script doing all the stage does; modelrail's read and checks alone against the
    former: like for like both ways."""

    def modelrail() -> dict[str, Any]:
        return validate_stage(csv_path, work / "home-validate")

    def pandas_whole() -> dict[str, Any]:
        out = _fresh(work / "bare-validate")
        try:
            return run_child(
                "baseline-validate", os.environ, csv=str(csv_path), engine="c", out=str(out)
            )
        finally:
            shutil.rmtree(out)

    def checks_only() -> dict[str, Any]:
        home = _fresh(work / "home-checks")
        try:
            return run_child("checks", home_env(home), csv=str(csv_path))
        finally:
            shutil.rmtree(home)

    read_and_check: dict[str, Callable[[], dict[str, Any]]] = {
        f"pandas-{engine}": functools.partial(
            run_child, "baseline-validate", os.environ, csv=str(csv_path), engine=engine
        )
        for engine in engines
    }
    runs = side_by_side(
        rounds,
        {
            "modelrail": modelrail,
            "pandas-c+profile+parquet": pandas_whole,
            "modelrail-checks": checks_only,
            **read_and_check,
        },
    )
    stage = ["modelrail", "pandas-c+profile+parquet", *read_and_check]
    alone = ["modelrail-checks", *read_and_check]
    return {
        "validate": summarise({name: runs[name] for name in stage}, "modelrail"),
        "checks": summarise({name: runs[name] for name in alone}, "modelrail-checks"),
    }


def streaming_case(csv_path: Path, work: Path, rounds: int) -> dict[str, dict[str, Any]]:
    """The streaming validate stage against a bare pyarrow streaming script."""

    def modelrail() -> dict[str, Any]:
        return validate_stage(csv_path, work / "home-stream")

    def bare() -> dict[str, Any]:
        out = _fresh(work / "bare-stream")
        try:
            return run_child("baseline-stream", os.environ, csv=str(csv_path), out=str(out))
        finally:
            shutil.rmtree(out)

    runs = side_by_side(rounds, {"modelrail": modelrail, "pyarrow-stream": bare})
    return summarise(runs, "modelrail")


def run_case(csv_path: Path, work: Path, rounds: int) -> dict[str, dict[str, Any]]:
    def modelrail() -> dict[str, Any]:
        home = _fresh(work / "home-run")
        message = upload(home, csv_path)
        try:
            return run_child("embedded-run", home_env(home), message=str(message))
        finally:
            shutil.rmtree(home)

    def bare() -> dict[str, Any]:
        out = _fresh(work / "bare-run")
        try:
            return run_child("baseline-run", os.environ, csv=str(csv_path), out=str(out))
        finally:
            shutil.rmtree(out)

    runs = side_by_side(rounds, {"modelrail": modelrail, "bare-script": bare})
    for ours, theirs in zip(runs["modelrail"], runs["bare-script"], strict=True):
        if ours["best_iteration"] != theirs["best_iteration"]:
            print(
                f"    warning: best iterations differ (modelrail {ours['best_iteration']}, "
                f"script {theirs['best_iteration']}): the two did not train the same model",
                flush=True,
            )
    return summarise(runs, "modelrail")


def stages_case(csv_path: Path, work: Path, rounds: int) -> dict[str, dict[str, Any]]:
    """Each stage in its own process on one home, ``rounds`` times; medians per stage."""
    results: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGES}
    for number in range(rounds):
        home = _fresh(work / "home-stages")
        message = upload(home, csv_path)
        try:
            run_id = None
            for stage in STAGES:
                spec: dict[str, Any] = {"stage": stage}
                if stage == "validate":
                    spec["message"] = str(message)
                else:
                    spec["run_id"], spec["after"] = run_id, FEED[stage]
                result = run_child("stage", home_env(home), **spec)
                run_id = result["run_id"]
                results[stage].append(result)
                print(
                    f"    round {number + 1} {stage}: {result['seconds']:.2f} s, "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        finally:
            shutil.rmtree(home)
    return {
        stage: {
            "median_s": statistics.median(r["seconds"] for r in stage_results),
            "median_wall_s": statistics.median(r["wall_s"] for r in stage_results),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in stage_results),
            "rounds": stage_results,
        }
        for stage, stage_results in results.items()
    }


def growth(sizes: list[int], by_size: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per stage: time per row at each size, and the marginal time and RSS per added row
    from one size to the next (near-linear growth keeps the former flat). Early stopping
    finds more boosting rounds in more data, so train's growth is also given per round."""
    table: dict[str, Any] = {}
    for stage in STAGES:
        points = [(rows, by_size[str(rows)]["stages"][stage]) for rows in sizes]
        entry: dict[str, Any] = {
            "us_per_row": {str(rows): 1e6 * p["median_s"] / rows for rows, p in points},
            "steps": [],
        }
        for (small, a), (large, b) in itertools.pairwise(points):
            added = large - small
            entry["steps"].append(
                {
                    "from": small,
                    "to": large,
                    "time_x": b["median_s"] / a["median_s"],
                    "rows_x": large / small,
                    "marginal_us_per_row": 1e6 * (b["median_s"] - a["median_s"]) / added,
                    "marginal_rss_bytes_per_row": 2**20
                    * (b["peak_rss_mb"] - a["peak_rss_mb"])
                    / added,
                }
            )
            iterations = [p["rounds"][0]["output"].get("best_iteration") for p in (a, b)]
            if all(iterations):
                entry["steps"][-1]["iterations"] = iterations
                entry["steps"][-1]["time_x_per_iteration"] = (
                    b["median_s"] / a["median_s"] * iterations[0] / iterations[1]
                )
        table[stage] = entry
    return table


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def print_tables(results: Mapping[str, Any]) -> None:
    print("\nside by side (work seconds, medians; ratio = median of the rounds' ratios)")
    print(f"{'rows':>10}  {'case':<40} {'modelrail':>10} {'baseline':>10} {'ratio':>7}  rounds")
    for rows, at_size in results["sizes"].items():
        for case in ("checks", "validate", "streaming", "run"):
            summary = at_size.get(case)
            if summary is None:
                continue
            ours_name = next(iter(summary))  # the side the ratios are of
            ours = summary[ours_name]
            for name, theirs in summary.items():
                if name == ours_name:
                    continue
                label = f"{case} vs {name}"
                rounds = ", ".join(f"{ratio:.2f}" for ratio in theirs["ratio_rounds"])
                print(
                    f"{int(rows):>10,}  {label:<40} {ours['median_s']:>10.2f} "
                    f"{theirs['median_s']:>10.2f} {theirs['ratio_median']:>6.2f}x  {rounds}"
                )
    print("\npeak RSS (MB) of each side's process")
    for rows, at_size in results["sizes"].items():
        for case in ("checks", "validate", "streaming", "run"):
            for name, summary in at_size.get(case, {}).items():
                print(f"{int(rows):>10,}  {case + ' ' + name:<40} {summary['peak_rss_mb']:>8.0f}")
    print("\neach stage in its own process")
    print(
        f"{'rows':>10}  {'stage':<10} {'work s':>8} {'wall s':>8} {'peak RSS MB':>12} {'us/row':>8}"
    )
    for rows, at_size in results["sizes"].items():
        for stage, summary in at_size.get("stages", {}).items():
            print(
                f"{int(rows):>10,}  {stage:<10} {summary['median_s']:>8.2f} "
                f"{summary['median_wall_s']:>8.2f} {summary['peak_rss_mb']:>12.0f} "
                f"{1e6 * summary['median_s'] / int(rows):>8.2f}"
            )
    if results.get("growth"):
        print("\ngrowth from one size to the next (time x against rows x; marginal cost per row)")
        for stage, entry in results["growth"].items():
            for step in entry["steps"]:
                print(
                    f"  {stage:<10} {step['from']:>9,} -> {step['to']:>9,}: time "
                    f"{step['time_x']:.2f}x for {step['rows_x']:.0f}x rows, "
                    f"{step['marginal_us_per_row']:.2f} us and "
                    f"{step['marginal_rss_bytes_per_row']:.0f} B of RSS per added row"
                )
                if "iterations" in step:
                    first, last = step["iterations"]
                    print(
                        f"  {'':<10} boosting rounds {first} -> {last}: time per round "
                        f"{step['time_x_per_iteration']:.2f}x for {step['rows_x']:.0f}x rows"
                    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=list(DEFAULT_SIZES),
        help="rows per synthetic CSV, comma-separated (default: 100000,1000000)",
    )
    parser.add_argument("--large", action="store_true", help=f"add {LARGE_SIZE:,} rows")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side-by-side case")
    parser.add_argument(
        "--stage-rounds", type=int, default=1, help="rounds of the one-stage-per-process chain"
    )
    parser.add_argument(
        "--cases",
        default="validate,run,stages",
        help="which of validate, streaming, run, stages to measure (comma-separated)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "build" / "bench-pipeline",
        help="data cache (data/) and scratch homes",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    sizes = sorted(set(args.sizes + ([LARGE_SIZE] if args.large else [])))
    cases = set(args.cases.split(","))
    engines = ["c"] + (["pyarrow"] if _importable("pyarrow") else [])
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "rounds": args.rounds,
        "stage_rounds": args.stage_rounds,
        "engines": engines,
        "sizes": {},
    }
    began = time.perf_counter()
    for rows in sizes:
        csv_path = synth_csv(rows, args.work_dir / "data")
        print(f"{rows:,} rows: {csv_path} ({csv_path.stat().st_size / 1e6:.0f} MB)", flush=True)
        at_size: dict[str, Any] = {"csv_mb": csv_path.stat().st_size / 1e6}
        scratch = args.work_dir / "scratch"
        if "validate" in cases:
            print("  validate vs pandas", flush=True)
            at_size.update(validate_case(csv_path, scratch, args.rounds, engines))
        if "streaming" in cases:
            print("  streaming validate vs bare pyarrow", flush=True)
            at_size["streaming"] = streaming_case(csv_path, scratch, args.rounds)
        if "run" in cases:
            print("  whole embedded run vs bare script", flush=True)
            at_size["run"] = run_case(csv_path, scratch, args.rounds)
        if "stages" in cases:
            print("  each stage in its own process", flush=True)
            at_size["stages"] = stages_case(csv_path, scratch, args.stage_rounds)
        results["sizes"][str(rows)] = at_size
        shutil.rmtree(scratch, ignore_errors=True)
    if "stages" in cases and len(sizes) > 1:
        results["growth"] = growth(sizes, results["sizes"])
    results["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["total_s"] = round(time.perf_counter() - began, 1)
    print_tables(results)
    print(f"\ntotal {results['total_s']:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --- the children: one measurement each, a JSON line on stdout --------------------------


def child(role: str, spec: dict[str, Any]) -> None:
    measure = {
        "stage": child_stage,
        "checks": child_checks,
        "embedded-run": child_embedded_run,
        "baseline-validate": child_baseline_validate,
        "baseline-run": child_baseline_run,
        "baseline-stream": child_baseline_stream,
    }[role]
    report = measure(spec)
    report.setdefault("peak_rss_mb", memory.process_peak_bytes() / 2**20)
    print(json.dumps(report))


def _container() -> Any:
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.domain.models import Definition
    from modelrail.settings.process import Settings

    container = bootstrap(Settings.from_env())
    definition = Definition.from_files(CONFIG)
    container.models.add(definition)  # as ``modelrail add`` installs it
    container = container.for_model(definition.name)
    _ = container.config  # loaded before the clock starts, as a warm CLI has it
    return container


def _message(path: str) -> Any:
    from modelrail.kernel.ports import Message

    recorded = json.loads(Path(path).read_text())
    return Message(json.dumps(recorded["data"]).encode(), recorded["attributes"])


def _recorded_event(container: Any, run_id: str, stage: str) -> Any:
    """The event ``stage`` recorded in the run log, as the next stage receives it."""
    from modelrail.kernel.ports import Message

    record = container.runs.stage_record(run_id, stage)
    if record is None or record.status != "succeeded":
        raise RuntimeError(f"{stage} of {run_id} did not succeed: {record}")
    return Message(json.dumps(record.event).encode(), {})


def _succeeded(record: Any) -> Any:
    """The stage record (``StageRecord``) of a stage that succeeded."""
    if record is None or record.status != "succeeded":
        raise RuntimeError(f"the stage did not succeed: {record}")
    return record


def child_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """One stage, as its function (or the training job) runs it: a fresh process that
    bootstraps on the shared home and consumes one event."""
    import pandas  # noqa: F401  (the libraries load before the clock, as on the baseline side)

    if spec["stage"] != "validate":
        import lightgbm  # noqa: F401

    from modelrail.service.pipeline import consume

    container = _container()
    stage = spec["stage"]
    if stage == "validate":
        message = _message(spec["message"])
    else:
        message = _recorded_event(container, spec["run_id"], spec["after"])
    started = time.perf_counter()
    record = _succeeded(consume(container, stage, message))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "run_id": record.run_id, "output": dict(record.output)}


def child_checks(spec: dict[str, Any]) -> dict[str, Any]:
    """modelrail's read and contract checks alone (``checks.validate`` on the file's
    bytes): the work the read-and-check baseline does, no profile, no snapshot."""
    import pandas  # noqa: F401  (as on the baseline side)

    contract = _container().config.contract
    started = time.perf_counter()
    from modelrail.domain.dataset import checks

    report, parsed = checks.validate(Path(spec["csv"]).read_bytes(), contract)
    seconds = time.perf_counter() - started
    if not report.passed:
        raise RuntimeError(f"modelrail found problems in clean data: {report.problems}")
    return {"seconds": seconds, "rows": parsed.rows}


def child_embedded_run(spec: dict[str, Any]) -> dict[str, Any]:
    """validate -> launch_training (which trains in this process) -> evaluate -> register,
    each stage fed the event the previous one recorded."""
    import lightgbm  # noqa: F401
    import pandas  # noqa: F401

    from modelrail.service.pipeline import consume

    container = _container()
    message = _message(spec["message"])
    started = time.perf_counter()
    run_id = _succeeded(consume(container, "validate", message)).run_id
    _succeeded(
        consume(container, "launch_training", _recorded_event(container, run_id, "validate"))
    )
    _succeeded(container.runs.stage_record(run_id, "train"))
    _succeeded(consume(container, "evaluate", _recorded_event(container, run_id, "train")))
    _succeeded(consume(container, "register", _recorded_event(container, run_id, "evaluate")))
    seconds = time.perf_counter() - started
    records = {
        stage: container.runs.stage_record(run_id, stage)
        for stage in ("validate", "launch_training", "train", "evaluate", "register")
    }
    return {
        "seconds": seconds,
        # Each stage resets the process's high-water mark to measure its own peak
        # (kernel.memory), so the run's peak is the highest a stage recorded.
        "peak_rss_mb": max(
            (record.resources or {}).get("peak_rss_bytes", 0) / 2**20
            for record in records.values()
            if record
        ),
        "stage_s": {stage: record.duration_s for stage, record in records.items() if record},
        "best_iteration": records["train"].output["best_iteration"],
        "metrics": records["evaluate"].output["metrics"],
    }


# The baseline: plain pandas, numpy and LightGBM, reading pipeline.toml and the contract
# JSON itself. Written for the bundled contract's column types (category, number,
# integer); it refuses others rather than check them wrongly.


def child_baseline_stream(spec: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0915 - one script
    """A bare pyarrow streaming validate: read in blocks, check each batch, count
    histograms, write Parquet, hash the bytes; no modelrail code."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    config, contract = _pipeline_config()
    block = round(config.get("limits", {}).get("batch_mb", 64) * 2**20)
    started = time.perf_counter()
    columns = contract["columns"]
    nulls = contract.get("null_tokens", [""])
    target = contract["target"]
    types = {
        c["name"]: pa.float64()
        if c["type"] in ("number", "integer")
        else pa.bool_()
        if c["type"] == "boolean"
        else pa.string()
        for c in columns
    }
    digest = hashlib.sha256()

    class Hashing:
        def __init__(self, raw: Any) -> None:
            self.raw, self.closed = raw, False

        def read(self, size: int = -1) -> bytes:
            data: bytes = self.raw.read(size)
            digest.update(data)
            return data

        def readable(self) -> bool:
            return True

        def close(self) -> None:
            self.closed = True

    with open(spec["csv"], "rb") as raw:
        reader = pacsv.open_csv(
            pa.PythonFile(Hashing(raw), mode="r"),
            read_options=pacsv.ReadOptions(block_size=block),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=nulls, strings_can_be_null=True
            ),
        )
        histograms: dict[str, np.ndarray] = {}
        counts: dict[str, dict[Any, int]] = {}
        problems, rows = 0, 0
        writer = None
        for read in reader:
            batch = read.filter(pc.is_valid(read.column(target)))
            for column in columns:
                array = batch.column(column["name"])
                if not column.get("nullable") and column["name"] != target:
                    problems += array.null_count
                if column["type"] in ("number", "integer"):
                    values = array.to_numpy(zero_copy_only=False)
                    present = values[~np.isnan(values)]
                    problems += int((~np.isfinite(present)).sum())
                    if column["type"] == "integer":
                        problems += int((present != np.round(present)).sum())
                    low, high = column.get("min"), column.get("max")
                    problems += int((present < low).sum()) if low is not None else 0
                    problems += int((present > high).sum()) if high is not None else 0
                    edges = np.linspace(low or 0.0, high or 1.0, 11)
                    found, _ = np.histogram(present, bins=edges)
                    histograms[column["name"]] = histograms.get(column["name"], 0) + found
                elif column["type"] == "category":
                    allowed = pa.array(column["categories"])
                    problems += int(
                        pc.sum(pc.invert(pc.is_in(array.drop_null(), allowed))).as_py() or 0
                    )
                    tally = counts.setdefault(column["name"], {})
                    for item in pc.value_counts(array).to_pylist():
                        tally[item["values"]] = tally.get(item["values"], 0) + item["counts"]
            rows += batch.num_rows
            table = pa.Table.from_batches([batch])
            if writer is None:
                writer = pq.ParquetWriter(Path(spec["out"]) / "snapshot.parquet", table.schema,
                                          compression="zstd")  # fmt: skip
            writer.write_table(table, row_group_size=100_000)
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - started
    if problems:
        raise RuntimeError(f"the script found {problems} problems in clean data")
    return {"seconds": seconds, "rows": rows, "sha256": digest.hexdigest()}


def _pipeline_config() -> tuple[dict[str, Any], dict[str, Any]]:
    config = tomllib.loads(CONFIG.read_text())
    contract = json.loads((CONFIG.parent / config["model"]["contract"]).read_text())
    return config, contract


def baseline_read_and_check(
    csv_path: str, contract: dict[str, Any], engine: str
) -> tuple[Any, list[dict[str, Any]]]:
    """The typed frame (rows without a target dropped) and the problems found."""
    import pandas as pd

    columns = contract["columns"]
    unsupported = [c["name"] for c in columns if c["type"] not in ("category", "number", "integer")]
    if unsupported:
        raise ValueError(f"the baseline checks category/number/integer columns, not {unsupported}")
    options: dict[str, Any] = {
        "dtype": {c["name"]: "category" for c in columns if c["type"] == "category"},
        "na_values": contract["null_tokens"],
        "keep_default_na": False,
        "engine": engine,
    }
    if engine == "c":
        options["skipinitialspace"] = True  # pyarrow's reader has no such option
    frame = pd.read_csv(csv_path, **options)

    problems: list[dict[str, Any]] = []
    with open(csv_path, encoding="utf-8-sig") as handle:
        header = [name.strip() for name in handle.readline().rstrip("\r\n").split(",")]
    for name in set(header) ^ {c["name"] for c in columns}:
        problems.append({"check": "columns", "column": name, "count": 0})
    if len(header) != len(set(header)):
        problems.append({"check": "duplicate_column", "column": None, "count": 0})
    target = contract["target"]
    for column in columns:
        if column["name"] in frame.columns:
            _baseline_check_column(frame, column, column["name"] == target, problems)

    no_target = frame[target].isna().to_numpy()
    if no_target.mean() > contract.get("max_missing_target_fraction", 0.0):
        problems.append(_baseline_problem("missing_target", target, no_target, frame[target]))
    elif no_target.any():
        frame = frame[~no_target]
    if len(frame) < contract["min_rows"]:
        problems.append({"check": "min_rows", "column": None, "count": len(frame)})
    return frame, problems


def _baseline_check_column(
    frame: Any, column: dict[str, Any], is_target: bool, problems: list[dict[str, Any]]
) -> None:
    """Nulls, categories, types and ranges of one column; numbers become float64."""
    import numpy as np
    import pandas as pd

    name = column["name"]
    values = frame[name]
    missing = values.isna().to_numpy()
    if not column["nullable"] and not is_target and missing.any():
        problems.append(_baseline_problem("null", name, missing, values))
    if column["type"] == "category":
        unknown = ~missing & ~values.isin(column["categories"]).to_numpy()
        if unknown.any():
            problems.append(_baseline_problem("category", name, unknown, values))
        return
    numbers = values
    if values.dtype == object:  # something in the column is not a number
        numbers = pd.to_numeric(values, errors="coerce")
    array = numbers.to_numpy(dtype=np.float64)
    checks = {"type": ~missing & ~np.isfinite(array)}
    checked = ~missing & ~checks["type"]
    if column["type"] == "integer":
        checks["integer"] = checked & (array != np.round(array))
    if column.get("min") is not None:
        checks["min"] = checked & (array < column["min"])
    if column.get("max") is not None:
        checks["max"] = checked & (array > column["max"])
    for check, mask in checks.items():
        if mask.any():
            problems.append(_baseline_problem(check, name, mask, values))
    frame[name] = array


def _baseline_problem(check: str, column: str, mask: Any, values: Any) -> dict[str, Any]:
    import numpy as np

    rows = np.flatnonzero(mask)
    return {
        "check": check,
        "column": column,
        "count": len(rows),
        "rows": (rows[:20] + 1).tolist(),
        "examples": list(dict.fromkeys(map(str, np.asarray(values)[rows[:200]])))[:5],
    }


def child_baseline_validate(spec: dict[str, Any]) -> dict[str, Any]:
    """Read and check; with ``out``, also what the validate stage does beyond that: hash
    the upload, profile every feature and the target, write the typed data as Parquet
    (zstd, row groups of 100,000) and hash it."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    _, contract = _pipeline_config()
    started = time.perf_counter()
    frame, problems = baseline_read_and_check(spec["csv"], contract, spec["engine"])
    if problems:
        raise RuntimeError(f"the baseline found problems in clean data: {problems}")
    if "out" in spec:
        _baseline_keep(spec["csv"], frame, contract, Path(spec["out"]))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(frame)}


def _baseline_keep(csv_path: str, frame: Any, contract: dict[str, Any], out: Path) -> None:
    import hashlib

    import numpy as np

    hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()
    profile = {}
    for column in contract["columns"]:
        if column.get("role", "feature") != "feature" and column["name"] != contract["target"]:
            continue
        values = frame[column["name"]]
        rows = max(len(values), 1)
        if column["type"] == "category":
            counts = values.value_counts(dropna=True)
            profile[column["name"]] = {
                "shares": {str(k): int(c) / rows for k, c in counts.items() if c},
                "missing": float(values.isna().sum()) / rows,
            }
            continue
        numbers = values.to_numpy(dtype=np.float64)
        present = numbers[~np.isnan(numbers)]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, 11)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, present, side="right"))
        profile[column["name"]] = {
            "edges": edges.tolist(),
            "shares": (counts / rows).tolist(),
            "missing": float(len(numbers) - len(present)) / rows,
        }
    (out / "profile.json").write_text(json.dumps(profile, sort_keys=True))
    parquet = out / "part-00000.parquet"
    frame[[c["name"] for c in contract["columns"]]].to_parquet(
        parquet, compression="zstd", row_group_size=100_000, index=False
    )
    hashlib.sha256(parquet.read_bytes()).hexdigest()


_LGB_OBJECTIVE = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
_LGB_METRIC = {"binary": "binary_logloss", "multiclass": "multi_logloss", "regression": "l2"}


def child_baseline_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Read, check, encode, split, train with early stopping, score the hold-out, save."""
    import lightgbm as lgb
    import numpy as np
    import pandas  # loaded before the clock, as on modelrail's side

    config, contract = _pipeline_config()
    if config["model"]["objective"] != "multiclass":
        raise ValueError("the bare script is written for the bundled (multiclass) pipeline")
    started = time.perf_counter()
    frame, problems = baseline_read_and_check(spec["csv"], contract, "c")
    if problems:
        raise RuntimeError(f"the baseline found problems in clean data: {problems}")

    # Features: the contract's columns other than the target and the ignored ones;
    # categories as their index in the contract's list (NaN when missing).
    target = contract["target"]
    features = [
        c
        for c in contract["columns"]
        if c["name"] != target and c.get("role", "feature") == "feature"
    ]
    matrix = np.empty((len(frame), len(features)), dtype=np.float64)
    for index, column in enumerate(features):
        values = frame[column["name"]]
        if column["type"] == "category":
            codes = values.cat.set_categories(column["categories"]).cat.codes.to_numpy()
            matrix[:, index] = np.where(codes < 0, np.nan, codes)
        else:
            matrix[:, index] = values.to_numpy(dtype=np.float64)
    classes = next(c for c in contract["columns"] if c["name"] == target)["categories"]
    labels = frame[target].cat.set_categories(classes).cat.codes.to_numpy().astype(np.float64)

    # The split modelrail makes: each row by a hash of its inputs (every column but the
    # target, as floats and strings) moved by the seed, so the two train the same model.
    training, model = config["training"], config["model"]
    inputs = pandas.DataFrame(
        {
            c["name"]: (
                frame[c["name"]].astype(object).where(frame[c["name"]].notna(), None)
                if c["type"] == "category"
                else frame[c["name"]].astype(np.float64)
            )
            for c in contract["columns"]
            if c["name"] != target
        }
    )
    hashes = pandas.util.hash_pandas_object(inputs, index=False).to_numpy(dtype=np.uint64)
    offset = np.uint64(np.random.default_rng(training["seed"]).integers(0, 2**63))
    position = (hashes + offset).astype(np.float64) / 2.0**64
    holdout_fraction = training["holdout_fraction"]
    holdout = np.flatnonzero(position < holdout_fraction)
    is_validation = (position >= holdout_fraction) & (
        position < holdout_fraction + training["validation_fraction"]
    )
    validation = np.flatnonzero(is_validation)
    train = np.flatnonzero((position >= holdout_fraction) & ~is_validation)

    params = {
        "objective": _LGB_OBJECTIVE[model["objective"]],
        "metric": _LGB_METRIC[model["objective"]],
        "seed": training["seed"],
        # modelrail's default: the cores given, one thread per 50,000 training rows.
        "num_threads": min(len(os.sched_getaffinity(0)), max(1, len(train) // 50_000)),
        **training["params"],
        "num_class": len(classes),
    }
    names = [c["name"] for c in features]
    categorical = [c["name"] for c in features if c["type"] == "category"]
    train_set = lgb.Dataset(
        matrix[train], labels[train], feature_name=names, categorical_feature=categorical
    )
    validation_set = lgb.Dataset(matrix[validation], labels[validation], reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=training["num_boost_round"],
        valid_sets=[validation_set],
        callbacks=[lgb.early_stopping(training["early_stopping_rounds"], verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    probabilities = np.clip(booster.predict(matrix[holdout], num_iteration=best), 1e-15, 1.0)
    truth = labels[holdout].astype(int)
    metrics = {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == truth)),
        "multi_logloss": float(-np.mean(np.log(probabilities[np.arange(len(truth)), truth]))),
    }
    Path(spec["out"], "model.txt").write_text(booster.model_to_string(num_iteration=best))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "best_iteration": best, "metrics": metrics}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        child(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
