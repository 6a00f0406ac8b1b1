"""The event graph read from ``topology.yaml`` (the file Terraform also reads): its
stages in order, the topic each publishes to, and the subscriptions that feed them.
Everything that follows a run from stage to stage (the pipeline's accepted events, the
sweep's next stage) is derived from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from modelrail.kernel.errors import ConfigError


def _seconds(value: str | int) -> int:
    return int(str(value).removesuffix("s"))


@dataclasses.dataclass(frozen=True)
class Subscription:
    name: str
    topic: str
    consumer: str | None  # None: a pull subscription that holds messages for people
    ack_deadline_seconds: int
    max_delivery_attempts: int
    minimum_backoff_s: int
    maximum_backoff_s: int

    def backoff_s(self, failed_attempt: int) -> float:
        """How long Pub/Sub waits before redelivering after delivery ``failed_attempt``
        (1-based) failed: the minimum backoff, doubled for each earlier failure, capped
        at the maximum."""
        exponent = min(max(failed_attempt - 1, 0), 32)
        return float(min(self.maximum_backoff_s, self.minimum_backoff_s * 2**exponent))

    def longest_backoff_s(self) -> float:
        """The longest wait between two of its deliveries (before the last one)."""
        return self.backoff_s(self.max_delivery_attempts - 1)

    def redeliveries_come_within_s(self, start_s: float) -> float:
        """The longest the deliveries can take to come when none holds on to its work:
        the backoffs between them, each attempt allowed ``start_s`` before it shows
        itself (a cold start, reading the event; a delivery failing that early)."""
        attempts = self.max_delivery_attempts
        backoffs = sum(self.backoff_s(n) for n in range(1, attempts))
        return float(attempts * start_s + backoffs)

    def deliveries_take_s(self) -> float:
        """The longest all its deliveries can take: each may run to the ack deadline,
        with the backoffs between them."""
        attempts = self.max_delivery_attempts
        backoffs = sum(self.backoff_s(n) for n in range(1, attempts))
        return float(attempts * self.ack_deadline_seconds + backoffs)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    publishes: str | None = None  # the topic of its success event
    starts: str | None = None  # the stage it starts (launch_training: the training job)


@dataclasses.dataclass(frozen=True)
class Topology:
    topics: tuple[str, ...]
    subscriptions: tuple[Subscription, ...]
    dead_letter_topic: str
    stages: tuple[Stage, ...]
    # Consumers that are no stage of a run (the notifier): fed by subscriptions, they
    # record nothing of a run and follow no stage.
    listeners: tuple[str, ...] = ()

    def consumers_of(self, topic: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.topic == topic]

    def consumed_topics(self, stage: str) -> tuple[str, ...]:
        """The topics whose events ``stage`` handles: its subscriptions', or, for a
        stage another one starts (the training job), its starter's."""
        topics = tuple(dict.fromkeys(s.topic for s in self.subscriptions if s.consumer == stage))
        if topics:
            return topics
        starter = next((s.name for s in self.stages if s.starts == stage), None)
        return self.consumed_topics(starter) if starter is not None else ()

    def next_stage(self, stage: str) -> str | None:
        """The stage that follows ``stage`` in a run: the one it starts, or the consumer
        of the topic it publishes to (a listener is none); None at the end of the line."""
        found = next((s for s in self.stages if s.name == stage), None)
        if found is None:
            return None
        if found.starts is not None:
            return found.starts
        consumers = [
            s.consumer
            for s in self.consumers_of(found.publishes or "")
            if s.consumer and s.consumer not in self.listeners
        ]
        return consumers[0] if consumers else None

    @classmethod
    def load(cls, path: Path) -> Topology:
        try:
            spec: dict[str, Any] = yaml.safe_load(path.read_text())
            defaults = spec["defaults"]
            topics = tuple(t["name"] for t in spec["topics"])
            subscriptions = tuple(
                Subscription(
                    name=s["name"],
                    topic=s["topic"],
                    consumer=s.get("consumer"),
                    ack_deadline_seconds=int(
                        s.get("ack_deadline_seconds", defaults["ack_deadline_seconds"])
                    ),
                    max_delivery_attempts=int(
                        s.get("max_delivery_attempts", defaults["max_delivery_attempts"])
                    ),
                    minimum_backoff_s=_seconds(
                        {**defaults["retry"], **s.get("retry", {})}["minimum_backoff"]
                    ),
                    maximum_backoff_s=_seconds(
                        {**defaults["retry"], **s.get("retry", {})}["maximum_backoff"]
                    ),
                )
                for s in spec["subscriptions"]
            )
            listeners = tuple(listener["name"] for listener in spec.get("listeners", []))
            stages = tuple(
                Stage(s["name"], s.get("publishes"), s.get("starts")) for s in spec["stages"]
            )
            topology = cls(topics, subscriptions, spec["dead_letter_topic"], stages, listeners)
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid topology file {path}: {exc!r}") from exc
        named = {s.topic for s in subscriptions} | {s.publishes for s in stages if s.publishes}
        unknown = named - set(topics)
        if unknown or topology.dead_letter_topic not in topics:
            raise ConfigError(f"topology {path} names unknown topics: {sorted(unknown)}")
        stage_names = {s.name for s in stages}
        if stage_names & set(listeners):
            raise ConfigError(
                f"topology {path}: {sorted(stage_names & set(listeners))} are "
                "listed both as stages and as listeners"
            )
        strangers = {s.consumer for s in subscriptions if s.consumer} - stage_names - set(listeners)
        strangers |= {s.starts for s in stages if s.starts} - stage_names
        if strangers:
            raise ConfigError(f"topology {path} names stages it does not list: {sorted(strangers)}")
        unfed = [s.name for s in stages if not topology.consumed_topics(s.name)]
        if unfed:
            raise ConfigError(f"topology {path}: nothing feeds the stages {unfed}")
        return topology
