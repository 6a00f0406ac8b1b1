"""The pipeline configuration (one TOML file) and the runtime Settings.

``PipelineConfig`` says *what* to train; its hash (with the contract's) is part of
every run id. ``Settings`` says *where* things run; it is built once from the
environment by ``Settings.from_env`` in the composition root, and nothing else reads
the environment.
"""

from __future__ import annotations

import ctypes
import dataclasses
import difflib
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson

from modelrail import environment, resources
from modelrail.dataset.contract import NUMERIC_TYPES, DatasetContract
from modelrail.environment import Variable
from modelrail.errors import ConfigError

Objective = Literal["binary", "multiclass", "regression"]

# objective -> the hold-out metrics ``evaluation.metrics`` computes -> which way is better.
METRICS: dict[str, dict[str, Literal["higher", "lower"]]] = {
    "binary": {"auc": "higher", "binary_logloss": "lower", "accuracy": "higher"},
    "multiclass": {"multi_logloss": "lower", "accuracy": "higher", "macro_f1": "higher"},
    "regression": {"rmse": "lower", "mae": "lower", "r2": "higher"},
}
# The Population Stability Index's rules of thumb: below 0.1 stable, above 0.25 a shift.
DRIFT_LIMITS = (0.1, 0.25)
# Set by modelrail from the objective; a value in [training.params] would contradict it.
_RESERVED_PARAMS = ("objective", "metric", "num_class")
# What Vertex AI accepts as a model id ([vertex] model_registry names the model so).
VERTEX_MODEL_ID = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclasses.dataclass(frozen=True)
class MetricGate:
    """One metric's thresholds. ``min``/``max`` bound the value; ``max_change_*``
    bound how much worse than the champion (in ``direction``) the candidate may be."""

    name: str
    direction: Literal["higher", "lower"]
    min: float | None = None
    max: float | None = None
    max_change_abs: float | None = None
    max_change_rel: float | None = None


@dataclasses.dataclass(frozen=True)
class Limits:
    """The largest upload, the longest line, and the widest header validate reads
    (``[limits]``): what a report, a record and an event hold follows from these."""

    max_upload_bytes: int = 128 * 2**20
    max_line_bytes: int = 2**20
    max_columns: int = 1000
    max_header_bytes: int = 64 * 2**10


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    model_name: str
    objective: Objective
    contract: DatasetContract
    seed: int
    num_boost_round: int
    early_stopping_rounds: int
    validation_fraction: float
    holdout_fraction: float
    params: Mapping[str, Any]
    gate: tuple[MetricGate, ...]
    sha256: str  # of the config file and the contract together
    # PSI limits (warn, fail): the default and per column (see dataset.profile).
    drift: tuple[float, float] = DRIFT_LIMITS
    drift_columns: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    # What validate reads ([limits]): larger uploads and longer lines are refused unread.
    limits: Limits = Limits()
    # [vertex] model_registry: every version also becomes a version of a Vertex AI model.
    vertex_model_registry: bool = False

    @classmethod
    def load(cls, path: Path) -> PipelineConfig:
        """The configuration at ``path`` and its contract, checked completely: every
        problem is one ``ConfigError`` here, before any run starts."""
        try:
            raw = path.read_bytes()
            spec = tomllib.loads(raw.decode())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read pipeline config {path}: {exc}") from exc
        problems = resources.schema_problems("pipeline", spec)
        if problems:
            raise ConfigError(f"invalid pipeline config {path}: " + "; ".join(problems))
        model, training = spec["model"], spec["training"]
        contract = DatasetContract.load(path.parent / model["contract"])
        drift, bounds = spec.get("drift", {}), spec.get("limits", {})
        drift_warn = drift.get("warn", DRIFT_LIMITS[0])
        drift_fail = drift.get("fail", DRIFT_LIMITS[1])
        config = cls(
            model_name=model["name"],
            objective=model["objective"],
            contract=contract,
            seed=training["seed"],
            num_boost_round=training["num_boost_round"],
            early_stopping_rounds=training["early_stopping_rounds"],
            validation_fraction=training["validation_fraction"],
            holdout_fraction=training["holdout_fraction"],
            params=dict(training.get("params", {})),
            gate=tuple(MetricGate(**metric) for metric in spec.get("gate", {}).get("metrics", [])),
            sha256=hashlib.sha256(raw + contract.sha256.encode()).hexdigest(),
            drift=(drift_warn, drift_fail),
            drift_columns={
                name: (limits.get("warn", drift_warn), limits.get("fail", drift_fail))
                for name, limits in drift.get("columns", {}).items()
            },
            limits=Limits(
                max_upload_bytes=round(bounds.get("max_upload_mb", 128) * 2**20),
                max_line_bytes=round(bounds.get("max_line_kb", 1024) * 2**10),
                max_columns=int(bounds.get("max_columns", 1000)),
                max_header_bytes=round(bounds.get("max_header_kb", 64) * 2**10),
            ),
            vertex_model_registry=spec.get("vertex", {}).get("model_registry", False),
        )
        problems = [
            *config._target_problems(),
            *config._gate_problems(),
            *config._drift_problems(),
            *config._vertex_problems(),
            *_param_problems(config.params),
        ]
        if problems:
            raise ConfigError(f"invalid pipeline config {path}: " + "; ".join(problems))
        return config

    def _target_problems(self) -> list[str]:
        target = self.contract.target_column
        described = f"the target {target.name!r} is a {target.type} column"
        if target.type == "category":
            described += f" with {len(target.categories)} categories"
        if self.objective == "regression" and target.type not in NUMERIC_TYPES:
            return [f"{described}; a regression target must be a number or integer column"]
        if self.objective == "binary" and not (
            target.type == "boolean" or len(target.categories) == 2
        ):
            return [f"{described}; a binary target must be boolean or a category with 2"]
        if self.objective == "multiclass" and len(target.categories) < 3:
            return [f"{described}; a multiclass target must be a category with 3 or more"]
        return []

    def _drift_problems(self) -> list[str]:
        problems = []
        names = {c.name for c in (*self.contract.features, self.contract.target_column)}
        for name, (warn, fail) in {"[drift]": self.drift, **self.drift_columns}.items():
            if name != "[drift]" and name not in names:
                problems.append(
                    f"[drift.columns] {name!r} is not a feature or the target; "
                    f"allowed: {', '.join(sorted(names))}"
                )
            if warn > fail:
                problems.append(f"drift limits of {name}: warn {warn} is above fail {fail}")
        return problems

    def _vertex_problems(self) -> list[str]:
        if self.vertex_model_registry and not VERTEX_MODEL_ID.match(self.model_name):
            return [
                f"[vertex] model_registry names the Vertex AI model after [model] name, and "
                f"{self.model_name!r} is not a Vertex model id (lowercase letters, digits, "
                "'-' and '_', starting with a letter, at most 63)"
            ]
        return []

    def _gate_problems(self) -> list[str]:
        computed = METRICS[self.objective]
        problems = []
        for metric in self.gate:
            if metric.name not in computed:
                problems.append(
                    f"gate metric {metric.name!r} is not computed for {self.objective}; "
                    f"allowed: {', '.join(computed)}"
                )
                continue
            better = computed[metric.name]
            if metric.direction != better:
                problems.append(
                    f"gate metric {metric.name!r}: direction must be {better!r} "
                    f"({better} {metric.name} is better), not {metric.direction!r}"
                )
            if all(
                getattr(metric, kind) is None
                for kind in ("min", "max", "max_change_abs", "max_change_rel")
            ):
                problems.append(
                    f"gate metric {metric.name!r} sets no threshold; "
                    "allowed: min, max, max_change_abs, max_change_rel"
                )
        return problems

    def summary(self) -> dict[str, Any]:
        """What lineage records about the configuration."""
        return {
            "hash": self.sha256,
            "model": self.model_name,
            "objective": self.objective,
            "contract": self.contract.name,
            "contract_sha256": self.contract.sha256,
        }


Mode = Literal["embedded", "emulator", "cloud"]


# Settings field -> the variable that sets it, and how its text is read. Read by
# ``Settings.from_env``, written back by ``to_env``; an unset field keeps its default.
_VARIABLES = (
    Variable("mode", "MODELRAIL_MODE"),
    Variable("home", "MODELRAIL_HOME", Path),
    Variable("config_path", "MODELRAIL_CONFIG", Path),
    Variable("topology_path", "MODELRAIL_TOPOLOGY", Path),
    Variable("data_bucket", "MODELRAIL_DATA_BUCKET"),
    Variable("artifact_bucket", "MODELRAIL_ARTIFACT_BUCKET"),
    Variable("project", "GOOGLE_CLOUD_PROJECT"),
    Variable("region", "MODELRAIL_REGION"),
    Variable("code_version", "MODELRAIL_CODE_VERSION"),
    Variable("staging_port", "MODELRAIL_STAGING_PORT", int),
    Variable("max_event_age_s", "MODELRAIL_MAX_EVENT_AGE_S", float),
    Variable("run_api_endpoint", "MODELRAIL_RUN_API_ENDPOINT"),
    Variable("training_job", "MODELRAIL_TRAINING_JOB"),
    Variable("staging_service", "MODELRAIL_STAGING_SERVICE"),
    Variable("artifact_repository", "MODELRAIL_ARTIFACT_REPOSITORY"),
    Variable("artifact_registry_endpoint", "MODELRAIL_ARTIFACT_REGISTRY_ENDPOINT"),
    Variable("staging_image", "MODELRAIL_STAGING_IMAGE"),
    Variable("vertex_endpoint", "MODELRAIL_VERTEX_ENDPOINT"),
    Variable("signing_key", "MODELRAIL_SIGNING_KEY"),
    Variable("kms_endpoint", "MODELRAIL_KMS_ENDPOINT"),
    Variable("compiler", "MODELRAIL_COMPILER"),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where modelrail runs. Built once, from the environment, by the composition root
    (``from_env``; each variable is read by one row of ``_VARIABLES``). The staging
    service's own settings are ``service_settings.ServiceSettings``, read the same way
    by the one program that serves."""

    mode: Mode
    home: Path
    config_path: Path
    # None: the checkout's topology.yaml, found when the event graph is first read (the
    # staging service never reads it, so an installed copy serves without one).
    topology_path: Path | None
    storage_root: Path | None  # filesystem buckets live here (embedded mode)
    code_version: str
    data_bucket: str = "modelrail-data"
    artifact_bucket: str = "modelrail-artifacts"
    project: str = "modelrail-local"
    region: str = "europe-west1"
    staging_port: int = 8765
    max_event_age_s: float = 86400.0
    run_api_endpoint: str | None = None  # Cloud Run Admin API override (emulator mode)
    training_job: str = "modelrail-train"
    staging_service: str = "modelrail-staging"
    user: str = "unknown"  # who runs the CLI: recorded with an operator's rollback
    # The Artifact Registry generic repository every version is published to (in
    # ``region``), and the endpoint that serves its API (emulator mode: the control plane).
    artifact_repository: str = "modelrail-models"
    artifact_registry_endpoint: str | None = None
    # Vertex AI's Model Registry ([vertex] model_registry): the image its model versions
    # serve with (the staging image; Terraform names it when it provides Vertex AI) and
    # the endpoint that serves its API (emulator mode: the control plane).
    staging_image: str | None = None
    vertex_endpoint: str | None = None
    # The Cloud KMS key version register signs manifests with, and whose key the staging
    # service trusts (cloud and emulator mode; embedded mode signs with a key file in
    # ``home``), and the endpoint that serves its API (emulator mode: the control plane).
    signing_key: str | None = None
    kms_endpoint: str | None = None
    # The C compiler the train stage builds the compiled predictor with (the training
    # job's image sets it); None builds none. Compiling hundreds of trees takes
    # minutes, so a local run does it only when asked (MODELRAIL_COMPILER=cc).
    compiler: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        try:
            values = environment.read(_VARIABLES, env)
        except ValueError as exc:
            raise ConfigError(f"invalid modelrail setting: {exc}") from exc
        mode = values.setdefault("mode", "embedded")
        if mode not in ("embedded", "emulator", "cloud"):
            raise ConfigError(f"MODELRAIL_MODE must be embedded|emulator|cloud, not {mode!r}")
        home = values["home"] = values.get("home", Path(".modelrail")).absolute()
        values["config_path"] = values.get("config_path", Path("pipeline.toml")).absolute()
        if "topology_path" in values:
            values["topology_path"] = values["topology_path"].absolute()
        else:
            values["topology_path"] = None
        values["storage_root"] = home / "buckets" if mode == "embedded" else None
        if "code_version" not in values:
            values["code_version"] = checkout_commit(Path.cwd())
        values["user"] = env.get("USER") or env.get("LOGNAME") or "unknown"
        return cls(**values)

    def topology_file(self) -> Path:
        """The event graph this process runs: ``MODELRAIL_TOPOLOGY``, else the
        checkout's ``topology.yaml`` (``ConfigError`` in an installed copy without one)."""
        return self.topology_path or resources.checkout_root() / "topology.yaml"

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process's ``from_env()`` equal these
        settings (``user`` excepted: it is whoever runs that process)."""
        return environment.write(_VARIABLES, self)


UNVERSIONED = "unversioned"


def checkout_commit(directory: Path) -> str:
    """The commit checked out where ``directory`` lies (lineage's code version when no
    ``MODELRAIL_CODE_VERSION`` names one); ``unversioned`` outside a git checkout or
    without git."""
    git = shutil.which("git")
    if git is None:
        return UNVERSIONED
    try:
        result = subprocess.run(
            [git, "rev-parse", "--verify", "--quiet", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNVERSIONED
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else UNVERSIONED


@cache
def lightgbm_parameters() -> dict[str, str]:
    """Every LightGBM parameter name and alias -> its canonical name, as the installed
    library reports them (its C API ``LGBM_DumpParamAliases``). The library is loaded
    without importing the lightgbm package, which processes that never train skip."""
    spec = importlib.util.find_spec("lightgbm")
    if spec is None or spec.origin is None:
        raise ConfigError("LightGBM is not installed")
    # lib_lightgbm.so, .dylib or .dll, as the wheel for this platform ships it.
    found = sorted((Path(spec.origin).parent / "lib").glob("lib_lightgbm.*"))
    if not found:
        raise ConfigError("LightGBM's library (lib/lib_lightgbm.*) is not installed")
    library = ctypes.CDLL(str(found[0]))
    size = ctypes.c_int64(0)
    buffer = ctypes.create_string_buffer(1 << 16)
    for _ in range(2):  # the first call says how large the answer is if it did not fit
        if library.LGBM_DumpParamAliases(ctypes.c_int64(len(buffer)), ctypes.byref(size), buffer):
            raise ConfigError("LightGBM could not list its parameters")
        if size.value <= len(buffer):
            break
        buffer = ctypes.create_string_buffer(size.value)
    aliases: dict[str, list[str]] = orjson.loads(buffer.value)
    return {name: canonical for canonical, names in aliases.items() for name in (canonical, *names)}


def _param_problems(params: Mapping[str, Any]) -> list[str]:
    known = lightgbm_parameters()
    problems = []
    for name in params:
        canonical = known.get(name)
        if canonical is None:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems.append(
                f"[training.params] {name!r} is not a LightGBM parameter{hint} "
                "(https://lightgbm.readthedocs.io/en/stable/Parameters.html lists them)"
            )
        elif canonical in _RESERVED_PARAMS:
            problems.append(
                f"[training.params] {name!r} is set by modelrail from [model] objective; remove it"
            )
    return problems


def canonical_json(value: Any) -> bytes:
    """Stable bytes for hashing and for create-only comparisons."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
