"""The pipeline configuration (one TOML file) and the runtime Settings.

``PipelineConfig`` says *what* to train; its hash (with the contract's) is part of
every run id. ``Settings`` says *where* things run; it is built once from the
environment by ``Settings.from_env`` in the composition root, and nothing else reads
the environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson

from modelrail.dataset.contract import DatasetContract
from modelrail.errors import ConfigError

Objective = Literal["binary", "multiclass", "regression"]
OBJECTIVES: tuple[Objective, ...] = ("binary", "multiclass", "regression")


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

    @classmethod
    def load(cls, path: Path) -> PipelineConfig:
        try:
            raw = path.read_bytes()
            spec = tomllib.loads(raw.decode())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read pipeline config {path}: {exc}") from exc
        try:
            model, training = spec["model"], spec["training"]
            contract = DatasetContract.load(path.parent / model["contract"])
            gate = tuple(MetricGate(**metric) for metric in spec.get("gate", {}).get("metrics", []))
            config = cls(
                model_name=model["name"],
                objective=model["objective"],
                contract=contract,
                seed=int(training["seed"]),
                num_boost_round=int(training["num_boost_round"]),
                early_stopping_rounds=int(training["early_stopping_rounds"]),
                validation_fraction=float(training["validation_fraction"]),
                holdout_fraction=float(training["holdout_fraction"]),
                params=dict(training.get("params", {})),
                gate=gate,
                sha256=hashlib.sha256(raw + contract.sha256.encode()).hexdigest(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid pipeline config {path}: {exc!r}") from exc
        config._check(path)
        return config

    def _check(self, path: Path) -> None:
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")
        target = self.contract.target_column
        if self.objective == "regression" and target.type not in ("number", "integer"):
            problems.append("a regression target must be a number or integer column")
        if self.objective == "binary" and len(target.categories) != 2 and target.type != "boolean":
            problems.append("a binary target must be a category column with two categories")
        if self.objective == "multiclass" and len(target.categories) < 3:
            problems.append("a multiclass target must be a category column with 3+ categories")
        if target.nullable:
            problems.append("the target column must not be nullable")
        if not 0 < self.holdout_fraction < 0.5 or not 0 < self.validation_fraction < 0.5:
            problems.append("holdout_fraction and validation_fraction must be in (0, 0.5)")
        for metric in self.gate:
            if metric.direction not in ("higher", "lower"):
                problems.append(f"gate metric {metric.name}: direction must be higher|lower")
        if problems:
            raise ConfigError(f"invalid pipeline config {path}: " + "; ".join(problems))

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


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where modelrail runs. Built once, from the environment, by the composition root."""

    mode: Mode
    home: Path
    config_path: Path
    topology_path: Path
    data_bucket: str
    artifact_bucket: str
    storage_root: Path | None  # filesystem buckets live here (embedded mode)
    project: str
    region: str
    code_version: str
    staging_port: int
    max_event_age_s: float
    run_api_endpoint: str | None = None  # Cloud Run Admin API override (emulator mode)
    training_job: str = "modelrail-train"
    staging_service: str = "modelrail-staging"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        mode = env.get("MODELRAIL_MODE", "embedded")
        if mode not in ("embedded", "emulator", "cloud"):
            raise ConfigError(f"MODELRAIL_MODE must be embedded|emulator|cloud, not {mode!r}")
        home = Path(env.get("MODELRAIL_HOME", ".modelrail")).absolute()
        try:
            return cls(
                mode=mode,  # type: ignore[arg-type]
                home=home,
                config_path=Path(env.get("MODELRAIL_CONFIG", "pipeline.toml")).absolute(),
                topology_path=Path(env.get("MODELRAIL_TOPOLOGY", "topology.yaml")).absolute(),
                data_bucket=env.get("MODELRAIL_DATA_BUCKET", "modelrail-data"),
                artifact_bucket=env.get("MODELRAIL_ARTIFACT_BUCKET", "modelrail-artifacts"),
                storage_root=home / "buckets" if mode == "embedded" else None,
                project=env.get("GOOGLE_CLOUD_PROJECT", "modelrail-local"),
                region=env.get("MODELRAIL_REGION", "europe-west1"),
                code_version=env.get("MODELRAIL_CODE_VERSION", "unversioned"),
                staging_port=int(env.get("MODELRAIL_STAGING_PORT", "8765")),
                max_event_age_s=float(env.get("MODELRAIL_MAX_EVENT_AGE_S", "86400")),
                run_api_endpoint=env.get("MODELRAIL_RUN_API_ENDPOINT") or None,
                training_job=env.get("MODELRAIL_TRAINING_JOB", "modelrail-train"),
                staging_service=env.get("MODELRAIL_STAGING_SERVICE", "modelrail-staging"),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid modelrail setting: {exc}") from exc


def canonical_json(value: Any) -> bytes:
    """Stable bytes for hashing and for create-only comparisons."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
