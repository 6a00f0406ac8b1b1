"""Fixtures: a real registered LightGBM model, and staging servers on free ports.

The model is trained here on the bundled penguins data with the pipeline's own
contract and feature encoding, and registered through ``Registry.register`` with the
manifest shape the register stage writes, signed with embedded mode's key file, so the
service is tested against the same artifacts it serves in the pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
import pytest

from modelrail.adapters.by_mode import open_artifact_store
from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain import training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import Registry
from modelrail.kernel.ports import Deployer, Deployment
from modelrail.service import reconcile
from modelrail.settings.process import Settings
from tests.manifests import describe

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "modelrail-artifacts"
MODEL = "penguins"


@dataclasses.dataclass(frozen=True)
class RegisteredModels:
    """A bucket root holding ``penguins`` v1, v2 (good), v3 (its model tampered with after
    registration) and v4 (its model replaced and its manifest rewritten to match, as
    anyone who can write the bucket could, but cannot sign), and the signer of them all,
    whose key file is in ``signer.path``."""

    root: Path
    store: FilesystemStore
    registry: Registry
    signer: LocalManifestSigner
    schema: FeatureSchema
    records: list[dict[str, Any]]
    boosters: Mapping[int, lightgbm.Booster]
    tampered: int
    forged: int


def read_records(config: PipelineConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The penguins rows as a client sends them, and their labels."""
    parsed = checks.load((ROOT / "data" / "penguins.csv").read_bytes(), config.contract)
    schema = FeatureSchema.from_contract(config.contract, config.objective)
    records = training.examples(parsed.columns, schema, np.arange(parsed.rows))
    return records, [str(label) for label in parsed.columns[config.contract.target]]


def train(
    schema: FeatureSchema, records: list[dict[str, Any]], targets: list[str], rounds: int, seed: int
) -> lightgbm.Booster:
    matrix = schema.encode_records(records)
    labels = np.array([schema.classes.index(t) for t in targets], dtype=np.float64)
    categorical = [i for i, f in enumerate(schema.features) if f.is_categorical]
    data = lightgbm.Dataset(
        matrix,
        labels,
        feature_name=schema.names,
        categorical_feature=categorical,
        free_raw_data=False,
    )
    params = {
        "objective": "multiclass",
        "num_class": len(schema.classes),
        "seed": seed,
        "num_leaves": 7,
        "learning_rate": 0.1,
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    return lightgbm.train(params, data, num_boost_round=rounds)


def register(
    registry: Registry,
    signer: LocalManifestSigner,
    schema: FeatureSchema,
    booster: lightgbm.Booster,
    run_id: str,
    *,
    examples: list[dict[str, Any]],
    best_iteration: int,
    model: str = MODEL,
) -> int:
    version, _ = registry.register(
        model,
        run_id,
        lambda _version: {"model.txt": booster.model_to_string().encode()},
        describe(
            model,
            run_id,
            features=schema.to_dict(),
            best_iteration=best_iteration,
            params={"num_leaves": 7},
            metrics={"accuracy": 0.97, "multi_logloss": 0.1},
            examples=examples,
        ),
    )
    return version


def forge(store: FilesystemStore, version: int, model_text: bytes) -> None:
    """Replace a version's model and rewrite its manifest's sha256 and size to match."""
    prefix = f"models/{MODEL}/versions/{version}/"
    manifest = orjson.loads(store.read(prefix + "manifest.json").data)
    manifest["files"]["model.txt"] = {
        "sha256": hashlib.sha256(model_text).hexdigest(),
        "size": len(model_text),
    }
    store.write(prefix + "model.txt", model_text)
    store.write(prefix + "manifest.json", orjson.dumps(manifest))


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModels:
    config = PipelineConfig.load(ROOT / "pipeline.toml")
    schema = FeatureSchema.from_contract(config.contract, config.objective)
    records, targets = read_records(config)
    root = tmp_path_factory.mktemp("buckets")
    store = FilesystemStore(root, BUCKET)
    signer = LocalManifestSigner.in_home(tmp_path_factory.mktemp("state"))
    registry = Registry(store, signer=signer)
    examples = records[:3] + records[200:202]
    boosters = {}
    for run, (rounds, seed) in enumerate([(30, 1), (40, 2), (20, 3), (30, 1)], start=1):
        booster = train(schema, records, targets, rounds, seed)
        version = register(
            registry,
            signer,
            schema,
            booster,
            f"run-{run}",
            examples=examples,
            best_iteration=rounds - 5,
        )
        boosters[version] = booster
    tampered, forged = 3, 4
    key = f"models/{MODEL}/versions/{tampered}/model.txt"
    store.write(key, store.read(key).data.replace(b"leaf_value=", b"leaf_value=1", 1))
    forge(store, forged, boosters[2].model_to_string().encode())
    return RegisteredModels(
        root, store, registry, signer, schema, records, boosters, tampered, forged
    )


@pytest.fixture
def make_client(models: RegisteredModels) -> Callable[..., Any]:
    from modelrail.serving.app import create_app

    def make(**overrides: Any) -> Any:
        config = {
            "store": models.store,
            "signer": models.signer,
            "model_name": MODEL,
            "model_version": 1,
            **overrides,
        }
        return create_app(config).test_client()

    return make


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


# -- real servers --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(models: RegisteredModels, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELRAIL_", "AIP_"))}
    env.update(
        {
            "MODELRAIL_MODE": "embedded",
            "MODELRAIL_HOME": str(home),
            "MODELRAIL_MODEL_NAME": MODEL,
            "MODELRAIL_TOPOLOGY": str(ROOT / "topology.yaml"),
            **extra,
        }
    )
    return env


def link_buckets(models: RegisteredModels, home: Path) -> None:
    """Make ``home``'s embedded bucket root and signing key the fixture's (symlinks)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "buckets").exists():
        (home / "buckets").symlink_to(models.root)
    if not (home / "keys").exists():
        (home / "keys").symlink_to(models.signer.path.parent)


@dataclasses.dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def start_server(models: RegisteredModels, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(version: int | None = 1, *, home: Path | None = None, **extra: str) -> Server:
        """A server on ``home``'s buckets (by default, a new home on the fixture's)."""
        if home is None:
            home = tmp_path / f"home{len(started)}"
            link_buckets(models, home)
        port = free_port()
        env = service_env(models, home, PORT=str(port), **extra)
        if version is not None:
            env["MODELRAIL_MODEL_VERSION"] = str(version)
        log = tmp_path / f"server{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "modelrail.serving.server"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        started.append(Server(process, f"http://127.0.0.1:{port}", log))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def post_json(url: str, body: Any, timeout: float = 5.0) -> tuple[int, Any]:
    import urllib3

    response = urllib3.request(
        "POST",
        url,
        body=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=timeout,
        retries=False,
    )
    return response.status, orjson.loads(response.data) if response.data else None


def deploy(deployer: Deployer, settings: Settings, version: int) -> Deployment:
    """``version`` put on staging as the service layer does it (``reconcile.deploy``),
    smoke-tested with the examples of its manifest in ``settings``' artifact bucket."""
    manifest = Registry(open_artifact_store(settings)).manifest(MODEL, version)
    return reconcile.deploy(deployer, MODEL, version, manifest.examples)
