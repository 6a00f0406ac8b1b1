"""modelrail's staging service vs MLflow's scoring server, same model, one machine.

    .venv/bin/python benchmarks/serve.py [--duration 10] [--out build/bench/results.json]

What it does:
1. trains the penguins model (the pipeline's contract and encoding), builds and
   verifies its compiled predictor as the training job does (``builder.build``) and
   registers both in a scratch bucket under ``build/bench/``;
2. builds MLflow's own environment (``build/bench-mlflow-venv`` from
   ``benchmarks/requirements-mlflow.txt``) if missing, saves the same booster with
   ``mlflow.lightgbm.save_model`` and starts ``mlflow models serve`` (2 workers);
3. starts modelrail's service as its image does (``python -m modelrail.serving.server``:
   granian, app preloaded);
4. loads them with wrk (Debian's package; installed with apt-get if missing) on
   127.0.0.1: 1-instance and 100-instance requests at 1 and 8 connections. Both
   servers are up together, and each case runs on one and then at once on the other,
   ``--rounds`` times; a ratio is the median of the rounds' ratios, and each case's
   figures are those of its median round;
5. times ``booster.predict`` in-process (the physical limit) and the cold start of both
   servers (process start to the first successful /predict; for modelrail, answered by
   the compiled predictor, checked on /readyz).

The machine may be shared: its speed moved by up to 1.5x within minutes here, so a
ratio of runs minutes apart says as much about the machine as about the servers;
back-to-back runs share most of its moods. Every wrk run also records the 1-minute
load average before and after it.

Every request of a run carries other rows: wrk sends 64 bodies in turn per size, each a
seeded draw of the penguins (the same draws for both servers). A body sent again and
again lets the CPU's branch predictors learn it: in process, LightGBM predicted a
repeated 100-row batch ~20% faster than varied ones, and a compiled predictor with
branches 4 times faster. Each server gets the request it is built for: modelrail raw
feature objects
(``{"instances": [{"island": "Dream", ...}]}``, validated and encoded by the service);
MLflow the already-encoded numeric matrix as ``dataframe_split``, which spares it the
encoding. The benchmark is not part of ``make test``.

``--prediction-log`` and ``--shadow`` measure instead what the prediction log and the
shadow mirror cost a server (docs/benchmarks.md). ``--explain`` measures explanations
instead: ``/explain`` against ``/predict`` with the same bodies (1 and 100 instances, 1
and 8 connections, back to back), and in process ``booster.predict(pred_contrib=True)``
against the service's contributions call and its whole ``Predictor.explain`` (the
JSON-ready answer).
"""

from __future__ import annotations

import argparse
import compileall
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import urllib3

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "bench"
MLFLOW_VENV = ROOT / "build" / "bench-mlflow-venv"
MODEL = "penguins"
BODIES = 64
# The tail a kept-alive client may see, one row at 8 connections (every round).
P99_TARGET_MS = 5.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def train_and_register(
    home: Path, log_rates: tuple[float | None, ...] = (None,)
) -> tuple[Any, list[dict[str, Any]], list[list[float | None]]]:
    """The penguins model, registered once per entry of ``log_rates`` (versions 1, 2,
    ...; each the prediction log's rate of its lineage, None: the default)."""
    import lightgbm
    import numpy as np

    from modelrail.adapters.local.filesystem import FilesystemStore
    from modelrail.adapters.local.signing import LocalManifestSigner
    from modelrail.domain import training
    from modelrail.domain.config import PipelineConfig
    from modelrail.domain.dataset import checks
    from modelrail.domain.decoding import RequestDecoder
    from modelrail.domain.features import FeatureSchema
    from modelrail.domain.registry import Registry
    from modelrail.kernel.events import derive_run_id
    from modelrail.native import builder, loader

    config = PipelineConfig.load(ROOT / "pipeline.toml")
    contract = config.contract
    schema = FeatureSchema.from_contract(contract, config.objective)
    parsed = checks.load((ROOT / "data" / "penguins.csv").read_bytes(), contract)
    records = training.examples(parsed.columns, schema, np.arange(parsed.rows))
    targets = schema.encode_target(parsed.columns[contract.target])
    matrix = schema.encode_records(records)
    categorical = [i for i, f in enumerate(schema.features) if f.is_categorical]
    params = {
        **config.params,
        "objective": "multiclass",
        "num_class": len(schema.classes),
        "seed": config.seed,
    }
    data = lightgbm.Dataset(
        matrix,
        np.array(targets, dtype=float),
        feature_name=schema.names,
        categorical_feature=categorical,
    )
    booster = lightgbm.train(params, data, num_boost_round=100)
    store = FilesystemStore(home / "buckets", "modelrail-artifacts")
    text = booster.model_to_string().encode()
    started = time.perf_counter()
    # The body reader is held to the service's decoder, as the training job holds it.
    decoder = RequestDecoder(schema, max_instances=1_000_000)
    reading = loader.Reading(schema, records[:3], decoder.plain_matrix)
    built = builder.build(text, 100, booster, matrix[:3].tolist(), "cc", reading)
    print(f"compiled predictors built in {time.perf_counter() - started:.1f} s", flush=True)
    if not built.predictors or built.reader != "built":
        raise RuntimeError(f"no compiled predictor: {built.not_built}; reader {built.reader}")
    predictors = {predictor.build.file: predictor.library for predictor in built.predictors}
    registry = Registry(store, signer=LocalManifestSigner.in_home(home))
    for number, rate in enumerate(log_rates):
        run_id = derive_run_id(f"benchmark-{number}", "0" * 64)
        recorded: dict[str, Any] = {"hash": "0" * 64, "model": MODEL}
        if rate is not None:
            recorded["log_rate"] = rate
        # The servers verify with the same key.
        registry.register(
            MODEL,
            run_id,
            lambda _v: {"model.txt": text, **predictors},
            _manifest(run_id, schema, params, records, built, recorded),
        )
    encoded = [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]
    return booster, records, encoded


def _manifest(
    run_id: str,
    schema: Any,
    params: dict[str, Any],
    records: list[dict[str, Any]],
    built: Any,
    config: dict[str, Any],
) -> Any:
    from modelrail.domain.lineage import Lineage
    from modelrail.domain.registry import Manifest

    return lambda version, files: Manifest(
        model=MODEL,
        version=version,
        run_id=run_id,
        format="lightgbm-text",
        created_at="2026-01-01T00:00:00Z",
        features=schema.to_dict(),
        best_iteration=100,
        params=params,
        train_metrics={},
        metrics={},
        champion=None,
        verdict={"blessed": True, "checks": [], "reasons": []},
        lineage=Lineage(trigger={"kind": "unknown", "key": "benchmark"}, config=config),
        examples=records[:3],
        files=files,
        compiled=built.record(),
    )


def ensure_mlflow() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(ROOT / "benchmarks" / "requirements-mlflow.txt"),
            ],
            check=True,
        )
    return python


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def wait_predict(
    url: str, body: bytes, process: subprocess.Popen[bytes], timeout_s: float = 120
) -> float:
    """Seconds until ``url`` answers 200 to ``body``; polls as fast as it can."""
    started = time.monotonic()
    pool = urllib3.PoolManager(retries=False)
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            response = pool.request(
                "POST", url, body=body, timeout=5, headers={"Content-Type": "application/json"}
            )
            if response.status == 200:
                return time.monotonic() - started
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def start_modelrail(
    home: Path,
    port: int,
    args: argparse.Namespace,
    version: int = 1,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELRAIL_")}
    env.update(
        {
            "MODELRAIL_HOME": str(home),
            "MODELRAIL_MODEL_NAME": MODEL,
            "MODELRAIL_MODEL_VERSION": str(version),
            "PORT": str(port),
            "MODELRAIL_WORKERS": str(args.workers),
            "MODELRAIL_PREDICTOR": args.predictor,
            **(extra_env or {}),
        }
    )
    command = [str(ROOT / ".venv" / "bin" / "python"), "-m", "modelrail.serving.server"]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=home,
    )


def start_mlflow(model_dir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"file://{BUILD / 'mlruns'}",
        # mlflow starts uvicorn by name: its environment's bin/ must come first.
        "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ.get('PATH', '')}",
    }
    return subprocess.Popen(
        [
            str(MLFLOW_VENV / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(workers),
            "--env-manager",
            "local",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=BUILD,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def predictor_in_use(url: str) -> str:
    """What answers predictions (``compiled`` or ``lightgbm``) and what reads their
    bodies (``native`` or ``python``), as /readyz says."""
    answer = orjson.loads(urllib3.request("GET", url + "/readyz", timeout=5, retries=False).data)
    return f"{answer['predictor']}, {answer['reader']} reader"


# wrk sends the bodies in turn, each request formatted once.
_ROTATE_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local requests, count, turn = {}, %d, 0
request = function()
  turn = turn %% count + 1
  if requests[turn] == nil then
    local f = io.open(string.format("%s/body-%%d.json", turn), "rb")
    requests[turn] = wrk.format(nil, nil, nil, f:read("*all"))
    f:close()
  end
  return requests[turn]
end
"""


def run_wrk(
    wrk: str, url: str, bodies: list[bytes], connections: int, duration: int
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        for number, body in enumerate(bodies, start=1):
            (Path(scratch) / f"body-{number}.json").write_bytes(body)
        script = Path(scratch) / "post.lua"
        script.write_text(_ROTATE_LUA % (len(bodies), scratch))
        output = subprocess.run(
            [
                wrk,
                "-t",
                "1",
                "-c",
                str(connections),
                "-d",
                f"{duration}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    latency = {}
    for label in ("50", "99"):
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", output)
        latency[label] = float(match.group(1)) * _UNITS[match.group(2)] if match else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {
        "rps": rps,
        "requests": answered,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else None,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def raw_predict(booster: Any, home: Path, records: list[dict[str, Any]]) -> dict[str, float]:
    """Rows/s of one in-process predict call, the service's way and the package's.

    The service asks LightGBM for one thread per call (``num_threads=1``: its workers
    already occupy every core); ``lightgbm.Booster.predict`` by default lets OpenMP use
    every core for a batch. Both are timed at one thread, and the package also at its
    default, so that the comparison shows the call's cost, not the thread count."""
    import numpy as np

    from modelrail.adapters.local.filesystem import FilesystemStore
    from modelrail.adapters.local.signing import LocalManifestSigner
    from modelrail.domain.registry import Registry
    from modelrail.serving.predictor import Predictor

    store = FilesystemStore(home / "buckets", "modelrail-artifacts")
    registry = Registry(store, signer=LocalManifestSigner.in_home(home))
    version = registry.load(MODEL, 1)
    predictor = Predictor(MODEL, 1, version.manifest, version.model_text)
    native = predictor.booster
    # The registered object, checked and loaded as the service loads it.
    if not predictor.use_compiled(lambda file: registry.read_file(MODEL, 1, file)):
        raise RuntimeError("the registered compiled predictor was refused")
    compiled_booster = predictor.booster
    matrix = predictor.schema.encode_records(records)
    draw = random.Random("raw")
    result = {}
    for rows in (1, 100):
        # Different rows in every call, as in the load runs.
        batches = [
            np.ascontiguousarray(matrix[draw.choices(range(len(matrix)), k=rows)])
            for _ in range(BODIES)
        ]
        for name, predict in (
            ("compiled", compiled_booster.predict),
            ("native", native.predict),
            ("lightgbm_1_thread", lambda m: booster.predict(m, num_iteration=100, num_threads=1)),
            ("lightgbm_all_cores", lambda m: booster.predict(m, num_iteration=100)),
        ):
            predict(batches[0])
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                predict(batches[calls % BODIES])
                calls += 1
            result[f"{name}_{rows}_rows_per_s"] = calls * rows / (time.perf_counter() - started)
    return result


def _schema_dict() -> dict[str, Any]:
    from modelrail.domain.config import PipelineConfig
    from modelrail.domain.features import FeatureSchema

    config = PipelineConfig.load(ROOT / "pipeline.toml")
    return FeatureSchema.from_contract(config.contract, config.objective).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every case")
    parser.add_argument("--workers", type=int, default=2, help="workers of each server")
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument(
        "--predictor",
        choices=("compiled", "lightgbm"),
        default="compiled",
        help="modelrail's MODELRAIL_PREDICTOR",
    )
    parser.add_argument(
        "--only", choices=("modelrail", "mlflow"), default=None, help="measure one server"
    )
    parser.add_argument(
        "--prediction-log",
        action="store_true",
        help="instead: modelrail with its prediction log off, at 100 %% and at the default "
        "rate, side by side (1 instance x 8 connections)",
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="instead: modelrail's production service with shadow off, mirroring 5 %% and "
        "every request to a candidate, side by side (1 instance x 8 connections)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="instead: /explain against /predict, and contributions in process",
    )
    parser.add_argument("--out", type=Path, default=BUILD / "results.json")
    args = parser.parse_args()
    if args.prediction_log:
        prediction_log(args)
        return
    if args.shadow:
        shadow_mirror(args)
        return
    if args.explain:
        explain(args)
        return

    shutil.rmtree(BUILD, ignore_errors=True)
    # Bytecode for the package, as in the image (pip compiles what it installs): an
    # editable install under PYTHONDONTWRITEBYTECODE=1 would compile every module again
    # at every start (30-40 ms of each cold start here).
    compileall.compile_dir(ROOT / "src" / "modelrail", quiet=1)
    home = BUILD / "home"
    home.mkdir(parents=True)
    booster, records, encoded = train_and_register(home)
    names = FeatureNames.get()
    mlflow_python = ensure_mlflow()
    wrk = ensure_wrk()
    model_dir = BUILD / "mlflow-model"
    booster.save_model(str(BUILD / "model.txt"))
    subprocess.run(
        [
            str(mlflow_python),
            "-c",
            (
                "import lightgbm, mlflow.lightgbm, sys; "
                f"b = lightgbm.Booster(model_file={str(BUILD / 'model.txt')!r}); "
                f"mlflow.lightgbm.save_model(b, {str(model_dir)!r})"
            ),
        ],
        check=True,
        cwd=BUILD,
    )

    # Different rows in every request of a run: BODIES bodies per size, each a seeded
    # draw (with replacement) of the penguins, the same draws for both servers. A
    # repeated body would let the CPU's caches and branch predictors learn it.
    # One-row bodies come from complete rows: MLflow fails on a one-row frame whose
    # column is all null (its dtype is then object), and failures are not answers.
    complete = [i for i, row in enumerate(encoded) if None not in row]
    pools = {1: complete, 100: list(range(len(records)))}
    draws = {
        n: [random.Random(f"{n}-{i}").choices(pools[n], k=n) for i in range(BODIES)]
        for n in (1, 100)
    }
    bodies = {
        "modelrail": {
            n: [orjson.dumps({"instances": [records[i] for i in draw]}) for draw in draws[n]]
            for n in (1, 100)
        },
        "mlflow": {
            n: [
                orjson.dumps(
                    {"dataframe_split": {"columns": names, "data": [encoded[i] for i in draw]}}
                )
                for draw in draws[n]
            ]
            for n in (1, 100)
        },
    }
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version},
        "duration_s": args.duration,
        "workers": args.workers,
        "predictor": args.predictor,
        "load": {},
        "cold_start_s": {},
    }
    servers = [server for server in ("modelrail", "mlflow") if args.only in (None, server)]
    load(servers, home, model_dir, bodies, wrk, args, results)
    for server in servers:
        results["cold_start_s"][server] = cold_starts(server, home, model_dir, bodies, args)
    results["booster_predict"] = raw_predict(booster, home, records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


# The prediction log's cases: the version each server pins, and its rate (None: the
# default, as a version whose lineage names none).
LOG_CASES = {"off": (1, 0.0), "every request": (2, 1.0), "default rate": (3, None)}


def prediction_log(args: argparse.Namespace) -> None:
    """modelrail's staging service with its prediction log off, logging every request,
    and at the default rate: three servers of the same model up together, each case run
    on one and then at once on the next, ``--rounds`` times; a ratio (against "off") is
    the median of the rounds' ratios. The lines each server logged are counted after it
    stopped, against the requests it answered."""
    home = _fresh_home()
    _, records, _ = train_and_register(home, tuple(rate for _, rate in LOG_CASES.values()))
    servers = {}
    for case, (version, _) in LOG_CASES.items():
        port = free_port()
        servers[case] = (
            start_modelrail(home, port, args, version),
            f"http://127.0.0.1:{port}/predict",
        )
    runs = _side_by_side(servers, _one_row_bodies(records), args)
    results = _results(args)
    logs = home / "buckets" / "modelrail-artifacts" / "predictions" / MODEL
    for case, (version, rate) in LOG_CASES.items():
        results["cases"][case] = {
            "log_rate": rate,
            **_case(runs, case, "off"),
            "lines_logged": _lines_under(logs / f"v{version}"),
        }
    _write(args, results)


# The shadow mirror's cases: production's [production] shadow_rate (None: shadow off).
SHADOW_CASES = {"off": None, "default rate": 0.05, "every request": 1.0}


def shadow_mirror(args: argparse.Namespace) -> None:
    """modelrail's production service with shadow off, mirroring 5 % of its requests
    (the default ``shadow_rate``) and every request to a candidate: three production
    servers of the same model (each its own bucket, whose model definition sets the
    rate; the prediction log off) and the candidate (one worker) up together, each case
    run on one and then at once on the next, ``--rounds`` times; a ratio (against
    "off") is the median of the rounds' ratios. The candidate shares the machine's
    cores here, so "every request" also pays for the candidate's answers, which in the
    cloud run elsewhere. The comparisons each server wrote are counted after it
    stopped, against the requests it answered."""
    first = _fresh_home()
    _, records, _ = train_and_register(first, (0.0,))
    candidate_port = free_port()
    candidate = start_modelrail(
        first, candidate_port, argparse.Namespace(**{**vars(args), "workers": 1})
    )
    servers = {}
    homes = {}
    for case, rate in SHADOW_CASES.items():
        home = first.with_name(f"home-{case.replace(' ', '-')}")
        shutil.copytree(first, home)
        env = {}
        if rate is not None:
            definition = home / "buckets" / "modelrail-artifacts" / "models" / MODEL
            definition.mkdir(parents=True, exist_ok=True)
            pipeline = f"[production]\nshadow = true\nshadow_rate = {rate}\n"
            (definition / "definition.json").write_bytes(orjson.dumps({"pipeline": pipeline}))
            env["MODELRAIL_SHADOW_URL"] = f"http://127.0.0.1:{candidate_port}"
        port = free_port()
        homes[case] = home
        servers[case] = (
            start_modelrail(home, port, args, extra_env=env),
            f"http://127.0.0.1:{port}/predict",
        )
    bodies = _one_row_bodies(records)
    try:
        wait_predict(f"http://127.0.0.1:{candidate_port}/predict", bodies[0], candidate)
        runs = _side_by_side(servers, bodies, args)
    finally:
        stop(candidate)
    results = _results(args)
    for case, rate in SHADOW_CASES.items():
        compared = homes[case] / "buckets" / "modelrail-artifacts" / "shadow" / MODEL
        results["cases"][case] = {
            "shadow_rate": rate,
            **_case(runs, case, "off"),
            "comparisons": _lines_under(compared),
        }
    _write(args, results)


def _fresh_home() -> Path:
    """An empty ``build/bench/home``, the package's bytecode compiled (as in the image)."""
    shutil.rmtree(BUILD, ignore_errors=True)
    compileall.compile_dir(ROOT / "src" / "modelrail", quiet=1)
    home = BUILD / "home"
    home.mkdir(parents=True)
    return home


def _one_row_bodies(records: list[dict[str, Any]]) -> list[bytes]:
    return [
        orjson.dumps({"instances": random.Random(f"1-{i}").choices(records, k=1)})
        for i in range(BODIES)
    ]


def _side_by_side(
    servers: dict[str, tuple[subprocess.Popen[bytes], str]],
    bodies: list[bytes],
    args: argparse.Namespace,
) -> dict[str, list[dict[str, Any]]]:
    """Each round, every case (1 instance x 8 connections) on its server, one after the
    other; every run of every case. The servers are stopped after."""
    wrk = ensure_wrk()
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in servers}
    try:
        for process, url in servers.values():
            wait_predict(url, bodies[0], process)
        for round_number in range(1, args.rounds + 1):
            for case, (_, url) in servers.items():
                warm_up = run_wrk(wrk, url, bodies, 8, 2)
                result = run_wrk(wrk, url, bodies, 8, args.duration)
                result["with_warm_up"] = result["requests"] + warm_up["requests"]
                runs[case].append(result)
                print(round_number, case, result, flush=True)
    finally:
        for process, _ in servers.values():
            stop(process)
    return runs


def _case(runs: dict[str, list[dict[str, Any]]], case: str, base: str) -> dict[str, Any]:
    """A case's rounds, its requests, and (but for ``base``) its ratios to ``base``: the
    median of the rounds' ratios."""
    figures: dict[str, Any] = {
        "rps_of_rounds": [run["rps"] for run in runs[case]],
        "p99_ms_of_rounds": [run["p99_ms"] for run in runs[case]],
        # Every request sent, the first wait's included (at most one more).
        "requests": sum(run["with_warm_up"] for run in runs[case]) + 1,
        "non_2xx": sum(run["non_2xx"] for run in runs[case]),
    }
    if case != base:
        figures[f"vs_{base}"] = {
            measure: statistics.median(
                run[measure] / other[measure]
                for run, other in zip(runs[case], runs[base], strict=True)
            )
            for measure in ("rps", "p99_ms")
        }
    return figures


def _lines_under(directory: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in directory.rglob("*.jsonl"))


def _results(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version},
        "duration_s": args.duration,
        "workers": args.workers,
        "cases": {},
    }


def _write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


def explain(args: argparse.Namespace) -> None:
    """``/explain`` against ``/predict`` on one server (the same bodies, back to back,
    ``--rounds`` times; a ratio is the median of the rounds'), and contributions in
    process: ``booster.predict(pred_contrib=True)``, the service's C call and its
    whole answer."""
    shutil.rmtree(BUILD, ignore_errors=True)
    compileall.compile_dir(ROOT / "src" / "modelrail", quiet=1)
    home = BUILD / "home"
    home.mkdir(parents=True)
    booster, records, _ = train_and_register(home)
    wrk = ensure_wrk()
    bodies = {
        n: [orjson.dumps({"instances": random.Random(f"{n}-{i}").choices(records, k=n)})
            for i in range(BODIES)]
        for n in (1, 100)
    }  # fmt: skip
    port = free_port()
    process = start_modelrail(home, port, args)
    base = f"http://127.0.0.1:{port}"
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        wait_predict(base + "/explain", bodies[1][0], process)
        in_use = predictor_in_use(base)
        for round_number in range(1, args.rounds + 1):
            for rows in (1, 100):
                for connections in (1, 8):
                    for route in ("/predict", "/explain"):
                        run_wrk(wrk, base + route, bodies[rows], connections, 2)  # warm-up
                        result = run_wrk(
                            wrk, base + route, bodies[rows], connections, args.duration
                        )
                        if result["non_2xx"] or result["socket_errors"]:
                            print(f"warning: failed requests: {result}", flush=True)
                        runs.setdefault(f"{route} rows={rows} c={connections}", []).append(result)
                        print(round_number, route, rows, connections, result, flush=True)
    finally:
        stop(process)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version},
        "duration_s": args.duration,
        "workers": args.workers,
        "predictor_in_use": in_use,
        "load": {},
        "explain_vs_predict": {},
    }
    for case, of_rounds in runs.items():
        by_rps = sorted(of_rounds, key=lambda result: result["rps"])
        results["load"][case] = {
            **by_rps[(len(by_rps) - 1) // 2],
            "rps_of_rounds": [result["rps"] for result in of_rounds],
        }
        if case.startswith("/explain"):
            plain = runs[case.replace("/explain", "/predict")]
            results["explain_vs_predict"][case.split(" ", 1)[1]] = statistics.median(
                a["rps"] / b["rps"] for a, b in zip(of_rounds, plain, strict=True)
            )
    results["in_process"] = contributions_in_process(booster, home, records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


def contributions_in_process(
    booster: Any, home: Path, records: list[dict[str, Any]]
) -> dict[str, float]:
    """Microseconds per call of 1 and 100 rows: LightGBM's package with
    ``pred_contrib=True`` (one thread), the service's C call (``contributions``), its
    whole answer (``Predictor.explain``), and its prediction for comparison."""
    import numpy as np

    from modelrail.adapters.local.filesystem import FilesystemStore
    from modelrail.adapters.local.signing import LocalManifestSigner
    from modelrail.domain.registry import Registry
    from modelrail.serving.predictor import Predictor

    store = FilesystemStore(home / "buckets", "modelrail-artifacts")
    version = Registry(store, signer=LocalManifestSigner.in_home(home)).load(MODEL, 1)
    predictor = Predictor(MODEL, 1, version.manifest, version.model_text)
    matrix = predictor.schema.encode_records(records)
    draw = random.Random("explain")
    result = {}
    for rows in (1, 100):
        batches = [
            np.ascontiguousarray(matrix[draw.choices(range(len(matrix)), k=rows)])
            for _ in range(BODIES)
        ]
        for name, call in (
            (
                "lightgbm_pred_contrib",
                lambda m: booster.predict(m, pred_contrib=True, num_iteration=100, num_threads=1),
            ),
            ("service_contributions", predictor.lightgbm.contributions),
            ("service_explain", predictor.explain),
            ("service_predict", lambda m: predictor.answers(predictor.outputs(m))),
        ):
            call(batches[0])
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                call(batches[calls % BODIES])
                calls += 1
            result[f"{name}_{rows}_rows_us"] = (time.perf_counter() - started) / calls * 1e6
    return result


def start_server(
    server: str, home: Path, model_dir: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], str]:
    """The server on a free port, and its prediction URL."""
    port = free_port()
    if server == "modelrail":
        return start_modelrail(home, port, args), f"http://127.0.0.1:{port}/predict"
    return start_mlflow(model_dir, port, args.workers), f"http://127.0.0.1:{port}/invocations"


def load(
    servers: list[str],
    home: Path,
    model_dir: Path,
    bodies: dict[str, dict[int, list[bytes]]],
    wrk: str,
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    """Every case on every server, back to back, ``args.rounds`` times."""
    started = {server: start_server(server, home, model_dir, args) for server in servers}
    try:
        for server, (process, url) in started.items():
            wait_predict(url, bodies[server][1][0], process)
            if server == "modelrail":
                results["predictor_in_use"] = predictor_in_use(url.rsplit("/", 1)[0])
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_number in range(1, args.rounds + 1):
            for rows in (1, 100):
                for connections in (1, 8):
                    for server, (_, url) in started.items():
                        requests = bodies[server][rows]
                        run_wrk(wrk, url, requests, connections, 2)  # warm-up
                        result = run_wrk(wrk, url, requests, connections, args.duration)
                        result["rows_per_s"] = result["rps"] * rows
                        if result["non_2xx"] or result["socket_errors"]:
                            print(f"warning: {server} failed requests: {result}", flush=True)
                        runs.setdefault(f"{server} rows={rows} c={connections}", []).append(result)
                        print(round_number, server, rows, connections, result, flush=True)
    finally:
        for process, _ in started.values():
            stop(process)
    for case, results_of_case in runs.items():
        by_rps = sorted(results_of_case, key=lambda result: result["rps"])
        results["load"][case] = {
            **by_rps[(len(by_rps) - 1) // 2],
            "rps_of_rounds": [result["rps"] for result in results_of_case],
            "p99_ms_of_rounds": [result["p99_ms"] for result in results_of_case],
        }
    if "modelrail" in servers:
        tail = results["load"]["modelrail rows=1 c=8"]["p99_ms_of_rounds"]
        results["p99_1x8_ms_of_rounds"] = tail
        met = "met" if all(p99 is not None and p99 <= P99_TARGET_MS for p99 in tail) else "NOT met"
        print(
            f"modelrail p99 at 1 x 8 per round: {tail} (<= {P99_TARGET_MS} ms: {met})", flush=True
        )
    if len(servers) == 2:
        ratios = {}
        for rows in (1, 100):
            for connections in (1, 8):
                case = f"rows={rows} c={connections}"
                ours, theirs = runs[f"modelrail {case}"], runs[f"mlflow {case}"]
                of_rounds = [a["rps"] / b["rps"] for a, b in zip(ours, theirs, strict=True)]
                ratios[case] = {"median": statistics.median(of_rounds), "rounds": of_rounds}
        results["ratio_vs_mlflow"] = ratios


def cold_starts(
    server: str,
    home: Path,
    model_dir: Path,
    bodies: dict[str, dict[int, list[bytes]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Process start to the first successful prediction, ``args.cold_starts`` times."""
    starts, predictors = [], []
    for _ in range(args.cold_starts):
        began = time.monotonic()
        process, url = start_server(server, home, model_dir, args)
        try:
            wait_predict(url, bodies[server][1][0], process)
            starts.append(time.monotonic() - began)
            if server == "modelrail":
                # Loaded before the port was bound: the first answer was this one's.
                predictors.append(predictor_in_use(url.rsplit("/", 1)[0]))
        finally:
            stop(process)
    print(server, "cold start", starts, predictors, flush=True)
    return {"median": statistics.median(starts), "all": starts, "predictors": predictors}


class FeatureNames:
    @staticmethod
    def get() -> list[str]:
        return [f["name"] for f in _schema_dict()["features"]]


if __name__ == "__main__":
    main()
