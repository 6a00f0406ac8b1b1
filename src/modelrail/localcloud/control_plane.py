"""A local Cloud Run control plane: the slice of the Cloud Run Admin API v2 (REST) that
``CloudRunDeployer`` and ``CloudRunJobLauncher`` call, served on 127.0.0.1.

The adapters reach it through ``client_options.api_endpoint`` with anonymous
credentials, exactly as they reach ``run.googleapis.com`` in the cloud, so no adapter
code knows it is local. Behind the API:

- **services** (get, patch; the patch returns a long-running operation): each model's
  staging service and its production service (``modelrail-production-<model>``, as
  Terraform names it), each backed by its own local supervisor. A patched template that
  pins ``MODELRAIL_MODEL_NAME``/``MODELRAIL_MODEL_VERSION`` becomes a new "revision",
  rolled out by the service's local deployer (which starts a server pinned to that
  version, smoke-tests it and retires the old one). The service resource
  tells the rollout as Cloud Run's does: the patch bumps ``generation`` and sets
  ``reconciling``, ``latestCreatedRevision`` and a reconciling ``terminalCondition``;
  when the server has been replaced, ``reconciling`` is false,
  ``observedGeneration`` equals ``generation``, ``latestReadyRevision`` equals
  ``latestCreatedRevision`` and the condition has succeeded. A revision that never
  becomes ready ends the rollout with a failed condition while ``observedGeneration``
  and ``latestReadyRevision`` stay at the last serving revision (traffic stays where it
  was); the operation fails too. A stale ``etag`` is refused with ABORTED.
- **jobs** (run; get executions and the run's operation): each execution is one
  subprocess per task (``python -m modelrail.entry.train_job``; for the validate job,
  when the stack's settings name one, ``python -m modelrail.entry.validate_job``; for
  the batch job, ``python -m modelrail.entry.batch_job``) with the request's container
  overrides in its environment and Cloud Run's ``CLOUD_RUN_*`` variables. A job runs
  the task count it was given (``job_tasks``, as Terraform gives the batch job its
  ``task_count``) or the run request's ``overrides.taskCount``, all tasks at once; the
  execution succeeds when every task has exited 0.

The same server also serves the Artifact Registry API slice the register stage's
adapter calls (``modelrail.localcloud.artifact_registry``), the Vertex AI Model Registry
slice of the register and deploy stages' (``modelrail.localcloud.vertex_ai``), and the
Cloud KMS slice that register signs manifests with and the staging service verifies
them with (``modelrail.localcloud.kms``).

State (services, revisions) is kept in ``<home>/stack/control-plane.json`` so a
restarted control plane still knows which version the service is pinned to; a rollout
that was in progress when it stopped is failed when it starts again.

**Reconciliation** (``_reconcile``, at start and every 5 s): the backend serves the
latest ready revision (``keep_serving``: Cloud Run's own promise, kept after a restart
or a server's death), and each service converges to the registry's alias of its name
(staging, production) through the unchanged Cloud Run adapter on this very API
(``modelrail.service.reconcile.Reconciler``, as the cloud's sweep does on Cloud Run), so a
deploy function killed mid-rollout leaves a version that the alias does not name
serving for a bounded time only (``docs/reliability.md``). The
method and path of recent requests are kept in ``requests`` (tests use them to prove
which API calls an adapter makes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import orjson

from modelrail.adapters.local.staging import PRODUCTION, STAGING, LocalStagingDeployer
from modelrail.kernel.events import utcnow
from modelrail.kernel.ports import Candidate, Deployer
from modelrail.kernel.processes import write_json
from modelrail.localcloud.artifact_registry import LocalArtifactRegistry
from modelrail.localcloud.google_api import ApiError, ApiRequest, ApiRoutes, EmulatedApi
from modelrail.localcloud.kms import LocalKms
from modelrail.localcloud.vertex_ai import LocalVertexAi
from modelrail.service.reconcile import RECONCILE_EVERY_S
from modelrail.service.rollout import Splitting
from modelrail.settings.process import Settings
from modelrail.settings.service import pinned

_TYPE = "type.googleapis.com/google.cloud.run.v2."
_NAME = r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_ROUTES = [
    ("GET", re.compile(rf"^/v2/(?P<name>{_NAME}/services/[^/:]+)$"), "get_service"),
    ("PATCH", re.compile(rf"^/v2/(?P<name>{_NAME}/services/[^/:]+)$"), "patch_service"),
    ("POST", re.compile(rf"^/v2/(?P<name>{_NAME}/jobs/(?P<job>[^/:]+)):run$"), "run_job"),
    ("GET", re.compile(rf"^/v2/(?P<name>{_NAME}/jobs/(?P<job>[^/:]+))$"), "get_job"),
    (
        "GET",
        re.compile(rf"^/v2/(?P<name>{_NAME}/jobs/[^/:]+/executions/(?P<execution>[^/:]+))$"),
        "get_execution",
    ),
    ("GET", re.compile(rf"^/v2/(?P<name>{_NAME}/operations/(?P<operation>[^/:]+))$"), "get_op"),
    (
        "GET",
        re.compile(rf"^/v2/(?P<name>{_NAME}/services/[^/:]+/revisions/(?P<revision>[^/:]+))$"),
        "get_revision",
    ),
    ("GET", re.compile(r"^/healthz$"), "healthz"),
]  # fmt: skip


def _env_of(template: Mapping[str, Any]) -> dict[str, str]:
    containers = template.get("containers") or [{}]
    return {e["name"]: str(e.get("value", "")) for e in containers[0].get("env", []) if "name" in e}


def _condition(state: str, message: str = "") -> dict[str, Any]:
    return {
        "type": "Ready",
        "state": state,
        "message": message,
        "lastTransitionTime": utcnow(),
    }


@dataclasses.dataclass
class _Execution:
    name: str
    job: str
    processes: list[subprocess.Popen[bytes]]  # one per task
    log: Path
    create_time: str
    completion_time: str | None = None
    exit_code: int | None = None  # the first failed task's, else 0, once all have exited
    succeeded: int = 0
    failed: int = 0

    def refresh(self) -> None:
        if self.exit_code is not None:
            return
        codes = [process.poll() for process in self.processes]
        self.succeeded = sum(code == 0 for code in codes)
        self.failed = sum(code not in (None, 0) for code in codes)
        if all(code is not None for code in codes):
            self.exit_code = next((code for code in codes if code), 0)
            self.completion_time = utcnow()

    def resource(self) -> dict[str, Any]:
        self.refresh()
        running = self.exit_code is None
        succeeded = self.exit_code == 0
        state = (
            "CONDITION_RECONCILING"
            if running
            else "CONDITION_SUCCEEDED"
            if succeeded
            else "CONDITION_FAILED"
        )
        body: dict[str, Any] = {
            "@type": f"{_TYPE}Execution",
            "name": self.name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
            "job": self.job.rsplit("/", 1)[-1],
            "createTime": self.create_time,
            "startTime": self.create_time,
            "taskCount": len(self.processes),
            "parallelism": len(self.processes),
            "runningCount": len(self.processes) - self.succeeded - self.failed,
            "succeededCount": self.succeeded,
            "failedCount": self.failed,
            "reconciling": running,
            "logUri": f"file://{self.log}",
            "conditions": [
                {
                    "type": "Completed",
                    "state": state,
                    "message": "" if running or succeeded else f"exit status {self.exit_code}",
                }
            ],
        }
        if self.completion_time:
            body["completionTime"] = self.completion_time
        return body


class ControlPlane:
    """The state behind the API; thread-safe. ``serve()`` puts it on a port."""

    def __init__(
        self,
        *,
        project: str,
        region: str,
        services: Callable[[str], tuple[str, str] | None],
        backend: Callable[[str], Deployer],
        job_command: Sequence[str],
        job_env: Mapping[str, str],
        state_dir: Path,
        service_env: Mapping[str, str] | None = None,
        packages: LocalArtifactRegistry | None = None,
        models: LocalVertexAi | None = None,
        kms: LocalKms | None = None,
        job_commands: Mapping[str, Sequence[str]] | None = None,
        job_tasks: Mapping[str, int] | None = None,
    ) -> None:
        self.project, self.region = project, region
        # A job's own command by its short name (Terraform gives each job its image's);
        # any other job runs ``job_command``.
        self.job_commands = {job: list(argv) for job, argv in (job_commands or {}).items()}
        # A job's task count by its short name (Terraform's ``task_count``); others run one.
        self.job_tasks = dict(job_tasks or {})
        self.packages = packages
        self.models = models
        self.kms = kms
        # The services it serves (each model's staging and production): a service's
        # short name -> the model it is for and where it answers (None: no such
        # service), and each service's backend, by the service's short name.
        self.known_services = services
        self.backend = backend
        self.service_env = dict(service_env or {})
        self.job_command = list(job_command)
        self.job_env = dict(job_env)
        self.state_dir = state_dir
        self._state_file = state_dir / "control-plane.json"
        self._lock = threading.RLock()
        self._operations: dict[str, dict[str, Any]] = {}
        self._executions: dict[str, _Execution] = {}
        self._rollouts: list[threading.Thread] = []
        # A production canary's revision started with less than all the traffic, by
        # service: its revision and the backend's candidate (the supervisor connection
        # that splits the traffic, and counts each server's answers).
        self._candidates: dict[str, tuple[str, Candidate]] = {}
        self.base_url = ""  # where it answers (server()): the tags' URLs
        self.monitoring = _LocalMonitoring(self)
        self.requests: deque[tuple[str, str]] = deque(maxlen=1000)
        # Held around every call to the backend: a rollout and keep_serving take turns.
        self._backend_lock = threading.Lock()
        self.services: dict[str, dict[str, Any]] = self._load_services()
        for stored in self.services.values():
            if stored.get("reconciling"):
                # Its rollout died with the previous process: it failed, traffic stays on
                # the last ready revision (keep_serving puts it back on the backend).
                message = (
                    f"Revision '{stored['latestCreatedRevision']}' is not ready: the "
                    "control plane stopped during its rollout."
                )
                stored.update(
                    reconciling=False, terminalCondition=_condition("CONDITION_FAILED", message)
                )

    # -- names and persistence ---------------------------------------------------
    def resource_name(self, collection: str, short: str) -> str:
        return f"projects/{self.project}/locations/{self.region}/{collection}/{short}"

    def _new_service(self, name: str, url: str, env: Mapping[str, str]) -> dict[str, Any]:
        created = utcnow()
        return {
            "@type": f"{_TYPE}Service",
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "generation": "1",
            "createTime": created,
            "updateTime": created,
            "uri": url,
            "urls": [url],
            "template": {
                "containers": [
                    {
                        "image": "modelrail-staging:local",
                        "env": [{"name": k, "value": v} for k, v in env.items()],
                    }
                ]
            },
            "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
            "observedGeneration": "1",
            "terminalCondition": _condition("CONDITION_SUCCEEDED"),
            "latestReadyRevision": "",
            "latestCreatedRevision": "",
            "reconciling": False,
            "etag": f'"{secrets.token_hex(8)}"',
        }

    def _load_services(self) -> dict[str, dict[str, Any]]:
        try:
            services: dict[str, dict[str, Any]] = orjson.loads(self._state_file.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        return services

    def _save_services(self) -> None:
        write_json(self._state_file, self.services)

    def _service(self, name: str) -> dict[str, Any]:
        """The service ``name``, created as it first comes up (what Terraform does for
        each model in the cloud); NOT_FOUND for a service of no model."""
        if name not in self.services:
            known = self.known_services(name.rsplit("/", 1)[-1])
            if known is None:
                raise ApiError(404, "NOT_FOUND", f"Resource '{name}' was not found")
            self.services[name] = self._new_service(name, known[1], self.service_env)
            self._save_services()
        return self.services[name]

    # -- operations --------------------------------------------------------------
    def _new_operation(self, metadata: dict[str, Any]) -> dict[str, Any]:
        operation_id = str(uuid.uuid4())
        operation = {
            "name": f"projects/{self.project}/locations/{self.region}/operations/{operation_id}",
            "metadata": metadata,
            "done": False,
        }
        self._operations[operation_id] = operation
        return operation

    def get_operation(self, operation_id: str) -> dict[str, Any]:
        with self._lock:
            try:
                operation = self._operations[operation_id]
            except KeyError:
                raise ApiError(404, "NOT_FOUND", f"Operation {operation_id} not found") from None
            metadata = operation["metadata"]
            if metadata.get("@type") == f"{_TYPE}Execution":
                execution = self._executions[metadata["name"]]
                resource = execution.resource()
                operation["metadata"] = resource
                if execution.exit_code is not None and not operation["done"]:
                    operation["done"] = True
                    if execution.exit_code == 0:
                        operation["response"] = resource
                    else:
                        operation["error"] = {
                            "code": 2,  # UNKNOWN: the task failed, see its log
                            "message": f"Task {metadata['name']}-0 failed with exit status "
                            f"{execution.exit_code}; log: {execution.log}",
                        }
            return dict(operation)

    # -- services ----------------------------------------------------------------
    def _public(self, service: Mapping[str, Any]) -> dict[str, Any]:
        """The Service resource as the API shows it (without the revision store), with
        the traffic as routed (``trafficStatuses``: a tag's own URL answers on this
        server, ``/tags/<service>/<tag>/...``)."""
        short = service["name"].rsplit("/", 1)[-1]
        statuses = [
            {
                **target,
                **({"uri": f"{self.base_url}/tags/{short}/{target['tag']}"}
                   if target.get("tag") else {}),
            }
            for target in service.get("traffic", [])
        ]  # fmt: skip
        return {"@type": f"{_TYPE}Service", **{k: v for k, v in service.items()
                                              if k not in ("revisions", "@type")},
                "trafficStatuses": statuses}  # fmt: skip

    def get_service(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._public(self._service(name))

    def get_revision(self, name: str) -> dict[str, Any]:
        with self._lock:
            service = self._service(name.rsplit("/revisions/", 1)[0])
            try:
                return {"@type": f"{_TYPE}Revision", **service.get("revisions", {})[name]}
            except KeyError:
                raise ApiError(404, "NOT_FOUND", f"Revision '{name}' was not found") from None

    def _updatable(self, name: str, etag: str | None) -> dict[str, Any]:
        """The service ``name``, which a patch read as ``etag`` may update now (ABORTED
        otherwise). Called holding ``_lock``."""
        service = self._service(name)
        if etag and etag != service["etag"]:
            raise ApiError(
                409, "ABORTED", f"The etag {etag} does not match the service's current etag"
            )
        if service["reconciling"]:
            raise ApiError(409, "ABORTED", f"Service {name} is being updated; retry later")
        return service

    def patch_service(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            service = self._updatable(name, body.get("etag"))
            template = body.get("template") or service["template"]
            traffic = _traffic(body.get("traffic") or service["traffic"])
            env = _env_of(template)
            generation = int(service["generation"]) + 1
            # The same template (no new revision named) with other traffic: Cloud Run
            # moves the traffic and creates no revision.
            same = env == _env_of(service["template"]) and template.get("revision") in (
                None, "", service["template"].get("revision"),
            )  # fmt: skip
            retarget = same and traffic != _traffic(service["traffic"])
            if not retarget:
                return self._new_revision(name, service, template, env, traffic, generation)
        return self._retarget(name, body.get("etag"), traffic)

    def _new_revision(
        self,
        name: str,
        service: dict[str, Any],
        template: dict[str, Any],
        env: Mapping[str, str],
        traffic: list[dict[str, Any]],
        generation: int,
    ) -> dict[str, Any]:
        """A patch that makes a revision: its rollout runs in a thread of its own, and
        the operation says when it ended. Called holding ``_lock``."""
        short = name.rsplit("/", 1)[-1]
        named = template.get("revision") or f"{short}-{generation:05d}-{secrets.token_hex(2)[:3]}"
        revision = f"{name}/revisions/{named}"
        template = {**template, "revision": named}
        service.update(
            generation=str(generation),
            template=template,
            traffic=traffic,
            reconciling=True,
            latestCreatedRevision=revision,
            terminalCondition=_condition("CONDITION_RECONCILING"),
            updateTime=utcnow(),
            etag=f'"{secrets.token_hex(8)}"',
        )
        operation = self._new_operation(self._public(service))
        self._save_services()  # a restart then knows this rollout was cut short
        thread = threading.Thread(
            target=self._roll_out,
            args=(name, template, env, revision, operation),
            name=f"rollout-{revision}",
            daemon=True,
        )
        self._rollouts.append(thread)
        thread.start()
        return dict(operation)

    def _roll_out(
        self,
        name: str,
        template: dict[str, Any],
        env: Mapping[str, str],
        revision: str,
        operation: dict[str, Any],
    ) -> None:
        error: str | None = None
        try:
            with self._backend_lock:
                pin = pinned(env)
                backend = self.backend(name.rsplit("/", 1)[-1])
                with self._lock:
                    share = _share(self.services[name], revision, latest=True)
                    earlier = self._candidates.pop(name, None)
                if earlier is not None:
                    backend.discard(earlier[1])
                if pin is not None and share < 100:  # a canary: it serves a share, or none
                    candidate = backend.start(*pin)
                    with self._lock:
                        self._candidates[name] = (revision, candidate)
                    if share:
                        _splitting(backend).split(candidate, share)
                elif pin is not None:
                    _run_revision(backend, *pin)
                else:  # a template with no model pinned serves nothing here
                    backend.stop()
        except Exception as exc:  # any failure means the revision never became ready
            error = f"Revision '{revision}' is not ready and cannot serve traffic. {exc}"
        with self._lock:
            service = self.services[name]
            service["reconciling"] = False
            revisions = service.setdefault("revisions", {})
            revisions[revision] = {
                "name": revision,
                "service": name.rsplit("/", 1)[-1],
                "containers": template.get("containers", []),
                "createTime": utcnow(),
                "conditions": [
                    _condition("CONDITION_SUCCEEDED" if error is None else "CONDITION_FAILED",
                               error or "")
                ],
            }  # fmt: skip
            if error is None:
                service["observedGeneration"] = service["generation"]
                service["latestReadyRevision"] = revision
                service["terminalCondition"] = _condition("CONDITION_SUCCEEDED")
                operation["response"] = self._public(service)
            else:
                # Traffic stays on the last ready revision, as in Cloud Run: so do
                # observedGeneration and latestReadyRevision.
                service["terminalCondition"] = _condition("CONDITION_FAILED", error)
                operation["error"] = {"code": 9, "message": error}  # FAILED_PRECONDITION
            operation["metadata"] = self._public(service)
            operation["done"] = True
            self._save_services()

    def _retarget(self, name: str, etag: str | None, traffic: list[Any]) -> dict[str, Any]:
        """A patch of the traffic alone (no new revision): the canary's revision gets
        its share of the new connections (``split``), all of them (``promote``) or none
        (``discard``), then the generation is observed. The backend's lock is taken
        before ``_lock``, as a rollout and ``keep_serving`` take them: in the other
        order a rollout starting meanwhile (staging's, a canary's) and this move would
        wait for each other for good."""
        with self._backend_lock, self._lock:
            service = self._updatable(name, etag)  # as it is now, not as the patch read it
            generation = int(service["generation"]) + 1
            held = self._candidates.get(name)
            if held is not None:
                revision, candidate = held
                share = _share({**service, "traffic": traffic}, revision, latest=False)
                backend = self.backend(name.rsplit("/", 1)[-1])
                try:
                    if share >= 100:
                        backend.promote(candidate)
                    elif share > 0:
                        _splitting(backend).split(candidate, share)
                    else:
                        backend.discard(candidate)
                except Exception as exc:
                    self._candidates.pop(name, None)
                    raise ApiError(
                        409, "FAILED_PRECONDITION", f"moving {name}'s traffic: {exc}"
                    ) from exc
                if not 0 < share < 100:
                    self._candidates.pop(name, None)
            service.update(
                generation=str(generation),
                observedGeneration=str(generation),
                traffic=traffic,
                updateTime=utcnow(),
                etag=f'"{secrets.token_hex(8)}"',
            )
            self._save_services()
            operation = self._new_operation(self._public(service))
            operation.update(done=True, response=self._public(service))
            return dict(operation)

    def candidate(self, name: str) -> tuple[str, Candidate] | None:
        """The service's canary revision and its backend candidate, if one runs."""
        with self._lock:
            return self._candidates.get(name)

    def _ready_pin(self, service: Mapping[str, Any]) -> tuple[str, int] | None:
        """The model and version the serving revision (the one with the most of the
        traffic; ``LATEST``: the latest ready one) is pinned to, if any."""
        ready = _serving(service)
        revision = service.get("revisions", {}).get(ready)
        if revision is not None:
            env = _env_of(revision)
        elif ready and ready == service.get("latestCreatedRevision"):
            env = _env_of(service["template"])
        else:
            return None
        return pinned(env)

    def keep_serving(self) -> None:
        """What Cloud Run does for a service between rollouts: its latest ready revision
        serves. Puts that revision's version back on the backend after a restart, or
        after the staging server (or its supervisor) died; leaves a rollout in progress
        alone."""
        for name in list(self.services):
            with self._lock:
                wanted = self._ready_pin(self.services[name])
            if wanted is None or name in self._candidates:  # a canary runs: it decides
                continue
            backend = self.backend(name.rsplit("/", 1)[-1])
            with contextlib.suppress(Exception):
                current = backend.current()
                if current is not None and (current.model, current.version) == wanted:
                    continue
            with self._backend_lock:
                with self._lock:  # a rollout may have begun meanwhile: it decides then
                    service = self.services[name]
                    if service["reconciling"] or self._ready_pin(service) != wanted:
                        continue
                try:
                    _run_revision(backend, *wanted)
                except Exception as exc:  # the service stays not-ready; the log says why
                    print(f"could not serve {name} at {wanted}: {exc}", file=sys.stderr)

    def restore(self) -> None:
        """Bring the staging server back to the ready revision after a restart."""
        self.keep_serving()

    # -- jobs --------------------------------------------------------------------
    def get_job(self, name: str, job: str) -> dict[str, Any]:
        return {
            "@type": f"{_TYPE}Job",
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        }

    def run_job(self, name: str, job: str, body: Mapping[str, Any]) -> dict[str, Any]:
        overrides: dict[str, str] = {}
        for container in (body.get("overrides") or {}).get("containerOverrides", []):
            overrides.update(_env_of({"containers": [container]}))
        tasks = int((body.get("overrides") or {}).get("taskCount") or self.job_tasks.get(job, 1))
        execution_name = f"{name}/executions/{job}-{secrets.token_hex(3)[:5]}"
        short = execution_name.rsplit("/", 1)[-1]
        log = self.state_dir / "logs" / "executions" / f"{short}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **self.job_env,
            **overrides,
            "CLOUD_RUN_JOB": job,
            "CLOUD_RUN_EXECUTION": short,
            "CLOUD_RUN_TASK_COUNT": str(tasks),
            "CLOUD_RUN_TASK_ATTEMPT": "0",
        }
        with self._lock, open(log, "ab") as log_file:
            processes = [
                subprocess.Popen(
                    self.job_commands.get(job, self.job_command),
                    env={**env, "CLOUD_RUN_TASK_INDEX": str(index)},
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
                for index in range(tasks)
            ]
            execution = _Execution(execution_name, name, processes, log, utcnow())
            self._executions[execution_name] = execution
            # Reaped as soon as it exits, asked about or not: no zombie stays behind.
            threading.Thread(
                target=self._reap, args=(execution,), name=f"reap-{short}", daemon=True
            ).start()
            operation = self._new_operation(execution.resource())
            return dict(operation)

    def _reap(self, execution: _Execution) -> None:
        for process in execution.processes:
            process.wait()
        with self._lock:
            execution.refresh()

    def get_execution(self, name: str) -> dict[str, Any]:
        with self._lock:
            try:
                return self._executions[name].resource()
            except KeyError:
                raise ApiError(404, "NOT_FOUND", f"Execution '{name}' was not found") from None

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Wait for rollouts and job executions in flight (for an orderly shutdown)."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self._rollouts):
            thread.join(max(0.0, deadline - time.monotonic()))
        for execution in list(self._executions.values()):
            for process in execution.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout_s: float = 60.0) -> None:
        """Shut down in order: wait for what is in flight (``wait_idle``), then discard
        every canary revision's candidate whose rollout never ended (its caller died),
        so that stopping the services' supervisors waits on no rollout of its own."""
        self.wait_idle(timeout_s)
        with self._lock:
            left, self._candidates = dict(self._candidates), {}
        for name, (_, candidate) in left.items():
            with contextlib.suppress(Exception):
                self.backend(name.rsplit("/", 1)[-1]).discard(candidate)

    # -- HTTP --------------------------------------------------------------------
    def dispatch(self, method: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.requests.append((method, path))
        matched = False
        for route_method, pattern, action in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            matched = True
            if route_method != method:
                continue
            groups = match.groupdict()
            if groups and (groups["project"], groups["location"]) != (self.project, self.region):
                raise ApiError(404, "NOT_FOUND", f"Resource '{groups['name']}' was not found")
            if action == "get_service":
                return self.get_service(groups["name"])
            if action == "patch_service":
                return self.patch_service(groups["name"], body)
            if action == "run_job":
                return self.run_job(groups["name"], groups["job"], body)
            if action == "get_revision":
                return self.get_revision(groups["name"])
            if action == "get_job":
                return self.get_job(groups["name"], groups["job"])
            if action == "get_execution":
                return self.get_execution(groups["name"])
            if action == "get_op":
                return self.get_operation(groups["operation"])
            return {"status": "ok"}
        if matched:
            raise ApiError(405, "UNIMPLEMENTED", f"{method} {path} is not supported")
        raise ApiError(
            404, "NOT_FOUND", f"{method} {path}: the local control plane has no such API"
        )

    def server(self, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        control_plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                path, _, query = self.path.partition("?")
                if path.startswith("/tags/"):
                    self._tagged(path.removeprefix("/tags/"), query)
                    return
                # Another Google API's slice (Artifact Registry, Vertex AI, Cloud KMS),
                # if it is one.
                api = next(
                    (
                        api
                        for api in (
                            control_plane.packages,
                            control_plane.models,
                            control_plane.kms,
                            control_plane.monitoring,
                        )
                        if api is not None and api.handles(path)
                    ),
                    None,
                )
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    raw = self.rfile.read(length) if length else b""
                    if api is not None:
                        control_plane.requests.append((self.command, path))
                        content_type = self.headers.get("Content-Type", "")
                        result = api.dispatch(self.command, path, query, content_type, raw)
                    else:
                        body = orjson.loads(raw) if raw else {}
                        result = control_plane.dispatch(self.command, path, body)
                    status = 200
                except ApiError as exc:
                    result, status = exc.body(), exc.code
                except (ValueError, orjson.JSONDecodeError) as exc:
                    result = ApiError(400, "INVALID_ARGUMENT", str(exc)).body()
                    status = 400
                data = orjson.dumps(result)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _tagged(self, path: str, query: str) -> None:
                """A tagged revision's own URL: the canary's server, whatever its share
                of the service's traffic (``/tags/<service>/<tag>/<path>``)."""
                control_plane.requests.append((self.command, f"/tags/{path}"))
                short, _, rest = path.partition("/")
                _tag, _, rest = rest.partition("/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else None
                held = control_plane.candidate(control_plane.resource_name("services", short))
                if held is None:
                    status, data = 404, orjson.dumps({"title": f"{short} has no tagged revision"})
                else:
                    headers = {"Content-Type": self.headers.get("Content-Type", "")}
                    target = f"/{rest}" + (f"?{query}" if query else "")
                    status, data = held[1].probe(self.command, target, raw, headers, 30.0)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

        ThreadingHTTPServer.allow_reuse_address = True
        self.base_url = f"http://{host}:{port}"
        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        return server


def _reconcile(
    control_plane: ControlPlane, settings: Settings, stop: threading.Event, every_s: float
) -> None:
    """The control plane's reconciliation loop, at start and every ``every_s``: each
    backend serves its service's ready revision (``keep_serving``, Cloud Run's part),
    and each model's services converge to their aliases, staging and production
    (``Reconciler`` over the Cloud Run adapter on this very API: the cloud's sweep does
    the same on Cloud Run)."""
    from modelrail.composition.bootstrap import bootstrap
    from modelrail.service.reconcile import Reconciler

    container = bootstrap(settings)
    while True:
        control_plane.keep_serving()
        try:
            for model in container.models.names():
                scoped = container.for_model(model)
                for alias, deployer in (
                    (STAGING, scoped.deployer),
                    (PRODUCTION, scoped.production_deployer),
                ):
                    Reconciler(
                        model,
                        registry=scoped.registry,
                        leases=scoped.leases,
                        deployer=deployer,
                        holder=f"reconcile:control-plane:{os.getpid()}",
                        alias=alias,
                    ).reconcile()
        except Exception as exc:  # the next pass tries again
            print(f"reconciling staging and production: {exc}", file=sys.stderr)
        if stop.wait(every_s):
            return


class _LocalServices:
    """Each model's local staging and production services (a supervisor each, on the
    port the home records for it), behind the services this control plane serves as
    Cloud Run's: ``<staging prefix>-<model>`` and ``<production prefix>-<model>`` (as
    Terraform names them) for each model the installation holds."""

    def __init__(self, settings: Settings, prefixes: Mapping[str, str]) -> None:
        from modelrail.composition.bootstrap import bootstrap

        self.settings = settings
        self.prefixes = dict(prefixes)  # role (staging, production) -> service prefix
        self.models = bootstrap(settings).models
        self.deployers: dict[str, LocalStagingDeployer] = {}
        self._lock = threading.Lock()

    def _role_and_model(self, short: str) -> tuple[str, str] | None:
        for role, prefix in self.prefixes.items():
            model = short.removeprefix(f"{prefix}-")
            if model != short and model in self.models.names():
                return role, model
        return None

    def backend(self, short: str) -> LocalStagingDeployer:
        """The service ``short``'s local supervisor (``service`` said it exists)."""
        found = self._role_and_model(short)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"Service '{short}' was not found")
        with self._lock:
            if short not in self.deployers:
                # Its supervisor runs no reconciliation loop of its own: this control
                # plane is in charge of what its services serve (_reconcile), as Cloud
                # Run is in the cloud. Its servers run the settings' server module
                # (MODELRAIL_LOCAL_SERVER_MODULE: the service's own, or a test's).
                role, model = found
                self.deployers[short] = LocalStagingDeployer(self.settings, model, role=role)
            return self.deployers[short]

    def service(self, short: str) -> tuple[str, str] | None:
        found = self._role_and_model(short)
        if found is None:
            return None
        return found[1], self.backend(short).url

    def stop(self) -> None:
        for deployer in list(self.deployers.values()):
            deployer.stop()


def _serving(service: Mapping[str, Any]) -> str:
    """The revision with the most of the service's traffic (a ``LATEST`` target: the
    latest ready revision)."""
    targets = sorted(service.get("traffic", []), key=lambda t: -int(t.get("percent", 0)))
    if targets and targets[0].get("revision") and not _latest(targets[0]):
        return f"{service['name']}/revisions/{targets[0]['revision']}"
    ready: str = service.get("latestReadyRevision") or ""
    return ready


_ALLOCATION_TYPES: dict[Any, str] = {
    1: "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST",
    2: "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
}


def _traffic(targets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Traffic targets with their type by name (the client may send an enum's number)."""
    return [{**t, "type": _ALLOCATION_TYPES.get(t.get("type"), t.get("type"))} for t in targets]


def _latest(target: Mapping[str, Any]) -> bool:
    """A ``LATEST`` traffic target."""
    return bool(_traffic([target])[0]["type"] == "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST")


def _share(service: Mapping[str, Any], revision: str, *, latest: bool) -> int:
    """The percent of the traffic that goes to ``revision`` (``latest``: it is the
    latest revision, which a ``LATEST`` target names)."""
    short = revision.rsplit("/", 1)[-1]
    return sum(
        int(target.get("percent", 0))
        for target in service.get("traffic", [])
        if target.get("revision") == short or (latest and _latest(target))
    )


class _LocalMonitoring(EmulatedApi):
    """Cloud Monitoring's ``timeSeries.list`` for Cloud Run's ``request_count`` and
    ``request_latencies`` of a canary's two revisions, answered from the counts the
    supervisor keeps of each server since the last split (the interval asked for is
    not looked at: a step's window starts with its split)."""

    routes = ApiRoutes(
        "Cloud Monitoring",
        [("GET", re.compile(r"^/v3/projects/(?P<project>[^/]+)/timeSeries$"), "list")],
    )

    def __init__(self, control_plane: ControlPlane) -> None:
        self.control_plane = control_plane

    def answer(self, action: str, match: re.Match[str], request: ApiRequest) -> dict[str, Any]:
        query = urllib.parse.parse_qs(request.query)
        wanted = dict(re.findall(r'([\w.]+) = "([^"]*)"', query.get("filter", [""])[0]))
        plane = self.control_plane
        name = plane.resource_name("services", wanted.get("resource.labels.service_name", ""))
        held = plane.candidate(name)
        if held is None:
            return {"timeSeries": []}
        revision, candidate = held
        with plane._backend_lock:
            seen = _splitting(plane.backend(name.rsplit("/", 1)[-1])).observe(candidate)
        asked = wanted.get("resource.labels.revision_name", "")
        window = seen["new"] if asked == revision.rsplit("/", 1)[-1] else seen["old"]
        resource = {"type": "cloud_run_revision", "labels": {
            "service_name": name.rsplit("/", 1)[-1], "revision_name": asked}}  # fmt: skip
        now = utcnow()

        def series(labels: dict[str, str], kind: str, value: dict[str, Any]) -> dict[str, Any]:
            return {
                "metric": {"type": wanted.get("metric.type"), "labels": labels},
                "resource": resource,
                "metricKind": "DELTA",
                "valueType": kind,
                "points": [{"interval": {"startTime": now, "endTime": now}, "value": value}],
            }

        if wanted.get("metric.type", "").endswith("/request_latencies"):
            if window["p99_ms"] is None:
                return {"timeSeries": []}
            return {"timeSeries": [series({}, "DOUBLE", {"doubleValue": window["p99_ms"]})]}
        counts = {"2xx": window["requests"] - window["errors"], "5xx": window["errors"]}
        return {
            "timeSeries": [
                series({"response_code_class": code}, "INT64", {"int64Value": str(count)})
                for code, count in counts.items()
                if count
            ]
        }


def _splitting(backend: Deployer) -> Splitting:
    if not isinstance(backend, Splitting):
        raise ApiError(400, "INVALID_ARGUMENT", "this service's revisions cannot share traffic")
    return backend


def _run_revision(backend: Deployer, model: str, version: int) -> None:
    """What Cloud Run does with a new revision: start it and, once it answers its
    readiness probe (``start`` waits for that), give it the traffic. The smoke test is
    the deployer's, against the service, as in the cloud."""
    candidate = backend.start(model, version)
    try:
        backend.promote(candidate)
    except BaseException:
        with contextlib.suppress(Exception):
            backend.discard(candidate)
        raise


@click.command()
@click.option("--port", type=int, required=True, help="Port on 127.0.0.1 to serve the API on.")
@click.option("--state-dir", type=click.Path(path_type=Path), required=True)
@click.option("--project", required=True)
@click.option("--region", required=True)
@click.option(
    "--service-prefix",
    required=True,
    help="Each model's staging service: PREFIX-MODEL (its production service: "
    "MODELRAIL_PRODUCTION_SERVICE-MODEL).",
)
def main(*, port: int, state_dir: Path, project: str, region: str, service_prefix: str) -> None:
    """Serve the local Cloud Run Admin API (v2) for the emulator stack."""
    settings = Settings.from_env()
    local = _LocalServices(
        settings, {STAGING: service_prefix, PRODUCTION: settings.production_service}
    )
    control_plane = ControlPlane(
        project=project,
        region=region,
        services=local.service,
        backend=local.backend,
        job_command=[sys.executable, "-m", "modelrail.entry.train_job"],
        job_commands={
            **(
                {settings.validate_job: [sys.executable, "-m", "modelrail.entry.validate_job"]}
                if settings.validate_job
                else {}
            ),
            settings.batch_job: [sys.executable, "-m", "modelrail.entry.batch_job"],
        },
        # The batch job's parallel tasks, as Terraform's task_count gives them in the cloud.
        job_tasks={settings.batch_job: settings.batch_tasks},
        job_env=os.environ,
        state_dir=state_dir,
        # The staging service loads models from the artifact bucket, as in the cloud.
        service_env={"MODELRAIL_ARTIFACT_BUCKET": settings.artifact_bucket},
        # The register stage publishes versions to this repository (Artifact Registry).
        packages=LocalArtifactRegistry(state_dir, project, region, (settings.artifact_repository,)),
        # ... and versions to Vertex AI's Model Registry, when pipeline.toml says so.
        models=LocalVertexAi(state_dir, project, region),
        # register signs manifests with this key; the staging service verifies with it.
        kms=LocalKms(state_dir, (settings.signing_key,)) if settings.signing_key else None,
    )
    server = control_plane.server(port)
    stop_reconciling = threading.Event()
    threading.Thread(
        target=_reconcile,
        args=(control_plane, settings, stop_reconciling, RECONCILE_EVERY_S),
        name="reconcile",
        daemon=True,
    ).start()
    stop: Callable[..., None] = lambda *_: threading.Thread(target=server.shutdown).start()  # noqa: E731
    import signal

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"Cloud Run control plane on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop_reconciling.set()
        server.server_close()
        # `modelrail down` gives its members 8 s before SIGKILL: what is in flight gets
        # a few of them, and the services' supervisors the rest.
        control_plane.close(timeout_s=3.0)
        local.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
