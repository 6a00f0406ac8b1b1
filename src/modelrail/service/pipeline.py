"""The pipeline service layer: one message in, one stage run, its record, its event out.

Every entry point (a Cloud Function, the training job, the in-process bus) calls
``consume``. It decodes and validates the event, derives the run, skips work a
previous delivery already recorded (re-publishing its event), runs the stage's pure
handler, writes the durable record *before* publishing, and turns a
``PermanentError`` into a recorded failure plus ``pipeline-failed``. Anything else
propagates so the bus redelivers, except on the subscription's last delivery attempt:
then the run ends failed (``retries_exhausted``, with the last error) rather than
leaving its message in the dead-letter topic and the run "running". Only a delivery
that cannot even write that record (killed, its bucket unwritable) is dead-lettered.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from modelrail.domain.runs import Began, StageRecord
from modelrail.kernel import logs
from modelrail.kernel.errors import (
    ConfigChanged,
    DeliveryInProgress,
    EventTooOld,
    InvalidEvent,
    PermanentError,
    RetriesExhausted,
    UnknownModel,
)
from modelrail.kernel.events import (
    PIPELINE_EVENTS,
    SCHEMA_VERSION,
    DataUploaded,
    PipelineEvent,
    PipelineFailed,
    RetrainRequested,
    Trigger,
    decode_json,
    derive_run_id,
)
from modelrail.kernel.ports import Message
from modelrail.service.container import Container
from modelrail.service.stages import HANDED_OFF, Outcome

log = logging.getLogger(__name__)

Event = Trigger | PipelineEvent

# The event classes, by the topic they are published to; topology.yaml says which
# topics feed which stage. Each handler lives in modelrail.service.stages.<stage> and is
# imported on first use, so a function process loads only its own stage's dependencies
# (validate never imports LightGBM). A handler names the ports it needs as keyword
# parameters; the container provides exactly those.
_EVENTS_BY_TOPIC: dict[str, type[Event]] = {
    **PIPELINE_EVENTS,
    DataUploaded.event_type: DataUploaded,
    RetrainRequested.event_type: RetrainRequested,
}


def _handler(stage: str) -> Callable[..., Outcome]:
    module = importlib.import_module(f"modelrail.service.stages.{stage}")
    handler: Callable[..., Outcome] = module.handle
    return handler


def encode(event: PipelineEvent) -> tuple[bytes, dict[str, str]]:
    """The bus message for ``event``: JSON body plus attributes for filtering."""
    body = event.to_body()
    attributes = {"event_type": event.event_type, "run_id": event.run_id, "schema_version": "1"}
    return orjson.dumps(body), attributes


def decode(message: Message) -> Event | None:
    """The event in ``message``; None for storage notifications that are not uploads.

    The topic, when the delivery names it, says what a trigger is: a message on the
    retrain topic is a retrain request whatever its ``event_type`` says (people publish
    these by hand), judged by the retrain schema alone, and one without an
    ``event_type`` or ``schema_version`` is given the retrain request's.
    """
    body = decode_json(message.data)
    if message.topic == RetrainRequested.event_type:
        body.setdefault("event_type", RetrainRequested.event_type)
        body.setdefault("schema_version", SCHEMA_VERSION)
        return RetrainRequested.from_body(body)
    event_type = body.get("event_type")
    if event_type is None:
        # A Cloud Storage notification: only object-finalize means "new data".
        if message.attributes.get("eventType", "OBJECT_FINALIZE") != "OBJECT_FINALIZE":
            return None
        return DataUploaded.from_body(body)
    if event_type == RetrainRequested.event_type:
        return RetrainRequested.from_body(body)
    event_class = PIPELINE_EVENTS.get(str(event_type))
    if event_class is None:
        raise InvalidEvent(f"unknown event_type {event_type!r}")
    return event_class.from_body(body)


def consume(
    container: Container, stage: str, message: Message, *, in_job: bool = False
) -> StageRecord | None:
    """Run ``stage`` for one delivery of ``message``; return the stage's record (None
    when nothing was recorded: a notification that is not an upload, a stage handed to
    a job, which records it).

    ``in_job``: a job runs this delivery (the event in ``MODELRAIL_EVENT``), so the
    stage runs here and is never handed to a job again. Every line logged meanwhile
    carries the stage, and the run once it is known.
    """
    with logs.pipeline_context(stage=stage):
        return _consume(container, stage, message, in_job)


def _consume(
    container: Container, stage: str, message: Message, in_job: bool
) -> StageRecord | None:
    accepted = tuple(_EVENTS_BY_TOPIC[topic] for topic in container.topology.consumed_topics(stage))
    began = Began.now()
    try:
        event = decode(message)
    except InvalidEvent as exc:
        key = message.message_id or hashlib.sha256(message.data).hexdigest()
        run_id, lineage = _ownerless({"kind": "unknown", "key": key})
        logs.bind(run_id=run_id)
        return record_failure(container, stage, run_id, lineage, key, exc, began)
    if event is None:
        log.info("ignoring storage notification %s", dict(message.attributes))
        return None

    try:
        if isinstance(event, PipelineEvent):
            run_id, lineage, causation_id = event.run_id, dict(event.lineage), event.event_id
            container = container.for_model(str(lineage["config"]["model"]))
        else:
            causation_id = message.message_id or event.idempotency_key
            # Until its model is known: refused, it is a run no model owns.
            run_id, lineage = _ownerless(event.lineage())
            container = container.for_model(_model_of(container, event))
            run_id, lineage = _run_of(container, event)
        config = container.config
    except UnknownModel as exc:
        logs.bind(run_id=run_id)
        return record_failure(container, stage, run_id, lineage, causation_id, exc, began)
    logs.bind(run_id=run_id, model=container.model)

    recorded = _recorded(container, stage, run_id)
    if recorded is not None:
        return recorded

    try:
        if not isinstance(event, accepted):
            raise InvalidEvent(f"{stage} does not consume {type(event).event_type} events")
        _check_fresh(event, message, container.settings.max_event_age_s)
        if isinstance(event, PipelineEvent) and lineage["config"]["hash"] != config.sha256:
            raise ConfigChanged(
                f"run {run_id} started under configuration {lineage['config']['hash'][:12]}, "
                f"this {stage} runs {config.sha256[:12]}: start a new run"
            )
        handler = _handler(stage)
        given: dict[str, Any] = {
            "run_id": run_id,
            "causation_id": causation_id,
            "message_id": message.message_id,
            "lineage": lineage,
        }
        if in_job:
            given["handoff"] = None  # the job runs the stage: it never hands it off again
        if "delivery_attempt" in _keywords(handler):
            given["delivery_attempt"] = _attempt(container, stage, run_id, message)
        outcome = inject(handler, container, given)(event)
    except PermanentError as exc:
        return record_failure(container, stage, run_id, lineage, causation_id, exc, began)
    except Exception as exc:
        attempts = _attempts(container, stage)
        if attempts is None or _count_failure(container, stage, run_id, message) < attempts:
            raise  # the bus delivers it again
        if _redundant(container, stage, run_id, message, exc):
            # Another delivery of this run holds the stage: it records it (or, dying,
            # leaves the run to the sweep). Recording a failure here would end a run
            # that is about to succeed.
            log.warning("%s of %s: %s; acknowledged without a record", stage, run_id, exc)
            return None
        log.exception("%s failed on its last delivery attempt (%d)", stage, attempts)
        exhausted = RetriesExhausted(
            f"{stage} failed on all {attempts} delivery attempts, last with "
            f"{type(exc).__name__}: {str(exc)[:500]}",
            {"attempts": attempts, "last_error": type(exc).__name__},
        )
        return record_failure(container, stage, run_id, lineage, causation_id, exhausted, began)

    if outcome.status == HANDED_OFF:
        log.info("%s of %s handed to a job: %s", stage, run_id, dict(outcome.output))
        return None
    return _record_outcome(container, stage, run_id, lineage, outcome, began)


def execute(
    container: Container, stage: str, command: Command, handler: Callable[..., Outcome]
) -> StageRecord:
    """Run an operator's ``command`` (a rollback) as the one stage of a run of its own,
    the way a trigger starts one: the run derived from the command's key under this
    configuration, ``handler`` given its ports by name, the record written before the
    event it names is published, a ``PermanentError`` recorded and published as
    ``pipeline-failed``. Anything else (``Refused``: nothing to do) propagates and
    records nothing."""
    with logs.pipeline_context(stage=stage):
        began = Began.now()
        run_id, lineage = _run_of(container, command)
        logs.bind(run_id=run_id)
        recorded = _recorded(container, stage, run_id)
        if recorded is not None:
            return recorded
        causation_id = command.idempotency_key
        given = {"run_id": run_id, "causation_id": causation_id, "lineage": lineage}
        try:
            outcome = inject(handler, container, given)(command)
        except PermanentError as exc:
            return record_failure(container, stage, run_id, lineage, causation_id, exc, began)
        return _record_outcome(container, stage, run_id, lineage, outcome, began)


class Command(Protocol):
    """What an operator asks for, as a trigger: a key (the same key under the same
    configuration is the same run) and the trigger's lineage."""

    @property
    def idempotency_key(self) -> str: ...

    def lineage(self) -> dict[str, Any]: ...


def _run_of(container: Container, trigger: Trigger | Command) -> tuple[str, dict[str, Any]]:
    """The run a trigger or a command starts for the container's model, and its
    lineage so far."""
    config = container.config
    run_id = derive_run_id(trigger.idempotency_key, config.sha256)
    return run_id, {"trigger": trigger.lineage(), "config": config.summary()}


# The configuration of a run no installed model owns (a message that is no event, an
# upload outside every model's folder): no model, the hash of nothing.
_NO_MODEL_HASH = hashlib.sha256(b"").hexdigest()


def _ownerless(trigger: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The run a trigger no model owns starts, and its lineage."""
    lineage = {"trigger": trigger, "config": {"hash": _NO_MODEL_HASH, "model": None}}
    return derive_run_id(trigger["key"], _NO_MODEL_HASH), lineage


def _model_of(container: Container, trigger: Trigger) -> str:
    """The model a trigger is for: the upload folder it lies in, or the model a
    retrain request names (none: the only one installed)."""
    if isinstance(trigger, DataUploaded):
        return container.models.model_of_upload(trigger.name)
    return container.models.resolve(trigger.model)


def _recorded(container: Container, stage: str, run_id: str) -> StageRecord | None:
    """The stage's record if a previous delivery wrote it, its event published again."""
    recorded = container.runs.stage_record(run_id, stage)
    if recorded is not None:
        log.info("%s of %s already recorded; re-publishing its event", stage, run_id)
        _publish_recorded(container, recorded)
    return recorded


def _record_outcome(
    container: Container,
    stage: str,
    run_id: str,
    lineage: dict[str, Any],
    outcome: Outcome,
    began: Began,
) -> StageRecord:
    published = outcome.event
    record = StageRecord.ended(
        run_id, stage, outcome.status, began=began,
        lineage=published.lineage if published else lineage, output=outcome.output,
        event=published.to_body() if published else None, resources=outcome.resources,
    )  # fmt: skip
    stored = record_and_publish(container, record)
    log.info("%s %s in %.3f s", stage, outcome.status, record.duration_s)
    return stored


class Provider(Protocol):
    """Gives a handler's dependencies by name: the ``Container``, or a test's ports."""

    def provide(self, name: str) -> Any: ...


def inject(
    handler: Callable[..., Outcome], provider: Provider, given: dict[str, Any]
) -> Callable[[Event | Command], Outcome]:
    """``handler`` with its keyword parameters bound: ``given`` values first (the run a
    trigger starts), the rest from ``provider`` (the container builds only what is
    named)."""
    kwargs = {
        name: given[name] if name in given else provider.provide(name)
        for name in _keywords(handler)
    }
    return lambda event: handler(event, **kwargs)


@functools.cache
def _keywords(handler: Callable[..., Outcome]) -> tuple[str, ...]:
    """The ports and values ``handler`` names (its keyword-only parameters), read from
    its signature once per process."""
    return tuple(
        name
        for name, parameter in inspect.signature(handler).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )


def _attempt(container: Container, stage: str, run_id: str, message: Message) -> int:
    """This delivery's attempt: the bus's count, or one more than the failures counted."""
    if not message.message_id:
        return message.delivery_attempt
    failed = container.runs.failed_deliveries(run_id, stage, message.message_id)
    return max(message.delivery_attempt, failed + 1)


def _count_failure(container: Container, stage: str, run_id: str, message: Message) -> int:
    """Count this failed delivery; return its attempt number (the bus's, if higher).
    A count that cannot be written leaves the bus's number: the delivery is retried."""
    if not message.message_id:
        return message.delivery_attempt
    try:
        failed = container.runs.count_failed_delivery(run_id, stage, message.message_id)
    except Exception:
        log.exception("could not count the failed delivery of %s", message.message_id)
        return message.delivery_attempt
    return max(message.delivery_attempt, failed)


def _redundant(
    container: Container, stage: str, run_id: str, message: Message, exc: Exception
) -> bool:
    """Whether this delivery failed only because another delivery of the run is doing
    the stage's work: it says so (``DeliveryInProgress``), or another message holds the
    stage's claim (``RunLog.claim``)."""
    if isinstance(exc, DeliveryInProgress):
        return True
    try:
        holder = container.runs.claimed_by(run_id, stage)
    except Exception:
        log.exception("could not read %s's claim of %s", stage, run_id)
        return False
    return holder is not None and holder != message.message_id


def _attempts(container: Container, stage: str) -> int | None:
    """How many deliveries the subscriptions feeding ``stage`` make before dead-lettering
    (None for the training job, which Cloud Run retries itself)."""
    limits = [
        s.max_delivery_attempts for s in container.topology.subscriptions if s.consumer == stage
    ]
    return min(limits) if limits else None


def _check_fresh(event: Event, message: Message, max_age_s: float) -> None:
    stamp = event.occurred_at if isinstance(event, PipelineEvent) else message.published_at
    if not stamp:
        return
    age = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    if age > max_age_s:
        raise EventTooOld(f"event is {age:.0f} s old, older than the {max_age_s:.0f} s limit")


def record_failure(
    container: Container,
    stage: str,
    run_id: str,
    lineage: dict[str, Any],
    causation_id: str,
    exc: PermanentError,
    began: Began,
) -> StageRecord:
    """Record ``stage`` of ``run_id``, begun at ``began``, as failed with ``exc``, then
    publish ``pipeline-failed``."""
    message = _cut(exc.message, MAX_MESSAGE_CHARS)
    error = {"kind": exc.kind, "message": message, "details": _bounded(exc.details)}
    failed = _failure_event(run_id, causation_id, lineage, stage, exc.kind, message, exc.details)
    record = StageRecord.ended(
        run_id, stage, "failed", began=began, lineage=lineage, output={},
        event=failed.to_body(), error=error,
    )  # fmt: skip
    log.warning("%s failed permanently for %s: %s", stage, run_id, exc.message)
    return record_and_publish(container, record)


# What a failure carries is bounded by construction, whatever the data held: the event
# at most MAX_EVENT_PROBLEMS problems (the report keeps more, ``report_uri`` says where)
# and MAX_EVENT_BYTES in all, far below Pub/Sub's 10 MB; the stage record's details at
# most MAX_RECORD_DETAILS_BYTES; a message MAX_MESSAGE_CHARS.
MAX_EVENT_PROBLEMS = 20
MAX_EVENT_BYTES = 64 * 2**10
MAX_RECORD_DETAILS_BYTES = 512 * 2**10
MAX_MESSAGE_CHARS = 2000
_EXAMPLES_IN_EVENT = 3


def _failure_event(
    run_id: str,
    causation_id: str,
    lineage: dict[str, Any],
    stage: str,
    kind: str,
    message: str,
    details: dict[str, Any],
) -> PipelineFailed:
    """``pipeline-failed`` with a summary of ``details``; only counts and the report's
    URI if even the summary would make the event larger than ``MAX_EVENT_BYTES``."""
    report_uri = details.get("report_uri")
    for summary in (_summary(details), _counts(details)):
        failed = PipelineFailed(
            run_id=run_id,
            causation_id=causation_id,
            lineage=lineage,
            stage=stage,
            error={"kind": kind, "message": message, "details": summary},
            report_uri=report_uri,
        )
        if len(orjson.dumps(failed.to_body())) <= MAX_EVENT_BYTES:
            break
    return failed


def _summary(details: dict[str, Any]) -> dict[str, Any]:
    """What a failure event carries: the first problems, cut, and how many there are;
    the gate's verdict, the reasons; not the whole report."""
    keep = ("problems", "reasons", "report_uri", "verdict", "url", "problem_count")
    summary = {k: v for k, v in details.items() if k in keep}
    problems = details.get("problems")
    if isinstance(problems, list):
        summary["problem_count"] = details.get("problem_count", len(problems))
        summary["problems"] = [_cut_problem(p) for p in problems[:MAX_EVENT_PROBLEMS]]
    reasons = details.get("reasons")
    if isinstance(reasons, list):
        summary["reasons"] = [_cut(str(r), 300) for r in reasons[:MAX_EVENT_PROBLEMS]]
    return summary


def _counts(details: dict[str, Any]) -> dict[str, Any]:
    """The least a failure event carries: where the report is and how many problems."""
    counts: dict[str, Any] = {"truncated": True}
    if "report_uri" in details:
        counts["report_uri"] = details["report_uri"]
    problems = details.get("problems")
    if isinstance(problems, list):
        counts["problem_count"] = details.get("problem_count", len(problems))
    return counts


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    """A stage record's details: whole unless larger than ``MAX_RECORD_DETAILS_BYTES``,
    then the event's summary (the report, at ``report_uri``, has the rest)."""
    try:
        size = len(orjson.dumps(details))
    except TypeError:
        size = MAX_RECORD_DETAILS_BYTES + 1
    if size <= MAX_RECORD_DETAILS_BYTES:
        return details
    return {**_summary(details), "truncated": True, "details_bytes": size}


def _cut_problem(problem: object) -> object:
    if not isinstance(problem, dict):
        return _cut(str(problem), 300)
    cut = {k: v for k, v in problem.items() if k not in ("rows", "examples")}
    cut["message"] = _cut(str(problem.get("message", "")), 300)
    for key in ("rows", "examples"):
        if isinstance(problem.get(key), list):
            cut[key] = [
                _cut(v, 80) if isinstance(v, str) else v for v in problem[key][:_EXAMPLES_IN_EVENT]
            ]
    return cut


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def record_and_publish(container: Container, record: StageRecord) -> StageRecord:
    """Store a stage record (create-only), then publish the event it names."""
    # Durable output first: a crash after this line re-publishes on redelivery.
    stored = container.runs.save_stage(record)
    _publish_recorded(container, stored)
    if container.observer is not None:
        container.observer(stored)
    return stored


def _publish_recorded(container: Container, record: StageRecord) -> None:
    body = record.event
    if body is None:
        return
    event = PIPELINE_EVENTS[body["event_type"]].from_body(body)
    data, attributes = encode(event)
    container.bus.publish(event.event_type, data, attributes)
