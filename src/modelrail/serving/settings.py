"""The service's own settings (limits, model pin), read once by its composition root."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal

from modelrail.errors import ConfigError

AccessLog = Literal["all", "errors", "off"]
PredictorKind = Literal["lightgbm", "compiled"]


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What the staging service serves and the limits it enforces.

    ``model_version`` pins one registered version; without it ``model_alias`` names
    the alias (e.g. ``staging``) resolved once at start. ``max_body_bytes`` bounds the
    request body (also when it arrives chunked); ``max_instances`` the rows of one
    request. The request timeout is gunicorn's worker ``timeout`` (see
    ``services/staging/gunicorn.conf.py``); it is kept here so the OpenAPI document and
    the logs can state it. ``require_model`` makes a failed load fatal (the local
    deployer uses it: a candidate that cannot load never binds the shared socket);
    otherwise the service stays up, live but not ready. ``predictor="compiled"``
    loads the compiled predictor the training job built for the version, once its
    sha256 and its answers on the probe rows (LightGBM's, bit for bit) are checked
    (see ``modelrail.compiled``); if any of that fails, LightGBM predicts.
    """

    model_name: str
    model_version: int | None = None
    model_alias: str | None = None
    max_body_bytes: int = 2 * 1024 * 1024
    max_instances: int = 1000
    request_timeout_s: float = 30.0
    require_model: bool = False
    access_log: AccessLog = "errors"
    health_route: str = "/healthz"
    predict_route: str = "/predict"
    predictor: PredictorKind = "lightgbm"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        try:
            version = env.get("MODELRAIL_MODEL_VERSION") or None
            settings = cls(
                model_name=env.get("MODELRAIL_MODEL_NAME", "penguins"),
                model_version=int(version) if version is not None else None,
                model_alias=env.get("MODELRAIL_MODEL_ALIAS") or None,
                max_body_bytes=int(env.get("MODELRAIL_MAX_BODY_BYTES", 2 * 1024 * 1024)),
                max_instances=int(env.get("MODELRAIL_MAX_INSTANCES", 1000)),
                request_timeout_s=float(env.get("MODELRAIL_REQUEST_TIMEOUT_S", 30)),
                require_model=env.get("MODELRAIL_REQUIRE_MODEL", "") in ("1", "true"),
                access_log=env.get("MODELRAIL_ACCESS_LOG", "errors"),  # type: ignore[arg-type]
                # Vertex AI's custom-container contract names the routes it probes.
                health_route=env.get("AIP_HEALTH_ROUTE") or "/healthz",
                predict_route=env.get("AIP_PREDICT_ROUTE") or "/predict",
                predictor=env.get("MODELRAIL_PREDICTOR") or "lightgbm",  # type: ignore[arg-type]
            )
        except ValueError as exc:
            raise ConfigError(f"invalid staging service setting: {exc}") from exc
        settings.check()
        return settings

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServiceSettings:
        names = {field.name for field in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in values.items() if k in names})
        settings.check()
        return settings

    def check(self) -> None:
        if self.model_version is None and self.model_alias is None:
            raise ConfigError("set MODELRAIL_MODEL_VERSION (a pin) or MODELRAIL_MODEL_ALIAS")
        if self.max_body_bytes < 1024 or self.max_instances < 1:
            raise ConfigError("MODELRAIL_MAX_BODY_BYTES >= 1024 and MODELRAIL_MAX_INSTANCES >= 1")
        if self.access_log not in ("all", "errors", "off"):
            raise ConfigError("MODELRAIL_ACCESS_LOG must be all|errors|off")
        if self.predictor not in ("lightgbm", "compiled"):
            raise ConfigError("MODELRAIL_PREDICTOR must be lightgbm|compiled")
        for route in (self.health_route, self.predict_route):
            if not route.startswith("/"):
                raise ConfigError(f"route {route!r} must start with /")
