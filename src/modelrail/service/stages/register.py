"""register: make a blessed candidate an immutable, numbered version with lineage.

One delivery of a run registers at a time: it holds the run's registration lease
(``Leases.registration``, renewed by a heartbeat) from the start of its work
to its end. Another delivery of the run waits for it, then finds the version done;
one that finds the stage recorded failed meanwhile (the sweep ended the run) stops
(``DeliveryInProgress``: its redelivery re-publishes the record). A delivery that
died left the lease to expire within a minute; the next takes over the run's claim
and resumes its number.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import lightgbm as lgb

from modelrail.domain import card
from modelrail.domain.config import PipelineConfig
from modelrail.domain.leases import Leases
from modelrail.domain.lineage import Lineage
from modelrail.domain.registry import (
    CHAMPION,
    MODEL_FILE,
    PROFILE_FILE,
    REFERENCE_FILE,
    FileEntry,
    Manifest,
    Registry,
)
from modelrail.domain.runs import RunLog
from modelrail.kernel.errors import DeliveryInProgress, IntegrityError, LeaseHeld
from modelrail.kernel.events import ModelEvaluated, ModelRegistered
from modelrail.service.stages import Outcome

STAGE = "register"


def handle(
    event: ModelEvaluated,
    *,
    config: PipelineConfig,
    runs: RunLog,
    registry: Registry,
    leases: Leases,
    delivery_attempt: int,
    message_id: str = "",
) -> Outcome:
    model = config.model_name
    holder = f"{message_id or event.event_id}#{delivery_attempt}"
    with contextlib.ExitStack() as held:
        try:
            lease = held.enter_context(leases.registration(model, event.run_id, holder))
        except LeaseHeld as exc:
            raise DeliveryInProgress(
                f"another delivery ({exc.holder}) is registering {event.run_id}"
            ) from exc
        recorded = runs.stage_record(event.run_id, STAGE)
        if recorded is not None and recorded.status == "failed":
            # Ended meanwhile (the sweep): a version must not appear under a failed run.
            raise DeliveryInProgress(f"register of {event.run_id} was recorded failed meanwhile")
        return _register(
            event,
            config=config,
            runs=runs,
            registry=registry,
            delivery_attempt=delivery_attempt,
            fence=lease.check,
        )


def _register(
    event: ModelEvaluated,
    *,
    config: PipelineConfig,
    runs: RunLog,
    registry: Registry,
    delivery_attempt: int,
    fence: Callable[[], None],
) -> Outcome:
    store, model = runs.store, config.model_name
    model_text, candidate = runs.candidate(event.run_id, event.model_sha256)
    # The compiled predictors the training job built and verified (a candidate from
    # before they existed has none), each checked against the sha256 it recorded.
    predictors = {
        build["file"]: runs.candidate_file(event.run_id, build["file"], build["sha256"])
        for build in candidate.compiled["builds"]
    }
    diagnostics = runs.report(event.run_id, "evaluation")["diagnostics"]

    def describe(version: int, files: Mapping[str, FileEntry]) -> Manifest:
        return Manifest(
            model=model,
            version=version,
            run_id=event.run_id,
            format="lightgbm-text",
            created_at=event.occurred_at,
            features=candidate.features,
            best_iteration=candidate.best_iteration,
            params=candidate.params,
            train_metrics=candidate.train_metrics,
            metrics=event.metrics,
            champion=event.champion,
            verdict=event.verdict,
            lineage=Lineage.from_json(event.lineage),
            examples=candidate.examples,
            files=files,
            compiled=candidate.compiled,
            diagnostics=diagnostics,
        )

    # The card shows the version number, known only once the registry has claimed it,
    # so the registry asks for the files with the number.
    booster = lgb.Booster(model_str=model_text.decode())
    importance = sorted(
        zip(
            booster.feature_name(),
            (float(v) for v in booster.feature_importance("gain")),
            strict=True,
        ),
        key=lambda item: -item[1],
    )
    # The version keeps the hold-out it was judged on (later gates' trusted set, written
    # by evaluate) and its training data's profile (later drift checks' baseline).
    reference = store.read(runs.snapshot_key(event.run_id, REFERENCE_FILE)).data
    data_profile = store.read(runs.snapshot_key(event.run_id, PROFILE_FILE)).data
    history = _history(registry, model)
    version, manifest = registry.register(
        model,
        event.run_id,
        lambda number: {
            MODEL_FILE: model_text,
            # The card describes the version as its manifest will (its files aside).
            "card.html": card.render(
                describe(number, {}), importance, [h for h in history if h["version"] < number]
            ),
            REFERENCE_FILE: reference,
            PROFILE_FILE: data_profile,
            **predictors,
        },
        describe,
        attempt=delivery_attempt,
        fence=fence,
    )
    # Published after the bucket claim (the source of truth), before model-registered;
    # to Vertex AI's Model Registry too when pipeline.toml turns it on (the registry's
    # catalog), which then mirrors the champion alias.
    published = registry.publish(model, version)
    # Blessed is not champion: the champion moves only to a candidate at least as good
    # as it on every gated metric (evaluate's ``promote``).
    promoted = bool(event.verdict.get("promote", True))
    if promoted:
        registry.move_alias(model, CHAMPION, version)
    registered = ModelRegistered(
        run_id=event.run_id,
        causation_id=event.event_id,
        lineage=event.lineage,
        model=model,
        version=version,
        manifest_uri=registry.manifest_uri(model, version),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
    )
    output = {
        "model": model,
        "version": version,
        "champion": promoted,
        "published": published.to_json(),
    }
    return Outcome(registered, output)


def _history(registry: Registry, model: str) -> list[dict[str, Any]]:
    """Earlier versions' metrics for the card, each read from its verified signed
    manifest: a version whose manifest fails its signature is left off the card."""
    history = []
    for version in registry.versions(model):
        try:
            manifest = registry.signed_manifest(model, version)
        except IntegrityError:
            continue
        history.append({"version": version, "metrics": dict(manifest.metrics)})
    return history
