"""Events: frozen, past-tense, versioned, validated against ``modelrail/schemas/events`` both ways.

modelrail's own events share one envelope (``run_id``, ``event_id``, ``causation_id``,
``occurred_at`` and the lineage gathered so far). The two trigger events are shaped by
their publishers: ``data-uploaded`` is a Cloud Storage notification payload and
``retrain-requested`` is written by users, the CLI, Cloud Build and the retrain
policies. ``drift-detected`` is the monitor's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import orjson

from modelrail.kernel import resources
from modelrail.kernel.errors import InvalidEvent

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

SCHEMA_VERSION = 1

JsonDict = dict[str, Any]


def utcnow() -> str:
    """RFC 3339 timestamp with microseconds, the format every event uses."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


def derive_run_id(idempotency_key: str, config_hash: str) -> str:
    """The same trigger under the same configuration is the same run."""
    digest = hashlib.sha256(f"{idempotency_key}\n{config_hash}".encode()).hexdigest()
    return f"run-{digest[:20]}"


@cache
def _validator(event_type: str) -> Draft202012Validator:
    # Imported here: jsonschema costs a noticeable part of a cold start, and processes
    # that never validate an event (the staging service) should not pay for it.
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource

    schemas = {
        path.name: orjson.loads(path.read_bytes())
        for path in resources.schema_dir("events").iterdir()
        if path.suffix == ".json"
    }
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return Draft202012Validator(
        schemas[f"{event_type}.json"], registry=registry, format_checker=FormatChecker()
    )


def validate_body(event_type: str, body: Mapping[str, Any]) -> None:
    """Raise ``InvalidEvent`` naming every schema violation of ``body``."""
    # A property that fails inside the envelope (allOf) makes every envelope property
    # "unevaluated" too: the specific failure comes first, that echo last.
    errors = sorted(
        _validator(event_type).iter_errors(body),
        key=lambda e: (e.validator == "unevaluatedProperties", [str(p) for p in e.path]),
    )
    if errors:
        problems = [
            {"path": "/" + "/".join(str(p) for p in error.path), "message": error.message}
            for error in errors
        ]
        raise InvalidEvent(
            f"{event_type} event does not match its schema: {problems[0]['message']}",
            {"event_type": event_type, "problems": problems},
        )


def decode_json(data: bytes) -> JsonDict:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"message body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidEvent("message body is not a JSON object")
    return body


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataUploaded:
    """An object landed in the data bucket (a GCS object-finalize notification)."""

    event_type: ClassVar[str] = "data-uploaded"
    bucket: str
    name: str
    generation: int

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DataUploaded:
        validate_body(cls.event_type, body)
        return cls(bucket=body["bucket"], name=body["name"], generation=int(body["generation"]))

    def to_body(self) -> JsonDict:
        body: JsonDict = {
            "bucket": self.bucket,
            "name": self.name,
            "generation": str(self.generation),
        }
        validate_body(self.event_type, body)
        return body

    @property
    def idempotency_key(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"

    def lineage(self) -> JsonDict:
        return {"kind": "upload", "key": self.idempotency_key}


R = TypeVar("R", bound="Request")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Request:
    """A request someone publishes (a retrain, a batch prediction): its body is its
    fields, those left unset (None) left out."""

    event_type: ClassVar[str]

    @classmethod
    def from_body(cls: type[R], body: Mapping[str, Any]) -> R:
        validate_body(cls.event_type, body)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in fields})

    def to_body(self) -> JsonDict:
        body: JsonDict = {"schema_version": SCHEMA_VERSION, "event_type": self.event_type}
        fields = dataclasses.asdict(self)
        body.update({k: v for k, v in fields.items() if v is not None})
        validate_body(self.event_type, body)
        return body


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrainRequested(Request):
    """Someone asked for a retrain: a user, the CLI, or Cloud Build on commit."""

    event_type: ClassVar[str] = "retrain-requested"
    # The model to retrain; None while the installation holds one.
    model: str | None = None
    request_id: str | None = None
    commit_sha: str | None = None
    data_uri: str | None = None
    reason: str | None = None
    requested_at: str | None = None
    # A retrain policy's, not a person's ("drift", "schedule"): its trigger says so.
    policy: str | None = None
    # The drift policy's: the monitoring report (its key in the artifact bucket) whose
    # drift in live traffic this retrain answers.
    monitoring_report: str | None = None

    @property
    def idempotency_key(self) -> str:
        # A client-supplied request id wins; Cloud Build sets only the commit SHA.
        if self.request_id:
            return f"request:{self.request_id}"
        return f"commit:{self.commit_sha}"

    def lineage(self) -> JsonDict:
        trigger: JsonDict = {
            "kind": self.policy or ("retrain" if self.request_id else "commit"),
            "key": self.idempotency_key,
            "request_id": self.request_id,
            "commit_sha": self.commit_sha,
        }
        if self.policy:
            trigger["reason"] = self.reason
        if self.monitoring_report:
            trigger["monitoring_report"] = self.monitoring_report
        return trigger


Trigger = DataUploaded | RetrainRequested


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriftDetected:
    """The monitor found what a served version is asked drifted from what it was
    trained on (``modelrail monitor``): for whoever acts on it, a person or a policy."""

    event_type: ClassVar[str] = "drift-detected"
    model: str
    version: int
    window: Mapping[str, str]  # from, to
    features: Sequence[Mapping[str, Any]]  # feature, psi, fail: each over its limit
    report_uri: str
    event_id: str = dataclasses.field(default_factory=new_id)
    occurred_at: str = dataclasses.field(default_factory=utcnow)

    def to_body(self) -> JsonDict:
        body: JsonDict = {"schema_version": SCHEMA_VERSION, "event_type": self.event_type}
        body.update(orjson.loads(orjson.dumps(dataclasses.asdict(self))))
        validate_body(self.event_type, body)
        return body


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchRequested(Request):
    """Someone asked for a batch prediction (``modelrail predict --cloud``, or a message
    on the topic): score the files under ``input`` with a version of ``model`` into
    ``output`` (docs/architecture.md, "Batch prediction"). The batch job reads it from
    its environment; ``request_id`` names the request in its logs."""

    event_type: ClassVar[str] = "batch-requested"
    model: str | None = None
    input: str
    output: str
    version: int | None = None  # else the version ``alias`` names
    alias: str | None = None  # default ``staging``
    explain: bool = False
    request_id: str = dataclasses.field(default_factory=new_id)
    requested_at: str = dataclasses.field(default_factory=utcnow)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineEvent:
    """The envelope of every event modelrail itself publishes."""

    event_type: ClassVar[str] = ""
    run_id: str
    causation_id: str
    lineage: Mapping[str, Any]
    event_id: str = dataclasses.field(default_factory=new_id)
    occurred_at: str = dataclasses.field(default_factory=utcnow)

    def to_body(self) -> JsonDict:
        body = {"schema_version": SCHEMA_VERSION, "event_type": self.event_type}
        body.update(orjson.loads(orjson.dumps(dataclasses.asdict(self))))
        validate_body(self.event_type, body)
        return body

    @classmethod
    def from_body(cls: type[E], body: Mapping[str, Any]) -> E:
        validate_body(cls.event_type, body)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in fields})


E = TypeVar("E", bound=PipelineEvent)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetValidated(PipelineEvent):
    event_type: ClassVar[str] = "dataset-validated"
    dataset: Mapping[str, Any]
    report_uri: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelTrained(PipelineEvent):
    event_type: ClassVar[str] = "model-trained"
    dataset: Mapping[str, Any]
    candidate_uri: str
    model_sha256: str
    best_iteration: int
    train_metrics: Mapping[str, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEvaluated(PipelineEvent):
    event_type: ClassVar[str] = "model-evaluated"
    dataset: Mapping[str, Any]
    candidate_uri: str
    model_sha256: str
    metrics: Mapping[str, float]
    champion: Mapping[str, Any] | None
    verdict: Mapping[str, Any]
    report_uri: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelRegistered(PipelineEvent):
    event_type: ClassVar[str] = "model-registered"
    model: str
    version: int
    manifest_uri: str
    manifest_sha256: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelDeployed(PipelineEvent):
    event_type: ClassVar[str] = "model-deployed"
    model: str
    version: int
    url: str
    revision: str
    previous_version: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineFailed(PipelineEvent):
    event_type: ClassVar[str] = "pipeline-failed"
    stage: str
    error: Mapping[str, Any]
    report_uri: str | None


PIPELINE_EVENTS: dict[str, type[PipelineEvent]] = {
    cls.event_type: cls
    for cls in (
        DatasetValidated,
        ModelTrained,
        ModelEvaluated,
        ModelRegistered,
        ModelDeployed,
        PipelineFailed,
    )
}
