"""The staging service's settings: what it serves, its limits, and how its server
listens. Each variable is parsed here once (``from_env``); ``to_env`` writes them back
for a child process (the local deployer's servers)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from modelrail.kernel.errors import ConfigError
from modelrail.settings import environment
from modelrail.settings.environment import Variable

AccessLog = Literal["all", "errors", "off"]
PredictorKind = Literal["lightgbm", "compiled"]


def _flag(text: str) -> bool:
    return text in ("1", "true")


def _cores() -> int:
    return len(os.sched_getaffinity(0))


# field -> the variable that sets it, and how its text is read. Vertex AI's contract
# names the routes it probes.
_VARIABLES = (
    Variable("model_name", "MODELRAIL_MODEL_NAME"),
    Variable("model_version", "MODELRAIL_MODEL_VERSION", int),
    Variable("model_alias", "MODELRAIL_MODEL_ALIAS"),
    Variable("max_body_bytes", "MODELRAIL_MAX_BODY_BYTES", int),
    Variable("max_instances", "MODELRAIL_MAX_INSTANCES", int),
    Variable("request_timeout_s", "MODELRAIL_REQUEST_TIMEOUT_S", float),
    Variable("require_model", "MODELRAIL_REQUIRE_MODEL", _flag),
    Variable("access_log", "MODELRAIL_ACCESS_LOG"),
    Variable("health_route", "AIP_HEALTH_ROUTE"),
    Variable("predict_route", "AIP_PREDICT_ROUTE"),
    Variable("predictor", "MODELRAIL_PREDICTOR"),
    Variable("bind", "MODELRAIL_BIND"),
    Variable("workers", "MODELRAIL_WORKERS", int),
    Variable("graceful_timeout_s", "MODELRAIL_GRACEFUL_TIMEOUT_S", int),
    Variable("drain_s", "MODELRAIL_DRAIN_S", float),
    Variable("server_log_level", "MODELRAIL_SERVER_LOGLEVEL", str.lower),
    # The production service's candidate: where it mirrors requests when [production]
    # shadow is on (docs/architecture.md, "Shadow").
    Variable("shadow_url", "MODELRAIL_SHADOW_URL"),
    # The service the server answers for, named in its prediction log's lines.
    Variable("service_name", "MODELRAIL_SERVICE_NAME"),
)
# What Vertex AI is told about the staging image as a custom container: the routes it
# posts predictions to and probes for readiness, and the port. Vertex hands them back as
# AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE and AIP_HTTP_PORT, which ``from_env`` reads.
VERTEX_PREDICT_ROUTE, VERTEX_HEALTH_ROUTE, VERTEX_PORT = "/predict", "/readyz", 8080
# granian bounds the wait for a request's headers to 1 ms .. 60 s.
_HEADER_TIMEOUT_RANGE_S = (0.001, 60.0)


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What the staging service serves, the limits it enforces, and how it listens.

    ``model_version`` pins one registered version; without it ``model_alias`` names
    the alias (e.g. ``staging``) resolved once at start. ``max_body_bytes`` bounds the
    request body (also when it arrives chunked); ``max_instances`` the rows of one
    request; ``request_timeout_s`` the time a client has to send a request, its
    headers (granian, at most 60 s) and its body (the app answers 408 after it).
    ``require_model`` makes a failed load fatal (the local deployer uses it: a
    candidate that cannot load never answers); otherwise the service stays up, live
    but not ready. ``predictor="compiled"`` loads the compiled predictor the training
    job built for the version, once its sha256 and a bit-for-bit probe against
    LightGBM pass (see ``modelrail.native.loader``); if any of that fails, LightGBM predicts.

    The server: ``bind`` is ``host:port`` or ``unix:<path>`` (Vertex AI's
    ``AIP_HTTP_PORT``, else Cloud Run's ``PORT``, else 8080 on every interface);
    ``workers`` processes; after SIGTERM, answers close their
    connection for ``drain_s``, then in-flight requests get ``graceful_timeout_s``.

    ``shadow_url``: a production service's candidate (its model's staging service),
    where it mirrors requests while ``[production] shadow`` is on (``serving.shadow``).
    ``service_name``: the service this server answers for (Cloud Run's ``K_SERVICE``
    unless set; the local deployers set it), so that the prediction log tells one
    version's answers on production from its answers on staging (a canary's judgement
    reads production's alone).
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
    bind: str = "0.0.0.0:8080"
    # One process per core, each answering on one thread: requests are CPU-bound and
    # the request path holds the GIL for all but the LightGBM call (docs/service.md).
    workers: int = dataclasses.field(default_factory=_cores)
    # Cloud Run sends SIGTERM and kills 10 s later.
    graceful_timeout_s: int = 8
    drain_s: float = 1.0
    server_log_level: str = "warning"
    shadow_url: str | None = None
    service_name: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if environ is None else environ
        port = env.get("AIP_HTTP_PORT") or env.get("PORT") or "8080"
        values: dict[str, Any] = {
            "model_name": "penguins",
            "bind": f"0.0.0.0:{port}",
            "service_name": env.get("K_SERVICE"),
        }
        try:
            values.update(environment.read(_VARIABLES, env))
        except ValueError as exc:
            raise ConfigError(f"invalid staging service setting: {exc}") from exc
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServiceSettings:
        names = {field.name for field in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in values.items() if k in names})
        settings.check()
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process's ``from_env()`` equal this."""
        return environment.write(_VARIABLES, self)

    def check(self) -> None:
        if self.model_version is None and self.model_alias is None:
            raise ConfigError("set MODELRAIL_MODEL_VERSION (a pin) or MODELRAIL_MODEL_ALIAS")
        if self.max_body_bytes < 1024 or self.max_instances < 1:
            raise ConfigError("MODELRAIL_MAX_BODY_BYTES >= 1024 and MODELRAIL_MAX_INSTANCES >= 1")
        if self.access_log not in ("all", "errors", "off"):
            raise ConfigError("MODELRAIL_ACCESS_LOG must be all|errors|off")
        if self.predictor not in ("lightgbm", "compiled"):
            raise ConfigError("MODELRAIL_PREDICTOR must be lightgbm|compiled")
        if self.workers < 1:
            raise ConfigError("MODELRAIL_WORKERS must be >= 1")
        if self.request_timeout_s <= 0:
            raise ConfigError("MODELRAIL_REQUEST_TIMEOUT_S must be > 0")
        for route in (self.health_route, self.predict_route):
            if not route.startswith("/"):
                raise ConfigError(f"route {route!r} must start with /")
        self.listener()

    def listener(self) -> tuple[str, int, Path | None]:
        """``bind`` as granian takes it: host, port, or a unix socket's path."""
        if self.bind.startswith("unix:"):
            return "127.0.0.1", 0, Path(self.bind.removeprefix("unix:"))
        host, _, port = self.bind.rpartition(":")
        try:
            return host.strip("[]") or "0.0.0.0", int(port), None
        except ValueError:
            raise ConfigError(
                f"MODELRAIL_BIND must be host:port or unix:<path>, not {self.bind!r}"
            ) from None

    @property
    def header_timeout_s(self) -> float:
        low, high = _HEADER_TIMEOUT_RANGE_S
        return min(max(self.request_timeout_s, low), high)


def vertex_container(image: str, model: str, version: int, artifact_bucket: str) -> dict[str, Any]:
    """The ``containerSpec`` of a Vertex AI model version: the staging image pinned to
    ``version``, loading it from ``artifact_bucket`` as on Cloud Run."""
    env = {**pin_env(model, version), "MODELRAIL_ARTIFACT_BUCKET": artifact_bucket}
    return {
        "imageUri": image,
        "env": [{"name": name, "value": value} for name, value in env.items()],
        "ports": [{"containerPort": VERTEX_PORT}],
        "predictRoute": VERTEX_PREDICT_ROUTE,
        "healthRoute": VERTEX_HEALTH_ROUTE,
    }


def pin_env(model: str, version: int) -> dict[str, str]:
    """The variables that pin the staging service to one version: on Cloud Run's
    template, the local servers, a Vertex AI model version's container."""
    return {"MODELRAIL_MODEL_NAME": model, "MODELRAIL_MODEL_VERSION": str(version)}


def pinned(env: Mapping[str, str]) -> tuple[str, int] | None:
    """The version ``env`` pins the staging service to (``pin_env``), if it pins one."""
    if "MODELRAIL_MODEL_VERSION" not in env:
        return None
    return env.get("MODELRAIL_MODEL_NAME", ""), int(env["MODELRAIL_MODEL_VERSION"])
