"""The local cloud: ``modelrail up --emulators`` / ``down`` / ``status``.

Starts Google's Pub/Sub emulator, fake-gcs-server (publishing object-finalize
notifications to the data-uploaded topic), the local Cloud Run control plane and one
functions-framework process per stage; then creates the buckets, topics and
subscriptions from ``topology.yaml`` (push subscriptions to each stage at
``/projects/<P>/topics/<T>``, with the topology's ack deadline, retry policy and
dead-letter policy). The staging server is started by the control plane when the
``deploy`` stage pins the staging service to a version.

Everything runs on 127.0.0.1; pids, ports and logs live under ``<home>/stack/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import urllib3
import yaml

from modelrail import resources
from modelrail.config import Settings
from modelrail.errors import ModelrailError
from modelrail.processes import (
    ProcessRecord,
    port_in_use,
    spawn,
    stop_groups,
    wait_until,
    write_json,
)
from modelrail.runtime.emulators import (
    fake_gcs_argv,
    free_port,
    http_ok,
    pubsub_emulator_argv,
    pubsub_emulator_env,
    wait_ready,
)
from modelrail.runtime.kms import default_key
from modelrail.topology import Subscription, Topology

# Fixed ports by default, so the exported environment stays valid across restarts.
DEFAULT_PORTS = {
    "pubsub-emulator": 8085,  # the emulator's customary port
    "fake-gcs-server": 4443,  # fake-gcs-server's customary port
    "control-plane": 8086,
}
DEFAULT_FUNCTION_PORT = 8091
STARTUP_TIMEOUT_S = 60.0


class StackError(ModelrailError):
    """The emulator stack cannot start (a port is taken, a server failed)."""


@dataclasses.dataclass(frozen=True)
class StackState:
    """What ``up`` started: written to ``<home>/stack/state.json`` as it goes."""

    project: str
    ports: Mapping[str, int]
    processes: tuple[ProcessRecord, ...]
    env: Mapping[str, str]
    started_at: float
    ready_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "ports": dict(self.ports),
            "processes": [record.to_json() for record in self.processes],
            "env": dict(self.env),
            "started_at": self.started_at,
            "ready_s": self.ready_s,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StackState:
        return cls(
            project=body["project"],
            ports=dict(body["ports"]),
            processes=tuple(ProcessRecord.from_json(p) for p in body["processes"]),
            env=dict(body["env"]),
            started_at=float(body["started_at"]),
            ready_s=body.get("ready_s"),
        )


def stack_dir(settings: Settings) -> Path:
    return settings.home / "stack"


def functions_dir() -> Path:
    return resources.checkout_root() / "functions"


def stages_of(topology: Topology) -> list[str]:
    """The stages that consume a subscription, in topology order."""
    stages: list[str] = []
    for subscription in topology.subscriptions:
        if subscription.consumer and subscription.consumer not in stages:
            stages.append(subscription.consumer)
    return stages


def client_env(settings: Settings, ports: Mapping[str, int]) -> dict[str, str]:
    """What a process exports to use the stack: modelrail, the Google clients, gcloud."""
    pubsub = f"127.0.0.1:{ports['pubsub-emulator']}"
    storage = f"http://127.0.0.1:{ports['fake-gcs-server']}"
    run_api = f"http://127.0.0.1:{ports['control-plane']}"
    return {
        **dataclasses.replace(
            settings,
            mode="emulator",
            run_api_endpoint=run_api,
            # The control plane serves Artifact Registry's, Vertex AI's and Cloud KMS's
            # APIs too (KMS with the key manifests are signed with).
            artifact_registry_endpoint=run_api,
            vertex_endpoint=run_api,
            kms_endpoint=run_api,
            signing_key=settings.signing_key or default_key(settings.project, settings.region),
        ).to_env(),
        "PUBSUB_EMULATOR_HOST": pubsub,
        "STORAGE_EMULATOR_HOST": storage,
        # gcloud: the same endpoints, no credentials, the stack's project.
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{pubsub}/",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"{storage}/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_PROJECT": settings.project,
    }


# -- bootstrap ---------------------------------------------------------------------
def _retention(topology_path: Path) -> str:
    """The topology's default message retention (``604800s``), read from the same file."""
    spec = yaml.safe_load(topology_path.read_text())
    return str(spec.get("defaults", {}).get("message_retention", "604800s"))


_http = urllib3.PoolManager(retries=urllib3.Retry(total=3, backoff_factor=0.1), timeout=10.0)


def _rest(method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
    response = _http.request(
        method,
        url,
        body=None if body is None else orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    try:
        return response.status, orjson.loads(response.data or b"{}")
    except orjson.JSONDecodeError:
        return response.status, {"raw": response.data.decode(errors="replace")}


def _check(status: int, body: Any, action: str, *, allowed: tuple[int, ...] = ()) -> None:
    if status >= 300 and status not in allowed:
        raise StackError(f"{action} failed: HTTP {status} {body}")


def bootstrap_pubsub(
    pubsub_host: str,
    project: str,
    topology: Topology,
    push_endpoints: Mapping[str, str],
    *,
    message_retention: str = "604800s",
) -> None:
    """Create the topology's topics and subscriptions on the emulator, idempotently.

    ``push_endpoints`` maps a consumer (stage) to its base URL; the push endpoint is
    ``<base>/projects/<project>/topics/<topic>``, the path functions-framework turns
    back into the topic of the CloudEvent it builds. A subscription that exists with
    a different configuration is recreated. Uses the emulator's REST API (the same
    resources Terraform creates in the cloud), so this process needs no gRPC client.
    """
    base = f"http://{pubsub_host}/v1"
    for topic in topology.topics:
        status, body = _rest("PUT", f"{base}/projects/{project}/topics/{topic}", {})
        _check(status, body, f"creating topic {topic}", allowed=(409,))
    for subscription in topology.subscriptions:
        wanted = subscription_resource(
            project, subscription, topology.dead_letter_topic, push_endpoints, message_retention
        )
        url = f"{base}/{wanted['name']}"
        spec = {k: v for k, v in wanted.items() if k != "name"}
        status, body = _rest("PUT", url, spec)
        if status == 409:
            status, existing = _rest("GET", url)
            _check(status, existing, f"reading subscription {subscription.name}")
            if all(existing.get(k) == v for k, v in spec.items()):
                continue
            status, body = _rest("DELETE", url)
            _check(status, body, f"deleting subscription {subscription.name}")
            status, body = _rest("PUT", url, spec)
        _check(status, body, f"creating subscription {subscription.name}")


def subscription_resource(
    project: str,
    subscription: Subscription,
    dead_letter_topic: str,
    push_endpoints: Mapping[str, str],
    message_retention: str = "604800s",
) -> dict[str, Any]:
    """The Pub/Sub REST resource for one topology subscription."""
    topic_path = f"projects/{project}/topics/{subscription.topic}"
    resource: dict[str, Any] = {
        "name": f"projects/{project}/subscriptions/{subscription.name}",
        "topic": topic_path,
        "ackDeadlineSeconds": subscription.ack_deadline_seconds,
        "messageRetentionDuration": message_retention,
    }
    if subscription.consumer is None:
        return resource  # a pull subscription where messages wait for a person
    endpoint = push_endpoints[subscription.consumer].rstrip("/")
    resource["pushConfig"] = {"pushEndpoint": f"{endpoint}/{topic_path}"}
    resource["retryPolicy"] = {
        "minimumBackoff": f"{subscription.minimum_backoff_s}s",
        "maximumBackoff": f"{subscription.maximum_backoff_s}s",
    }
    if subscription.topic != dead_letter_topic:
        resource["deadLetterPolicy"] = {
            "deadLetterTopic": f"projects/{project}/topics/{dead_letter_topic}",
            "maxDeliveryAttempts": subscription.max_delivery_attempts,
        }
    return resource


def _port_free(port: int) -> bool:
    return not port_in_use(port)


def bootstrap_buckets(storage_url: str, project: str, buckets: tuple[str, ...]) -> None:
    """Create the buckets on fake-gcs-server if they do not exist."""
    for bucket in buckets:
        status, body = _rest(
            "POST", f"{storage_url}/storage/v1/b?project={project}", {"name": bucket}
        )
        _check(status, body, f"creating bucket {bucket}", allowed=(409,))


# -- the stack ---------------------------------------------------------------------
class Stack:
    """Starts, inspects and stops the emulator stack for one ``MODELRAIL_HOME``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = stack_dir(settings)
        self.state_file = self.dir / "state.json"
        self.logs = self.dir / "logs"

    # -- state -------------------------------------------------------------------
    def state(self) -> StackState | None:
        try:
            return StackState.from_json(orjson.loads(self.state_file.read_bytes()))
        except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError):
            return None

    def _save(self, state: StackState) -> None:
        write_json(self.state_file, state.to_json())

    def running(self) -> bool:
        state = self.state()
        return state is not None and all(record.alive() for record in state.processes)

    # -- up ----------------------------------------------------------------------
    def up(self, *, free_ports: bool = False, timeout_s: float = STARTUP_TIMEOUT_S) -> StackState:
        """Start the stack, or return the running one. After a crash, clean up first."""
        state = self.state()
        if state is not None:
            if self.running():
                return state
            self.down()  # a partial stack: stop its survivors, then start afresh
        topology = Topology.load(self.settings.topology_file())
        stages = stages_of(topology)
        ports = self._ports(stages, free_ports)
        env = client_env(self.settings, ports)
        base_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()
        records: list[ProcessRecord] = []
        processes: dict[str, Any] = {}

        def start(name: str, argv: list[str], process_env: Mapping[str, str]) -> None:
            record, process = spawn(
                name, argv, env=process_env, log_path=self.logs / f"{name}.log",
                port=ports[name], cwd=resources.checkout_root(),
            )  # fmt: skip
            processes[name] = process
            records.append(record)
            # Recorded at once: `down` finds it even if `up` dies half-way.
            self._save(StackState(self.settings.project, ports, tuple(records), env, time.time()))

        try:
            start("pubsub-emulator", pubsub_emulator_argv(ports["pubsub-emulator"]),
                  pubsub_emulator_env(base_env))  # fmt: skip
            start(
                "fake-gcs-server",
                fake_gcs_argv(
                    ports["fake-gcs-server"],
                    project=self.settings.project,
                    notify_topic="data-uploaded",
                    notify_bucket=self.settings.data_bucket,
                    data_dir=self.dir / "gcs",
                ),
                base_env,
            )
            start(
                "control-plane",
                [
                    sys.executable, "-m", "modelrail.runtime.control_plane",
                    "--port", str(ports["control-plane"]),
                    "--state-dir", str(self.dir),
                    "--project", self.settings.project,
                    "--region", self.settings.region,
                    "--service", self.settings.staging_service,
                    "--service-url", f"http://127.0.0.1:{self.settings.staging_port}",
                ],
                base_env,
            )  # fmt: skip
            for stage in stages:
                start(
                    f"function-{stage}",
                    [
                        sys.executable, "-m", "functions_framework",
                        "--target", "handle",
                        "--source", str(functions_dir() / stage / "main.py"),
                        "--signature-type", "cloudevent",
                        "--host", "127.0.0.1",
                        "--port", str(ports[f"function-{stage}"]),
                    ],
                    {**base_env, "K_SERVICE": stage, "FUNCTION_TARGET": "handle"},
                )  # fmt: skip

            def log(name: str) -> Path:
                return self.logs / f"{name}.log"

            wait_ready(
                {
                    "pubsub-emulator": (
                        f"http://{env['PUBSUB_EMULATOR_HOST']}/",
                        processes["pubsub-emulator"],
                        log("pubsub-emulator"),
                    ),
                    "fake-gcs-server": (
                        f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b",
                        processes["fake-gcs-server"],
                        log("fake-gcs-server"),
                    ),
                },
                timeout_s,
            )
            bootstrap_buckets(
                env["STORAGE_EMULATOR_HOST"],
                self.settings.project,
                (self.settings.data_bucket, self.settings.artifact_bucket),
            )
            bootstrap_pubsub(
                env["PUBSUB_EMULATOR_HOST"],
                self.settings.project,
                topology,
                {stage: f"http://127.0.0.1:{ports[f'function-{stage}']}" for stage in stages},
                message_retention=_retention(self.settings.topology_file()),
            )
            wait_ready(
                {
                    name: (f"http://127.0.0.1:{ports[name]}/healthz", process, log(name))
                    for name, process in processes.items()
                    if name.startswith("function-") or name == "control-plane"
                },
                max(1.0, timeout_s - (time.monotonic() - started)),
            )
        except BaseException:
            self.down()
            raise
        ready = StackState(
            self.settings.project, ports, tuple(records), env, time.time(),
            ready_s=round(time.monotonic() - started, 2),
        )  # fmt: skip
        self._save(ready)
        return ready

    def _ports(self, stages: list[str], free_ports: bool) -> dict[str, int]:
        names = [*DEFAULT_PORTS, *(f"function-{stage}" for stage in stages)]
        if free_ports:
            return {name: free_port() for name in names}
        ports = {
            **DEFAULT_PORTS,
            **{f"function-{stage}": DEFAULT_FUNCTION_PORT + i for i, stage in enumerate(stages)},
        }
        busy = [f"{name} ({port})" for name, port in ports.items() if port_in_use(port)]
        if busy:
            raise StackError(
                "ports already in use: " + ", ".join(busy) + "; stop what holds them or "
                "start with --free-ports"
            )
        return ports

    # -- down --------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop everything the stack started (and the staging server); return the names."""
        state = self.state()
        stopped: list[str] = []
        if state is not None:
            stopped = [r.name for r in state.processes if r.alive() or r.group_alive()]
            # All groups at once (SIGTERM, then SIGKILL after the deadline); the control
            # plane retires the staging server as it exits. Messages still in flight go
            # with the emulator's memory, as the docs say.
            stop_groups(state.processes, timeout_s=8.0)
        if self._stop_staging():
            stopped.append("staging-server")
        if state is not None:
            for port in (record.port for record in state.processes if record.port is not None):
                wait_until(functools.partial(_port_free, port), 5.0)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return stopped

    def _stop_staging(self) -> bool:
        """Stop the local staging server; True if one was running."""
        from modelrail.bootstrap import local_staging

        staging = local_staging(self.settings)
        running = staging.current() is not None
        staging.stop()
        return running

    # -- status ------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Each process of the stack: name, pid, port, alive, answering."""
        state = self.state()
        if state is None:
            return []
        rows = []
        for record in state.processes:
            alive = record.alive()
            answering = bool(record.port) and alive and port_in_use(record.port or 0)
            rows.append(
                {
                    "name": record.name,
                    "pid": record.pid,
                    "port": record.port,
                    "alive": alive,
                    "listening": answering,
                    "log": record.log,
                }
            )
        staging = f"http://127.0.0.1:{self.settings.staging_port}"
        rows.append(
            {
                "name": "staging-server",
                "pid": None,
                "port": self.settings.staging_port,
                "alive": http_ok(f"{staging}/healthz"),
                "listening": port_in_use(self.settings.staging_port),
                "log": str(self.settings.home),
            }
        )
        return rows
