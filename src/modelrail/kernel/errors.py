"""One exception root; permanent vs transient is decided where the failure is known.

A ``PermanentError`` means "retrying the same event cannot help": the stage records a
report, publishes ``pipeline-failed`` and acknowledges. Any other exception is
transient: the entry point lets it propagate so Pub/Sub (or the in-process bus)
redelivers with backoff; on the last configured attempt the service layer records it
as ``RetriesExhausted`` and the run ends with ``pipeline-failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# What a failure's details may hold under "problems": a list of these, whatever raised
# it (the contract's checks, a smoke test): ``check`` names the check, ``message`` says
# what is wrong; the contract's add ``column``, ``count``, ``rows``, ``examples``.
PROBLEM_KEYS = ("check", "message")
# A problem's message is cut to this many characters: a record, an event, a page carry
# what a person reads, not a payload (a server's answer, a cell).
MAX_PROBLEM_MESSAGE_CHARS = 500


def as_problems(items: Iterable[object], check: str) -> list[dict[str, Any]]:
    """``items`` as problems of the one shape (``{"check", "message", ...}``): a string,
    or a mapping without a check, is a problem of ``check``."""
    problems = []
    for item in items:
        if isinstance(item, Mapping):
            problem = {str(k): v for k, v in item.items()}
            problem.setdefault("check", check)
            problem["message"] = str(problem.get("message", ""))
        else:
            problem = {"check": check, "message": str(item)}
        if len(problem["message"]) > MAX_PROBLEM_MESSAGE_CHARS:
            cut = problem["message"][:MAX_PROBLEM_MESSAGE_CHARS]
            problem["message"] = f"{cut}… ({len(problem['message']):,} characters)"
        problems.append(problem)
    return problems


class ModelrailError(Exception):
    """Root of every error modelrail raises on purpose."""


class PermanentError(ModelrailError):
    """Retrying cannot help; the run ends with ``pipeline-failed``.

    ``kind`` is a stable machine-readable code; ``details`` is JSON-serialisable and is
    stored in the run's failure report.
    """

    kind = "permanent"
    # The check a problem given as a bare string belongs to (``as_problems``).
    problem_check = "permanent"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        if "problems" in self.details:  # one shape, whoever raised it
            problems = self.details["problems"]
            items = problems if isinstance(problems, list | tuple) else [problems]
            self.details["problems"] = as_problems(items, self.problem_check)


class ConfigError(PermanentError):
    """The pipeline configuration, contract or topology file is invalid."""

    kind = "config_error"


class InvalidEvent(PermanentError):
    """An event does not match its JSON Schema or cannot be decoded."""

    kind = "invalid_event"


class EventTooOld(PermanentError):
    """An event arrived after the configured maximum age."""

    kind = "event_too_old"


class ConfigChanged(PermanentError):
    """An event of a run started under another pipeline configuration."""

    kind = "config_changed"


class ContractViolation(PermanentError):
    """A dataset breaks its contract; ``details`` holds the validation report."""

    kind = "contract_violation"


class UnknownModel(PermanentError):
    """A trigger or a command names no model this installation holds (or several
    are installed and it names none)."""

    kind = "unknown_model"


class DataUnavailable(PermanentError):
    """The data an event points at no longer exists in that generation."""

    kind = "data_unavailable"


class DataDrift(PermanentError):
    """New data moved past a drift ``fail`` limit from the champion's training data;
    ``details`` holds the drift table."""

    kind = "data_drift"


class GateRejected(PermanentError):
    """The evaluation gate did not bless the candidate; ``details`` holds the verdict."""

    kind = "gate_rejected"


class DeploymentFailed(PermanentError):
    """A new revision failed its smoke test and traffic stayed on the previous one.

    Its ``problems`` (the smoke test's findings, given as strings) are stored as
    problems of the one shape, ``{"check": "smoke_test", "message": ...}``."""

    kind = "deployment_failed"
    problem_check = "smoke_test"


class IntegrityError(PermanentError):
    """An artifact's bytes do not match the sha256 recorded in its manifest."""

    kind = "integrity_error"


class RetriesExhausted(PermanentError):
    """A stage kept failing with errors worth retrying until its subscription's last
    delivery attempt: the run ends here, with the last error, instead of its message
    waiting in the dead-letter topic with no record of the run."""

    kind = "retries_exhausted"


class JobFailed(PermanentError):
    """The training job's execution ended (failed, killed, deleted) without recording
    its result."""

    kind = "job_failed"


class RunStuck(PermanentError):
    """A stage did not record its result within the time its deliveries can take: its
    message was lost (a process killed on its last attempt, a bus that died with its
    process)."""

    kind = "stuck"


class SecretUnavailable(PermanentError):
    """A credential a configuration names is not where it says (a secret version that
    does not exist or may not be read, an environment variable not set)."""

    kind = "secret_unavailable"


class Refused(ModelrailError):
    """An operator's command cannot be carried out as asked; nothing was changed."""


class TransientError(ModelrailError):
    """A failure worth retrying (an unavailable dependency, a lost race)."""


class LeaseHeld(TransientError):
    """Someone else holds a registry lease (``Registry.lease``) past the wait allowed."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLost(TransientError):
    """A holder's lease was taken over while it worked (it was paused past its
    expiry): what the lease guards is not committed; the redelivery finds out why."""


class DeliveryInProgress(TransientError):
    """Another delivery of the same run is doing this stage's work (it holds the
    stage's claim or lease): this one is redundant. Retried while attempts remain; on
    the last one the service layer acknowledges it without recording anything, since
    the delivery at work records the stage (or, if it dies, the sweep ends the run)."""


class NotFound(ModelrailError):
    """A blob (or the requested generation of it) does not exist."""


class PreconditionFailed(ModelrailError):
    """A create-only or compare-and-set write lost: the blob's generation differs.

    Raised by every BlobStore implementation for what GCS reports as HTTP 412.
    """
