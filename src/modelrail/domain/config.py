"""The pipeline configuration (one TOML file): what to train, how it is gated, what
validate reads. Its hash (with the contract's) is part of every run id."""

from __future__ import annotations

import ctypes
import dataclasses
import difflib
import hashlib
import importlib.util
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson

from modelrail.domain.dataset.contract import NUMERIC_TYPES, DatasetContract
from modelrail.domain.lineage import DEFAULT_LOG_RATE
from modelrail.domain.rollout import CanaryPolicy
from modelrail.domain.shadow import DEFAULT_MIN_REQUESTS as DEFAULT_MIN_SHADOW_REQUESTS
from modelrail.domain.shadow import DEFAULT_RATE as DEFAULT_SHADOW_RATE
from modelrail.kernel import resources
from modelrail.kernel.errors import ConfigError

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
    """The largest upload, the longest line, and the widest header validate reads, and
    the batch it reads at a time (``[limits]``): what a report, a record and an event
    hold follows from these, and validate's memory from the batch."""

    max_upload_bytes: int = 100 * 2**30
    max_line_bytes: int = 2**20
    max_columns: int = 1000
    max_header_bytes: int = 64 * 2**10
    batch_bytes: int = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class Engine:
    """Where training runs (``[training] engine``, ``[training.dask]``): ``local`` (one
    process, ``lightgbm.train``), ``dask`` (``lightgbm.dask`` on a cluster: an existing
    one at ``scheduler``, else ``workers`` local worker processes the job starts), or
    ``auto``: one process while what it would need to train fits ``local_memory_mb``,
    Dask above it."""

    name: Literal["auto", "local", "dask"] = "auto"
    local_memory_bytes: int = 8 * 2**30
    scheduler: str | None = None
    workers: int = 2

    def chooses_dask(self, local_peak_bytes: int) -> bool:
        """Whether a snapshot whose training would peak at ``local_peak_bytes`` in one
        process trains on Dask."""
        if self.name == "auto":
            return local_peak_bytes > self.local_memory_bytes
        return self.name == "dask"


# What a webhook may be told ([[notify.webhooks]] events): a failed run, a candidate the
# gate rejected (a pipeline-failed of kind gate_rejected), a deployed version, a drift.
NOTIFY_EVENTS = ("pipeline-failed", "gate-rejected", "model-deployed", "drift-detected")


@dataclasses.dataclass(frozen=True)
class Webhook:
    """One ``[[notify.webhooks]]`` entry: who is told what, in which body. The URL is
    never in the file: ``url_secret`` names the Secret Manager version holding it (cloud
    mode), ``url_env`` the environment variable (embedded and emulator mode)."""

    name: str
    events: tuple[str, ...] = NOTIFY_EVENTS
    format: Literal["slack", "json"] = "slack"
    url_secret: str | None = None
    url_env: str | None = None


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
    # [training] engine and [training.dask]: where training runs.
    engine: Engine = Engine()
    # [gate] staging: whether staging follows every blessed candidate or champions only.
    staging_follows: Literal["blessed", "champion"] = "blessed"
    # [monitoring] log_rate: the share of requests the staging service logs with their
    # answers (0: none).
    log_rate: float = DEFAULT_LOG_RATE
    # [retrain]: a drift the monitor finds starts a retrain, at most once per cool-down.
    retrain_on_drift: bool = False
    retrain_cooldown_s: float = 24 * 3600.0
    # [retrain] schedule: a cron expression (UTC) the sweep retrains on, or None.
    retrain_schedule: str | None = None
    # [retrain] min_new_rows: a policy retrain (schedule, drift) starts only on an upload
    # of at least this many rows more than the served version trained on (0: any).
    retrain_min_new_rows: int = 0
    # [[notify.webhooks]]: who is told of failures, rejections, deploys and drift.
    webhooks: tuple[Webhook, ...] = ()
    # [production]: whether a promotion needs a person's approval, and may that person
    # be the one who proposed it (docs/architecture.md, "Production").
    production_approval: Literal["required", "none"] = "required"
    production_self_approval: bool = False
    # [production.canary]: the steps of traffic a new production revision takes.
    canary: CanaryPolicy = dataclasses.field(default_factory=CanaryPolicy)
    # [production] shadow: production mirrors this share of its /predict requests to
    # staging and records how the answers compare; a promotion may require a minimum
    # agreement over a minimum of mirrored requests (docs/architecture.md, "Shadow").
    shadow: bool = False
    shadow_rate: float = DEFAULT_SHADOW_RATE
    min_shadow_agreement: float | None = None
    min_shadow_requests: int = DEFAULT_MIN_SHADOW_REQUESTS

    @classmethod
    def load(cls, path: Path) -> PipelineConfig:
        """The configuration at ``path`` and its contract, checked completely: every
        problem is one ``ConfigError`` here, before any run starts."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read pipeline config {path}: {exc}") from exc
        return cls.parse(raw, path, lambda name: DatasetContract.load(path.parent / name))

    @classmethod
    def parse(
        cls, raw: bytes, where: object, contract_of: Callable[[str], DatasetContract]
    ) -> PipelineConfig:
        """The configuration in ``raw`` (``where`` names it in errors), its contract
        the one ``contract_of`` gives for the file ``[model] contract`` names."""
        try:
            spec = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read pipeline config {where}: {exc}") from exc
        problems = _webhook_url_problems(spec) or resources.schema_problems("pipeline", spec)
        if problems:
            raise ConfigError(f"invalid pipeline config {where}: " + "; ".join(problems))
        model, training = spec["model"], spec["training"]
        contract = contract_of(model["contract"])
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
            staging_follows=spec.get("gate", {}).get("staging", "blessed"),
            log_rate=float(spec.get("monitoring", {}).get("log_rate", DEFAULT_LOG_RATE)),
            retrain_on_drift=bool(spec.get("retrain", {}).get("on_drift", False)),
            retrain_cooldown_s=float(spec.get("retrain", {}).get("cooldown_hours", 24)) * 3600,
            retrain_schedule=spec.get("retrain", {}).get("schedule"),
            retrain_min_new_rows=int(spec.get("retrain", {}).get("min_new_rows", 0)),
            webhooks=tuple(
                Webhook(
                    name=entry["name"],
                    events=tuple(entry.get("events", NOTIFY_EVENTS)),
                    format=entry.get("format", "slack"),
                    url_secret=entry.get("url_secret"),
                    url_env=entry.get("url_env"),
                )
                for entry in spec.get("notify", {}).get("webhooks", [])
            ),
            sha256=hashlib.sha256(raw + contract.sha256.encode()).hexdigest(),
            drift=(drift_warn, drift_fail),
            drift_columns={
                name: (limits.get("warn", drift_warn), limits.get("fail", drift_fail))
                for name, limits in drift.get("columns", {}).items()
            },
            limits=Limits(
                max_upload_bytes=round(bounds.get("max_upload_mb", 100 * 1024) * 2**20),
                max_line_bytes=round(bounds.get("max_line_kb", 1024) * 2**10),
                max_columns=int(bounds.get("max_columns", 1000)),
                max_header_bytes=round(bounds.get("max_header_kb", 64) * 2**10),
                batch_bytes=round(bounds.get("batch_mb", 64) * 2**20),
            ),
            vertex_model_registry=spec.get("vertex", {}).get("model_registry", False),
            production_approval=spec.get("production", {}).get("approval", "required"),
            production_self_approval=spec.get("production", {}).get("self_approval", False),
            canary=CanaryPolicy.from_spec(spec.get("production", {}).get("canary", {})),
            shadow=bool(spec.get("production", {}).get("shadow", False)),
            shadow_rate=float(spec.get("production", {}).get("shadow_rate", DEFAULT_SHADOW_RATE)),
            min_shadow_agreement=spec.get("production", {}).get("min_shadow_agreement"),
            min_shadow_requests=int(
                spec.get("production", {}).get("min_shadow_requests", DEFAULT_MIN_SHADOW_REQUESTS)
            ),
            engine=Engine(
                name=training.get("engine", "auto"),
                local_memory_bytes=round(training.get("local_memory_mb", 8192) * 2**20),
                scheduler=training.get("dask", {}).get("scheduler"),
                workers=int(training.get("dask", {}).get("workers", 2)),
            ),
        )
        problems = [
            *config._target_problems(),
            *config._gate_problems(),
            *config._drift_problems(),
            *config._vertex_problems(),
            *config._schedule_problems(),
            *config._webhook_problems(),
            *config.canary.problems(),
            *_param_problems(config.params),
        ]
        if problems:
            raise ConfigError(f"invalid pipeline config {where}: " + "; ".join(problems))
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

    def _schedule_problems(self) -> list[str]:
        if self.retrain_schedule is None:
            return []
        from cronsim import CronSim, CronSimError

        try:
            CronSim(self.retrain_schedule, datetime.now(UTC))
        except CronSimError as exc:
            return [
                f"[retrain] schedule {self.retrain_schedule!r} is not a cron expression "
                f"({exc}): five fields, minute hour day-of-month month day-of-week, in UTC"
            ]
        return []

    def _webhook_problems(self) -> list[str]:
        names = [webhook.name for webhook in self.webhooks]
        twice = sorted({name for name in names if names.count(name) > 1})
        problems = [f"[[notify.webhooks]] names {name!r} more than once" for name in twice]
        problems += [
            f"[[notify.webhooks]] {webhook.name}: say where its URL is kept: url_secret (a "
            "Secret Manager version, in the cloud), url_env (an environment variable, on "
            "this machine), or both"
            for webhook in self.webhooks
            if not (webhook.url_secret or webhook.url_env)
        ]
        return problems

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
            # What staging follows: deploy reads it from the run's lineage.
            "staging": self.staging_follows,
            # The share of requests the staging service logs: it reads it from the
            # version it serves.
            "log_rate": self.log_rate,
        }


def _webhook_url_problems(spec: Mapping[str, Any]) -> list[str]:
    """A webhook URL written in the file: it is a credential (anyone holding it may post),
    and the file is committed, hashed into run ids and copied into the installation."""
    notify = spec.get("notify")
    webhooks = notify.get("webhooks") if isinstance(notify, Mapping) else None
    problems = []
    for index, entry in enumerate(webhooks if isinstance(webhooks, list) else []):
        if not isinstance(entry, Mapping):
            continue
        literal = [key for key, value in entry.items() if isinstance(value, str) and "://" in value]
        if "url" in entry or literal:
            name = entry.get("name", f"#{index + 1}")
            problems.append(
                f"[[notify.webhooks]] {name}: a webhook URL is never written in pipeline.toml "
                "(anyone who reads it could post); keep it in Secret Manager and name the "
                'version (url_secret = "projects/P/secrets/S/versions/latest"), or in an '
                'environment variable locally (url_env = "MODELRAIL_WEBHOOK_TEAM")'
            )
    return problems


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
