"""One pure handler per stage: an event and named ports in, an outcome out.

Handlers never import a cloud library, never read the environment and never publish:
the pipeline service layer (``modelrail.pipeline``) records their outcome and
publishes the event they return. A handler raises ``PermanentError`` when retrying
cannot help and lets anything else propagate so the bus redelivers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from modelrail.config import PipelineConfig
from modelrail.events import PipelineEvent
from modelrail.ports import Deployer, JobLauncher, Storage
from modelrail.registry import Registry
from modelrail.runs import RunLog


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a handler may touch. Built by the service layer from the container."""

    config: PipelineConfig
    storage: Storage
    data_bucket: str
    registry: Registry
    runs: RunLog
    code_version: str
    training_job: str
    launcher: JobLauncher | None = None
    deployer: Deployer | None = None
    compiler: str | None = None  # train: the C compiler of the compiled predictor


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A handler's result: the event to publish (if any) and what to record."""

    event: PipelineEvent | None
    output: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "succeeded"  # or "skipped": nothing to do (e.g. a superseded deploy)
