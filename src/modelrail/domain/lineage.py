"""Lineage: where a run, and the version it made, came from (``schemas/records/lineage``).

Stages gather it as the run goes: the trigger and the configuration from the start,
the code, the data and the contract's version from validate, the candidate from
train, the champion it was judged against from evaluate, and who blessed it by hand
when the gate had rejected it (``modelrail bless``). Lineage written before a field
existed reads without it. Events carry it as JSON; stage records and manifests
hold it as a ``Lineage``, with one serialisation, ``to_json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# The share of requests a staging service logs ([monitoring] log_rate) by default, and
# for a version whose lineage predates the setting: enough for a monitoring window of a
# few thousand requests a day on modest traffic.
DEFAULT_LOG_RATE = 0.05


@dataclasses.dataclass(frozen=True)
class Lineage:
    trigger: Mapping[str, Any]
    config: Mapping[str, Any]
    code: Mapping[str, Any] | None = None
    # The contract the data was validated against: its name and version.
    contract: Mapping[str, Any] | None = None
    data: Mapping[str, Any] | None = None
    drift: Mapping[str, Any] | None = None
    candidate: Mapping[str, Any] | None = None
    # Set by evaluate: the champion the gate compared the candidate with, None when
    # there was none (the first model); ``judged`` says whether the gate has run.
    champion: Mapping[str, Any] | None = None
    judged: bool = False
    # Who registered the candidate the gate rejected, why and when (``who``,
    # ``reason``, ``at``); None for a candidate the gate blessed.
    blessed_by: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Lineage:
        return cls(
            trigger=dict(body["trigger"]),
            config=dict(body["config"]),
            code=_optional(body, "code"),
            contract=_optional(body, "contract"),
            data=_optional(body, "data"),
            drift=_optional(body, "drift"),
            candidate=_optional(body, "candidate"),
            champion=_optional(body, "champion"),
            judged="champion" in body,
            blessed_by=_optional(body, "blessed_by"),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"trigger": dict(self.trigger), "config": dict(self.config)}
        for name in ("code", "contract", "data", "drift", "candidate"):
            value = getattr(self, name)
            if value is not None:
                body[name] = dict(value)
        if self.judged:
            body["champion"] = dict(self.champion) if self.champion is not None else None
        if self.blessed_by is not None:
            body["blessed_by"] = dict(self.blessed_by)
        return body

    @property
    def model(self) -> str | None:
        """The model the run's configuration names."""
        model = self.config.get("model")
        return str(model) if model is not None else None

    @property
    def log_rate(self) -> float:
        """The share of requests the staging service logs while it serves the version."""
        return float(self.config.get("log_rate", DEFAULT_LOG_RATE))


def _optional(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    return dict(value) if value is not None else None
