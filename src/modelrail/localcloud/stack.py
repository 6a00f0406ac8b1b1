"""The local cloud: ``modelrail up --emulators`` / ``down`` / ``status``.

Starts Google's Pub/Sub emulator, fake-gcs-server (publishing object-finalize
notifications to the data-uploaded topic), the local Cloud Run control plane and one
functions-framework process per stage; then creates the buckets, topics and
subscriptions from ``topology.yaml`` (push subscriptions to each stage at
``/projects/<P>/topics/<T>``, with the topology's ack deadline, retry policy and
dead-letter policy). The staging server is started by the control plane when the
``deploy`` stage pins the staging service to a version. Last comes the watchdog
(``modelrail.localcloud.watchdog``), which restarts a member that dies through the same
``members``/``spawn``/``prepare`` as ``up``; ``down`` stops it before the rest.

Everything runs on 127.0.0.1; pids, ports and logs live under ``<home>/stack/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import urllib3
import yaml

from modelrail.kernel import resources
from modelrail.kernel.errors import ModelrailError
from modelrail.kernel.processes import (
    ProcessRecord,
    port_in_use,
    spawn,
    stop_groups,
    wait_until,
    write_json,
)
from modelrail.localcloud.emulators import (
    fake_gcs_argv,
    free_port,
    http_ok,
    pubsub_emulator_argv,
    pubsub_emulator_env,
    wait_ready,
)
from modelrail.localcloud.kms import default_key
from modelrail.settings.process import Settings
from modelrail.settings.topology import Subscription, Topology

# Fixed ports by default, so the exported environment stays valid across restarts.
DEFAULT_PORTS = {
    "pubsub-emulator": 8085,  # the emulator's customary port
    "fake-gcs-server": 4443,  # fake-gcs-server's customary port
    "control-plane": 8086,
}
DEFAULT_FUNCTION_PORT = 8091
# With [training] engine = "dask" and no scheduler of its own: a `dask scheduler` (its
# HTTP port answers /health) and [training.dask] workers `dask worker`s, one thread each.
DASK_SCHEDULER, DASK_HTTP = "dask-scheduler", "dask-scheduler-http"
DEFAULT_DASK_PORT = 8786
STARTUP_TIMEOUT_S = 60.0
# Started and bootstrapped before the others, which use them as soon as they answer.
EMULATORS = ("pubsub-emulator", "fake-gcs-server")
WATCHDOG = "watchdog"


class StackError(ModelrailError):
    """The emulator stack cannot start (a port is taken, a server failed)."""


@dataclasses.dataclass(frozen=True)
class Member:
    """One server of the stack: how to start it and where it answers when ready."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    port: int | None
    health_url: str | None


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
    dask = f"tcp://127.0.0.1:{ports[DASK_SCHEDULER]}" if DASK_SCHEDULER in ports else None
    return {
        **dataclasses.replace(
            settings,
            mode="emulator",
            # The stack's Dask cluster, which training on Dask joins.
            dask_scheduler=dask or settings.dask_scheduler,
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
        stages = stages_of(Topology.load(self.settings.topology_file()))
        ports = self._ports(stages, free_ports)
        env = client_env(self.settings, ports)
        started = time.monotonic()
        records: list[ProcessRecord] = []
        processes: dict[str, subprocess.Popen[bytes]] = {}
        members = self.members(ports, env, stages)

        def start(member: Member, ready_s: float | None = None) -> StackState:
            record, process = self.spawn(member)
            processes[member.name] = process
            records.append(record)
            # Recorded at once: `down` finds it even if `up` dies half-way.
            state = StackState(
                self.settings.project, ports, tuple(records), env, time.time(), ready_s
            )
            self._save(state)
            return state

        try:
            for member in members:
                start(member)
            emulators = [m for m in members if m.name in EMULATORS]
            self.wait_ready(emulators, processes, timeout_s)
            for member in emulators:
                self.prepare(member.name, ports, env)
            self.wait_ready(
                [m for m in members if m.name not in EMULATORS],
                processes,
                max(1.0, timeout_s - (time.monotonic() - started)),
            )
            # Last, once all answer: from here on a member that dies is started again
            # (and only the watchdog writes the state).
            return start(self.watchdog(env), ready_s=round(time.monotonic() - started, 2))
        except BaseException:
            self.down()
            raise

    # -- members -----------------------------------------------------------------
    def members(
        self, ports: Mapping[str, int], env: Mapping[str, str], stages: list[str] | None = None
    ) -> list[Member]:
        """The stack's servers in start order: what `up` starts and the watchdog restarts."""
        if stages is None:
            stages = stages_of(Topology.load(self.settings.topology_file()))
        base_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        control_plane_argv = (
            sys.executable, "-m", "modelrail.localcloud.control_plane",
            "--port", str(ports["control-plane"]),
            "--state-dir", str(self.dir),
            "--project", self.settings.project,
            "--region", self.settings.region,
            "--service-prefix", self.settings.staging_service,
        )  # fmt: skip
        members = [
            Member(
                "pubsub-emulator",
                tuple(pubsub_emulator_argv(ports["pubsub-emulator"])),
                pubsub_emulator_env(base_env),
                ports["pubsub-emulator"],
                f"http://{env['PUBSUB_EMULATOR_HOST']}/",
            ),
            Member(
                "fake-gcs-server",
                tuple(
                    fake_gcs_argv(
                        ports["fake-gcs-server"],
                        project=self.settings.project,
                        notify_topic="data-uploaded",
                        notify_bucket=self.settings.data_bucket,
                        data_dir=self.dir / "gcs",
                    )
                ),
                base_env,
                ports["fake-gcs-server"],
                f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b",
            ),
            Member(
                "control-plane",
                control_plane_argv,
                base_env,
                ports["control-plane"],
                f"http://127.0.0.1:{ports['control-plane']}/healthz",
            ),
        ]
        for stage in stages:
            name = f"function-{stage}"
            function_argv = (
                sys.executable, "-m", "functions_framework",
                "--target", "handle",
                "--source", str(functions_dir() / stage / "main.py"),
                "--signature-type", "cloudevent",
                "--host", "127.0.0.1",
                "--port", str(ports[name]),
            )  # fmt: skip
            members.append(
                Member(
                    name,
                    function_argv,
                    {**base_env, "K_SERVICE": stage, "FUNCTION_TARGET": "handle"},
                    ports[name],
                    f"http://127.0.0.1:{ports[name]}/healthz",
                )
            )
        members += self._dask(ports, base_env)
        return members

    def _dask(self, ports: Mapping[str, int], env: Mapping[str, str]) -> list[Member]:
        """The Dask scheduler and workers, when the stack runs them (``_ports``)."""
        if DASK_SCHEDULER not in ports:
            return []
        dask = str(Path(sys.executable).parent / "dask")
        address = f"tcp://127.0.0.1:{ports[DASK_SCHEDULER]}"
        scheduler_argv = (
            dask, "scheduler", "--host", "127.0.0.1", "--port", str(ports[DASK_SCHEDULER]),
            "--dashboard-address", f"127.0.0.1:{ports[DASK_HTTP]}",
        )  # fmt: skip
        health = f"http://127.0.0.1:{ports[DASK_HTTP]}/health"
        members = [Member(DASK_SCHEDULER, scheduler_argv, dict(env), ports[DASK_SCHEDULER], health)]
        for name in sorted(n for n in ports if re.fullmatch(r"dask-worker-\d+", n)):
            # Every port it listens on is chosen here, as every other member's is.
            worker_argv = (
                dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                "--worker-port", str(ports[f"{name}-tcp"]),
                "--nanny-port", str(ports[f"{name}-nanny"]),
                "--dashboard-address", f"127.0.0.1:{ports[name]}",
                "--local-directory", str(self.dir / name),
            )  # fmt: skip
            health = f"http://127.0.0.1:{ports[name]}/health"
            members.append(Member(name, worker_argv, dict(env), ports[name], health))
        return members

    def _dask_workers(self) -> int:
        """How many Dask workers the stack runs (``MODELRAIL_STACK_DASK_WORKERS``): a
        model that trains on Dask with no scheduler of its own joins them."""
        return self.settings.stack_dask_workers

    def watchdog(self, env: Mapping[str, str]) -> Member:
        """The process that restarts the other members when they die (``watchdog``)."""
        return Member(
            WATCHDOG,
            (sys.executable, "-m", "modelrail.localcloud.watchdog"),
            {**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            None,
            None,
        )

    def spawn(self, member: Member) -> tuple[ProcessRecord, subprocess.Popen[bytes]]:
        """Start one member in its own process group, logging to ``logs/<name>.log``."""
        return spawn(
            member.name, member.argv, env=member.env, log_path=self.logs / f"{member.name}.log",
            port=member.port, cwd=resources.checkout_root(),
        )  # fmt: skip

    def wait_ready(
        self,
        members: list[Member],
        processes: Mapping[str, subprocess.Popen[bytes]],
        timeout_s: float,
    ) -> None:
        """Wait until every member with a health URL answers (``StartupFailed`` if not)."""
        wait_ready(
            {
                m.name: (m.health_url, processes[m.name], self.logs / f"{m.name}.log")
                for m in members
                if m.health_url is not None
            },
            timeout_s,
        )

    def prepare(self, name: str, ports: Mapping[str, int], env: Mapping[str, str]) -> None:
        """What a member needs once it answers: the emulators keep no configuration of
        their own across a start (Pub/Sub keeps nothing; the buckets are created if
        missing), so both are bootstrapped at every start, the watchdog's included."""
        if name == "fake-gcs-server":
            bootstrap_buckets(
                env["STORAGE_EMULATOR_HOST"],
                self.settings.project,
                (self.settings.data_bucket, self.settings.artifact_bucket),
            )
        elif name == "pubsub-emulator":
            topology = Topology.load(self.settings.topology_file())
            bootstrap_pubsub(
                env["PUBSUB_EMULATOR_HOST"],
                self.settings.project,
                topology,
                {
                    stage: f"http://127.0.0.1:{ports[f'function-{stage}']}"
                    for stage in stages_of(topology)
                },
                message_retention=_retention(self.settings.topology_file()),
            )

    def replace(self, record: ProcessRecord) -> None:
        """Record ``record`` in place of the member of the same name (a restart)."""
        state = self.state()
        if state is None:
            return
        processes = tuple(record if r.name == record.name else r for r in state.processes)
        self._save(dataclasses.replace(state, processes=processes))

    def _ports(self, stages: list[str], free_ports: bool) -> dict[str, int]:
        workers = self._dask_workers()
        dask = [DASK_SCHEDULER, DASK_HTTP]
        for n in range(workers):
            dask += [f"dask-worker-{n}", f"dask-worker-{n}-tcp", f"dask-worker-{n}-nanny"]
        names = [*DEFAULT_PORTS, *(f"function-{stage}" for stage in stages)]
        if workers:
            names += dask
        if free_ports:
            return {name: free_port() for name in names}
        ports = {
            **DEFAULT_PORTS,
            **{f"function-{stage}": DEFAULT_FUNCTION_PORT + i for i, stage in enumerate(stages)},
        }
        if workers:
            ports.update({name: DEFAULT_DASK_PORT + i for i, name in enumerate(dask)})
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
            # The watchdog first, so it restarts nothing this stops; then the state again,
            # which names any member it restarted before it stopped.
            watchdogs = [r for r in state.processes if r.name == WATCHDOG]
            stopped = [r.name for r in watchdogs if r.alive() or r.group_alive()]
            stop_groups(watchdogs, timeout_s=8.0)
            state = self.state() or state
            members = [r for r in state.processes if r.name != WATCHDOG]
            stopped += [r.name for r in members if r.alive() or r.group_alive()]
            # All groups at once (SIGTERM, then SIGKILL after the deadline); the control
            # plane retires the staging server as it exits. Messages still in flight go
            # with the emulator's memory, as the docs say.
            stop_groups(members, timeout_s=8.0)
        if self._stop_staging():
            stopped.append("staging-server")
        if state is not None:
            for port in (record.port for record in state.processes if record.port is not None):
                wait_until(functools.partial(_port_free, port), 5.0)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return stopped

    def _stop_staging(self) -> bool:
        """Stop every model's local staging server; True if one was running."""
        from modelrail.adapters.local.staging import staging_deployers

        running = False
        for staging in staging_deployers(self.settings):
            running = staging.current() is not None or running
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
        from modelrail.adapters.local.staging import staging_deployers

        for staging in staging_deployers(self.settings):
            rows.append(
                {
                    "name": f"{staging.role}-{staging.model}",
                    "pid": None,
                    "port": staging.port,
                    "alive": http_ok(f"{staging.url}/healthz"),
                    "listening": port_in_use(staging.port),
                    "log": str(staging.state_dir),
                }
            )
        return rows
