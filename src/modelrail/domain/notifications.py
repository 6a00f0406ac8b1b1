"""Notifications: what an event tells people, in which body, and what became of each
webhook's delivery.

Pure: ``notice_of`` reads an event body (``pipeline-failed``, ``model-deployed``,
``drift-detected``) into a ``Notice``, ``body_for`` renders it for one webhook (a
Slack-compatible line, or the event itself), ``judge`` sorts a webhook's answer into
delivered, worth retrying, or refused. ``Deliveries`` keeps one record per event and
webhook under ``notifications/<model>/``: the only objects the notifier writes, never a
run's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from modelrail.domain.config import Webhook
from modelrail.domain.runs import failure_reasons
from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import NotFound
from modelrail.kernel.events import utcnow
from modelrail.kernel.ports import BlobStore

NOTIFICATIONS_PREFIX = "notifications/"
# The longest reason a line carries: a notification points at the run, it is not the
# report.
MAX_REASON_CHARS = 300


@dataclasses.dataclass(frozen=True)
class Notice:
    """What one event tells: its kind (one of ``config.NOTIFY_EVENTS``), the model, the
    version and run it is about, and why, in words; ``event`` is the body as published."""

    kind: str
    model: str
    event_id: str
    run_id: str | None
    version: int | None
    reason: str
    event: Mapping[str, Any]

    def text(self) -> str:
        """One readable line: what happened to which model, version and run, and why."""
        version = f" v{self.version}" if self.version is not None else ""
        run = f" (run {self.run_id})" if self.run_id else ""
        headline = {
            "pipeline-failed": "run failed",
            "gate-rejected": "candidate rejected by the gate",
            "model-deployed": "deployed to staging",
            "drift-detected": "drift in what staging is asked",
        }[self.kind]
        return f"modelrail {self.model}{version}: {headline}{run}: {self.reason}"


def notice_of(topic: str, body: Mapping[str, Any]) -> Notice | None:
    """The notice an event on ``topic`` gives, or None for one that names no model (a
    trigger no model owned: there is nobody's ``[notify]`` to read)."""
    event_id = str(body.get("event_id", ""))
    if topic == "drift-detected":
        features = ", ".join(
            f"{feature.get('feature')} (PSI {float(feature.get('psi', 0.0)):.3f})"
            for feature in body.get("features", [])
        )
        window = body.get("window", {})
        reason = f"{features or 'features'} drifted, {window.get('from')} to {window.get('to')}"
        return Notice(
            "drift-detected", str(body["model"]), event_id, None, int(body["version"]),
            _cut(reason), body,
        )  # fmt: skip
    lineage = body.get("lineage") or {}
    model = (lineage.get("config") or {}).get("model")
    if not model:
        return None
    run_id = body.get("run_id")
    if topic == "model-deployed":
        previous = body.get("previous_version")
        was = f", after v{previous}" if previous is not None else ""
        reason = f"serving at {body.get('url')} (revision {body.get('revision')}{was})"
        return Notice(
            "model-deployed", str(model), event_id, run_id, int(body["version"]), _cut(reason), body
        )
    if topic == "pipeline-failed":
        error = body.get("error") or {}
        kind = "gate-rejected" if error.get("kind") == "gate_rejected" else "pipeline-failed"
        reasons = "; ".join(failure_reasons(error))
        reason = f"{body.get('stage')} failed ({error.get('kind')}): {reasons}"
        return Notice(kind, str(model), event_id, run_id, None, _cut(reason), body)
    return None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def body_for(webhook: Webhook, notice: Notice) -> bytes:
    """What ``webhook`` is sent: ``{"text": the line}`` (Slack's incoming webhooks, and
    the many services that take its shape), or the event's own body (``json``)."""
    if webhook.format == "json":
        return orjson.dumps(notice.event)
    return orjson.dumps({"text": notice.text()})


Verdict = Literal["delivered", "retry", "refused"]


def judge(status: int) -> Verdict:
    """A webhook's answer: 2xx delivered; 408, 429 and 5xx may pass later (retried);
    any other is the request's fault (a revoked or mistyped URL) and never will."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "refused"


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What became of one event's notification to one webhook: ``pending`` (failed,
    worth another attempt), ``delivered`` or ``failed`` (for good: refused, or out of
    attempts). Never the URL. ``schemas/records/notification.schema.json``."""

    model: str
    event_id: str
    event_kind: str
    webhook: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    updated_at: str
    error: str | None = None
    http_status: int | None = None

    @property
    def final(self) -> bool:
        return self.status != "pending"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Delivery:
        return cls(**{f.name: body[f.name] for f in dataclasses.fields(cls)})


class Deliveries:
    """The delivery records, ``notifications/<model>/<event_id>/<webhook>.json``."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    @staticmethod
    def key(model: str, event_id: str, webhook: str) -> str:
        return f"{NOTIFICATIONS_PREFIX}{model}/{event_id}/{webhook}.json"

    def get(self, model: str, event_id: str, webhook: str) -> Delivery | None:
        try:
            data = self.store.read(self.key(model, event_id, webhook)).data
            return Delivery.from_json(orjson.loads(data))
        except NotFound:
            return None

    def put(self, delivery: Delivery) -> None:
        key = self.key(delivery.model, delivery.event_id, delivery.webhook)
        self.store.write(key, canonical_json(delivery.to_json()), content_type="application/json")

    def record(
        self,
        notice: Notice,
        webhook: str,
        status: Literal["pending", "delivered", "failed"],
        attempts: int,
        error: str | None = None,
        http_status: int | None = None,
    ) -> Delivery:
        delivery = Delivery(
            notice.model, notice.event_id, notice.kind, webhook, status, attempts, utcnow(),
            error, http_status,
        )  # fmt: skip
        self.put(delivery)
        return delivery
