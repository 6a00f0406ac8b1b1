"""JobLauncher and Deployer on Cloud Run (``google-cloud-run``, the Admin API v2).

In the cloud these use the default credentials and ``run.googleapis.com``. With
``api_endpoint`` set (emulator mode: the local control plane) they use anonymous
credentials and the REST transport against that endpoint. Nothing else differs: the
requests, the waiting and the error handling are the same.

Neither adapter reads a long-running operation (``operations.get`` needs
``run.operations.get``, which exists only at project level, and the stage accounts hold
resource-scoped roles only). ``run_job`` is fire-and-forget: the execution's name is in
the operation returned by the call itself. ``update_service`` is followed by polling the
service, which ``roles/run.developer`` on that service allows.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import urllib3

from modelrail.kernel.errors import (
    DeploymentFailed,
    ModelrailError,
    PermanentError,
    TransientError,
)
from modelrail.kernel.ports import Candidate, Deployment, JobState, Probe, RevisionMetrics
from modelrail.settings.service import pin_env, pinned

_http = urllib3.PoolManager(retries=False)

if TYPE_CHECKING:
    from google.cloud import run_v2

EVENT_ENV = "MODELRAIL_EVENT"
# The tag a production canary's revision gets: its own URL, for the smoke test.
CANARY_TAG = "canary"
SIGNING_KEY_ENV = "MODELRAIL_SIGNING_KEY"
# A rollout (new revision ready) rarely takes minutes. With the smoke test and a
# restore, a deploy that also waited its turn can outlast the deploy subscription's
# ack deadline (topology.yaml): see reconcile.LEASE_WAIT_S for what happens then.
_ROLLOUT_TIMEOUT_S = 240.0
_CALL_TIMEOUT_S = 60.0
# Polling the service during a rollout: soon at first (a local rollout takes about a
# second), then backing off (a Cloud Run rollout takes tens of seconds).
_POLL_FIRST_S = 0.2
_POLL_MAX_S = 5.0
# A canary step reads Cloud Monitoring at most every so often (it updates each minute).
_OBSERVE_EVERY_S = 10.0


def _client_kwargs(api_endpoint: str | None) -> dict[str, Any]:
    if api_endpoint is None:
        return {}
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return {
        "credentials": AnonymousCredentials(),  # type: ignore[no-untyped-call]
        "transport": "rest",
        "client_options": ClientOptions(api_endpoint=api_endpoint),
    }


def _api_error(action: str, exc: Exception) -> Exception:
    """Map a Cloud Run API error: a bad request cannot succeed later, the rest can."""
    from google.api_core import exceptions

    if isinstance(exc, exceptions.InvalidArgument | exceptions.FailedPrecondition):
        return PermanentError(f"{action}: {exc}")
    return TransientError(f"{action}: {exc}")


class CloudRunJobLauncher:
    """Starts a Cloud Run job execution with the event in ``MODELRAIL_EVENT``."""

    def __init__(self, project: str, region: str, api_endpoint: str | None = None) -> None:
        self.project, self.region, self.api_endpoint = project, region, api_endpoint
        self._client: Any = None
        self._executions: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> run_v2.JobsClient:
        with self._lock:
            if self._client is None:
                from google.cloud import run_v2

                self._client = run_v2.JobsClient(**_client_kwargs(self.api_endpoint))
            client: run_v2.JobsClient = self._client
            return client

    @property
    def executions(self) -> run_v2.ExecutionsClient:
        with self._lock:
            if self._executions is None:
                from google.cloud import run_v2

                self._executions = run_v2.ExecutionsClient(**_client_kwargs(self.api_endpoint))
            executions: run_v2.ExecutionsClient = self._executions
            return executions

    def state(self, execution: str) -> JobState:
        """From the execution's task counts: a task is failed once its retries are spent."""
        from google.api_core import exceptions

        try:
            found = self.executions.get_execution(name=execution, timeout=_CALL_TIMEOUT_S)
        except exceptions.NotFound:
            return JobState("unknown", f"{execution} does not exist")
        except exceptions.GoogleAPICallError as exc:
            raise _api_error(f"reading execution {execution}", exc) from exc
        except OSError as exc:  # the API could not be reached (REST transport)
            raise TransientError(f"reading execution {execution}: {exc}") from exc
        if found.running_count:
            return JobState("running")
        if found.failed_count or found.cancelled_count:
            messages = [c.message for c in found.conditions if c.message]
            return JobState("failed", "; ".join(messages) or "a task failed")
        if found.task_count and found.succeeded_count >= found.task_count:
            return JobState("succeeded")
        return JobState("running")  # pending: not started yet

    def job_name(self, job: str) -> str:
        if job.startswith("projects/"):
            return job
        return f"projects/{self.project}/locations/{self.region}/jobs/{job}"

    def launch(self, job: str, event_json: bytes) -> str:
        from google.api_core import exceptions
        from google.cloud import run_v2

        overrides = run_v2.RunJobRequest.Overrides(
            container_overrides=[
                run_v2.RunJobRequest.Overrides.ContainerOverride(
                    env=[run_v2.EnvVar(name=EVENT_ENV, value=event_json.decode())]
                )
            ]
        )
        request = run_v2.RunJobRequest(name=self.job_name(job), overrides=overrides)
        try:
            operation = self.client.run_job(request=request, timeout=_CALL_TIMEOUT_S)
        except exceptions.GoogleAPICallError as exc:
            raise _api_error(f"running job {self.job_name(job)}", exc) from exc
        except OSError as exc:  # the API could not be reached (REST transport)
            raise TransientError(f"running job {self.job_name(job)}: {exc}") from exc
        # The operation's metadata is the new Execution; the job runs on without us.
        execution_name: str = operation.metadata.name
        return execution_name


class CloudRunDeployer:
    """Implements the ``Deployer`` port with the staging Cloud Run service: ``start``
    pins its template to one model version and waits for the new revision, which Cloud
    Run gives the traffic once ready; ``discard`` puts the previous template back.
    ``signing_key`` (the key version register signs manifests with) is set on every
    revision beside the pin, so the service trusts the key the versions are signed with,
    also after a rotation (Terraform creates the service once and leaves its variables
    to this deployer).

    With ``metrics`` (a production service's: its canary) a new revision starts with no
    traffic: ``start`` creates it with the traffic pinned to the serving revision and a
    ``canary`` tag, whose own URL the smoke test probes; ``split`` gives it a share of
    the requests (``traffic``: revision percentages, as ``gcloud run services
    update-traffic`` sets them), ``observe`` reads what each revision answered since
    from Cloud Monitoring (``metrics``), ``promote`` gives it all the traffic and
    ``discard`` gives all of it back to the revision that served before. What serves is
    what the traffic names (``current``), whatever the template says.
    """

    def __init__(
        self,
        project: str,
        region: str,
        service: str,
        api_endpoint: str | None = None,
        *,
        signing_key: str | None = None,
        rollout_timeout_s: float = _ROLLOUT_TIMEOUT_S,
        call_timeout_s: float = _CALL_TIMEOUT_S,
        metrics: RevisionMetrics | None = None,
        observe_every_s: float = _OBSERVE_EVERY_S,
    ) -> None:
        self.project, self.region, self.api_endpoint = project, region, api_endpoint
        self.metrics = metrics
        # A canary's current step: when its split began (observe reads from then on).
        self._split_at: dict[str, datetime] = {}
        # Cloud Monitoring is read at most this often during a step (the rollout polls
        # faster): what was read last is answered meanwhile.
        self.observe_every_s = observe_every_s
        self._observed: dict[str, tuple[float, dict[str, Any]]] = {}
        self.signing_key = signing_key
        self.service_name = (
            service
            if service.startswith("projects/")
            else f"projects/{project}/locations/{region}/services/{service}"
        )
        self.rollout_timeout_s = rollout_timeout_s
        self.call_timeout_s = call_timeout_s  # each API call's; an unanswered one is transient
        self._client: Any = None
        self._revisions: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> run_v2.ServicesClient:
        with self._lock:
            if self._client is None:
                from google.cloud import run_v2

                self._client = run_v2.ServicesClient(**_client_kwargs(self.api_endpoint))
            client: run_v2.ServicesClient = self._client
            return client

    # -- the port ----------------------------------------------------------------
    def stop(self) -> None:
        """Cloud Run runs the service: nothing here to stop."""

    def current(self) -> Deployment | None:
        service = self._get()
        serving = _serving(service)
        if not serving:
            return None
        if serving == service.latest_created_revision:
            env = _template_env(service.template)
        else:  # the newest revision is not ready, or has no traffic: an older one serves
            env = self._revision_env(serving)
        pin = pinned(env)
        if pin is None:
            return None
        return Deployment(service.uri, _short(serving), *pin, self._probe(service.uri))

    def start(self, model: str, version: int) -> Candidate:
        """The service's template pinned to ``version`` and its new revision ready.
        Cloud Run gives a ready revision the traffic at once: the candidate already
        serves, and ``discard`` puts the previous template back. A canary's split left
        by a rollout that died is undone first: all the traffic goes back to the
        revision the canary split with."""
        service = self._end_left_canary(self._get())
        env = _template_env(service.template)
        ready = service.latest_ready_revision == service.latest_created_revision
        serves = _serving(service) == service.latest_ready_revision
        if pinned(env) == (model, version) and ready and serves and service.latest_ready_revision:
            # A redelivered deploy event: the revision exists; it is probed again.
            return Candidate(
                model, version, _short(service.latest_ready_revision), service.uri,
                self._probe(service.uri),
            )  # fmt: skip

        from google.cloud import run_v2

        previous_template = run_v2.RevisionTemplate(service.template)
        previous_revision = _serving(service)
        pin = pin_env(model, version)
        if self.signing_key is not None:
            pin[SIGNING_KEY_ENV] = self.signing_key
        _set_env(service.template, pin)
        service.template.revision = ""  # let Cloud Run name the new revision
        dark = self.metrics is not None and bool(previous_revision)
        if dark:  # a canary: the new revision, named here, gets no traffic yet
            new_revision = f"{_short(self.service_name)}-v{version}-{secrets.token_hex(3)}"
            service.template.revision = new_revision
            service.traffic = [
                _to_revision(_short(previous_revision), 100),
                _to_revision(new_revision, 0, tag=CANARY_TAG),
            ]
        try:
            updated = self._update(service)
        except DeploymentFailed as exc:
            # The revision never became ready: Cloud Run left traffic where it was; put
            # the template back too, so the service's spec says what serves.
            with contextlib.suppress(ModelrailError):
                self._roll_back(self._get(), previous_template)
            raise DeploymentFailed(
                f"{model} v{version} did not become ready on {self.service_name}: {exc.message}",
                {"model": model, "version": version, "kept_revision": _short(previous_revision)},
            ) from exc
        revision = _short(updated.latest_ready_revision)
        put_back = (updated, previous_template, _short(previous_revision))
        if dark:  # probed at its tag's own URL, as it has no traffic
            tagged = next(s.uri for s in updated.traffic_statuses if s.tag == CANARY_TAG)
            return Candidate(
                model, version, revision, updated.uri, self._probe(tagged),
                handle=(*put_back, "canary"),
            )  # fmt: skip
        return Candidate(
            model, version, revision, updated.uri, self._probe(updated.uri), handle=put_back
        )

    def promote(self, candidate: Candidate) -> Deployment:
        """The candidate's revision has the traffic already (``start``), or, a canary's,
        gets all of it now."""
        probe = candidate.probe
        if _is_canary(candidate):
            self._forget(candidate)
            self._move_traffic([_to_revision(candidate.revision, 100)])
            probe = self._probe(candidate.url)
        return Deployment(
            candidate.url, candidate.revision, candidate.model, candidate.version, probe
        )

    def discard(self, candidate: Candidate) -> str:
        if candidate.handle is None:  # a revision that served before this rollout
            return f"revision {candidate.revision} was serving before and still is"
        updated, previous_template, previous_revision = candidate.handle[:3]
        if _is_canary(candidate):
            self._forget(candidate)
            self._move_traffic([_to_revision(previous_revision, 100)])
            return f"all the traffic is back on revision {previous_revision}"
        self._roll_back(updated, previous_template)
        return f"rolled back to revision {previous_revision or '(none)'}"

    # -- a canary (service.rollout.Splitting) ----------------------------------------
    def split(self, candidate: Candidate, percent: float) -> None:
        """``percent`` of the requests to the candidate's revision, the rest to the one
        that served before; ``observe`` counts from now on."""
        if not _is_canary(candidate):
            raise DeploymentFailed(
                f"revision {candidate.revision} was not started as a canary (it serves "
                f"all of {self.service_name}'s traffic already): it cannot be given a share"
            )
        previous_revision = candidate.handle[2]
        share = round(percent)
        self._move_traffic(
            [
                _to_revision(candidate.revision, share, tag=CANARY_TAG),
                _to_revision(previous_revision, 100 - share),
            ]
        )
        self._split_at[candidate.revision] = datetime.now(UTC)

    def observe(self, candidate: Candidate) -> dict[str, Any]:
        """What the candidate's revision (``new``) and the previous one (``old``)
        answered since the split, from Cloud Monitoring; Cloud Run restarts what dies,
        so nothing ``exited``."""
        if self.metrics is None:
            raise DeploymentFailed(f"{self.service_name} reads no metrics: no canary")
        start = self._split_at[candidate.revision]
        last = self._observed.get(candidate.revision)
        fresh = last is not None and time.monotonic() - last[0] < self.observe_every_s
        if last is not None and fresh and last[1]["since"] == start:
            return last[1]
        end, service = datetime.now(UTC), _short(self.service_name)
        seen = {
            "new": self.metrics.window(service, candidate.revision, start, end),
            "old": self.metrics.window(service, candidate.handle[2], start, end),
            "exited": [],
            "since": start,
        }
        self._observed[candidate.revision] = (time.monotonic(), seen)
        return seen

    def _forget(self, candidate: Candidate) -> None:
        """The canary's step ended: nothing more is read for it."""
        self._split_at.pop(candidate.revision, None)
        self._observed.pop(candidate.revision, None)

    def _end_left_canary(self, service: run_v2.Service) -> run_v2.Service:
        """``service`` with the split a dead rollout left undone: a revision tagged as the
        canary with a share means the rollout that gave it never ended it (``promote``
        and ``discard`` leave no canary tag with traffic)."""
        left = [target for target in service.traffic if target.tag == CANARY_TAG and target.percent]
        kept = [target for target in service.traffic if target.tag != CANARY_TAG and target.percent]
        if not left or not kept:
            return service
        self._move_traffic([_to_revision(max(kept, key=lambda t: t.percent).revision, 100)])
        return self._get()

    def _move_traffic(self, traffic: list[Any]) -> None:
        """Set the service's traffic (a new generation, no new revision)."""
        service = self._get()
        service.traffic = traffic
        self._update(service)

    # -- steps -------------------------------------------------------------------
    def _get(self) -> run_v2.Service:
        from google.api_core import exceptions

        try:
            return self.client.get_service(name=self.service_name, timeout=self.call_timeout_s)
        except exceptions.GoogleAPICallError as exc:
            raise _api_error(f"reading service {self.service_name}", exc) from exc
        except OSError as exc:
            raise TransientError(f"reading service {self.service_name}: {exc}") from exc

    def _revision_env(self, revision: str) -> dict[str, str]:
        from google.api_core import exceptions
        from google.cloud import run_v2

        with self._lock:
            if self._revisions is None:
                self._revisions = run_v2.RevisionsClient(**_client_kwargs(self.api_endpoint))
        try:
            found = self._revisions.get_revision(name=revision, timeout=self.call_timeout_s)
        except exceptions.GoogleAPICallError as exc:
            raise _api_error(f"reading revision {revision}", exc) from exc
        except OSError as exc:  # unreachable, or no answer within the call's timeout
            raise TransientError(f"reading revision {revision}: {exc}") from exc
        if not found.containers:
            return {}
        return {var.name: var.value for var in found.containers[0].env}

    def _update(self, service: run_v2.Service) -> run_v2.Service:
        """Update the service, then wait for its rollout by reading the service itself.

        ``service`` is as read (its ``etag`` makes the update conditional). Returns the
        service once the new generation serves; raises ``DeploymentFailed`` when Cloud
        Run reports the rollout failed and ``TransientError`` past ``rollout_timeout_s``.
        """
        from google.api_core import exceptions

        generation_before = int(service.generation)
        created_before = service.latest_created_revision
        try:
            operation = self.client.update_service(service=service, timeout=self.call_timeout_s)
        except exceptions.Aborted as exc:  # a concurrent update changed the etag
            raise TransientError(f"service {self.service_name} changed meanwhile: {exc}") from exc
        except exceptions.GoogleAPICallError as exc:
            raise _api_error(f"updating service {self.service_name}", exc) from exc
        except OSError as exc:
            raise TransientError(f"updating service {self.service_name}: {exc}") from exc
        # The operation carries the updated Service as metadata in the call's own
        # response; reading it makes no request. Without it, the conditional update
        # bumped the generation by one.
        accepted = operation.metadata
        generation = int(accepted.generation) if accepted is not None else 0
        return self._await_rollout(generation or generation_before + 1, created_before)

    def _await_rollout(self, generation: int, created_before: str) -> run_v2.Service:
        deadline = time.monotonic() + self.rollout_timeout_s
        delay = _POLL_FIRST_S
        while True:
            service = self._get()
            outcome = _rollout_outcome(service, generation, created_before)
            if outcome is True:
                return service
            if outcome is False:
                condition = service.terminal_condition
                raise DeploymentFailed(
                    condition.message or f"rollout ended in {condition.state.name}",
                    {
                        "service": self.service_name,
                        "generation": generation,
                        "revision": _short(service.latest_created_revision),
                    },
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(
                    f"rollout of {self.service_name} generation {generation} still running "
                    f"after {self.rollout_timeout_s:g} s"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX_S)

    def _roll_back(
        self, updated: run_v2.Service, previous_template: run_v2.RevisionTemplate
    ) -> None:
        from google.cloud import run_v2

        service = run_v2.Service(updated)
        service.template = previous_template
        service.template.revision = ""
        try:
            self._update(service)
        except DeploymentFailed as exc:  # the previous revision itself no longer starts
            raise DeploymentFailed(
                f"rolling {self.service_name} back failed too: {exc.message}", exc.details
            ) from exc

    def _probe(self, url: str) -> Probe:
        """Requests to the service at ``url``, as its invoker (an ID token in the cloud,
        fetched at the first request: a deployment read only for its URL costs none)."""
        tokens: list[dict[str, str]] = []

        def probe(
            method: str, path: str, body: bytes | None, headers: Mapping[str, str], timeout_s: float
        ) -> tuple[int, bytes]:
            if not tokens:
                tokens.append(self._auth_headers(url))
            auth = tokens[0]
            response = _http.request(
                method, url.rstrip("/") + path, body=body, headers={**headers, **auth},
                timeout=timeout_s, retries=False,
            )  # fmt: skip
            return response.status, response.data

        return probe

    def _auth_headers(self, url: str) -> dict[str, str]:
        """An ID token for the service in the cloud (it has no public invoker)."""
        if self.api_endpoint is not None:
            return {}
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token

        token = id_token.fetch_id_token(Request(), url)  # type: ignore[no-untyped-call]
        return {"Authorization": f"Bearer {token}"}


def _rollout_outcome(service: run_v2.Service, generation: int, created_before: str) -> bool | None:
    """Whether the rollout of ``generation`` succeeded; None while it is still running.

    Cloud Run's contract (``Service.reconciling``): once reconciliation is over, a success
    has ``observed_generation`` equal to ``generation`` and ``latest_ready_revision`` equal
    to ``latest_created_revision``; a failure leaves ``observed_generation`` and
    ``latest_ready_revision`` at the last serving revision and says why in
    ``terminal_condition``.
    """
    from google.cloud import run_v2

    if service.reconciling or service.generation < generation:
        return None  # the update is not visible yet, or still being acted upon
    state = service.terminal_condition.state
    caught_up = service.observed_generation >= generation
    if caught_up and state == run_v2.Condition.State.CONDITION_SUCCEEDED:
        return service.latest_ready_revision == service.latest_created_revision
    # A failed condition left over from an earlier rollout is not this one's verdict:
    # this one's failure names the revision it created (or has caught up).
    if state == run_v2.Condition.State.CONDITION_FAILED and (
        caught_up or service.latest_created_revision != created_before
    ):
        return False
    return None


def _serving(service: run_v2.Service) -> str:
    """The revision with the most of the service's traffic (``traffic_statuses``, what
    Cloud Run routes; ``LATEST``: the latest ready revision); "" when none is ready."""
    statuses = sorted(service.traffic_statuses, key=lambda status: -status.percent)
    from google.cloud import run_v2

    latest = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
    if statuses and statuses[0].percent and statuses[0].type_ != latest:
        name = statuses[0].revision
        return name if "/" in name else f"{service.name}/revisions/{name}"
    return service.latest_ready_revision


def _to_revision(revision: str, percent: int, *, tag: str = "") -> Any:
    from google.cloud import run_v2

    return run_v2.TrafficTarget(
        type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
        revision=_short(revision),
        percent=percent,
        tag=tag,
    )


def _is_canary(candidate: Candidate) -> bool:
    return candidate.handle is not None and len(candidate.handle) == 4


def _short(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def _template_env(template: run_v2.RevisionTemplate) -> dict[str, str]:
    if not template.containers:
        return {}
    return {var.name: var.value for var in template.containers[0].env}


def _set_env(template: run_v2.RevisionTemplate, values: Mapping[str, str]) -> None:
    from google.cloud import run_v2

    if not template.containers:
        template.containers.append(run_v2.Container())
    container = template.containers[0]
    kept = [var for var in container.env if var.name not in values]
    container.env = [*kept, *(run_v2.EnvVar(name=k, value=v) for k, v in values.items())]
