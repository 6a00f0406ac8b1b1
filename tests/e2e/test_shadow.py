"""Shadow comparison, embedded end to end on the local supervisors: v1 in production,
v2 in staging, ``[production] shadow`` on; thousands of requests to production, every
one answered by v1, and ``modelrail shadow report`` gives v2's agreement with v1 and
each side's latency. ``modelrail down`` leaves nothing running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.models import upload_prefix
from modelrail.kernel.events import RetrainRequested
from modelrail.kernel.processes import wait_until
from modelrail.service.promotion import approve, propose
from modelrail.settings.process import Settings
from tests.conftest import REPO, installed, settings_env
from tests.e2e.test_cli import INSTANCE, MODELRAIL, _free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-shadow")]

REQUESTS = 3000


def _shadowed_config(directory: Path) -> Path:
    """The bundled pipeline.toml with ``[production] shadow`` on, mirroring every request."""
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('contract = "schemas/', f'contract = "{REPO}/schemas/')
    path = directory / "pipeline.toml"
    path.write_text(f"{text}\n[production]\nshadow = true\nshadow_rate = 1.0\n")
    return path


def _report(env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [str(MODELRAIL), "shadow", "report", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report


def test_production_mirrors_to_staging_and_the_report_compares_v2_with_v1(
    tmp_path: Path, penguins_csv: bytes
) -> None:
    env = {
        **os.environ,
        **settings_env(
            tmp_path / "home",
            MODELRAIL_STAGING_PORT=str(_free_port()),
            MODELRAIL_PRODUCTION_PORT=str(_free_port()),
        ),
    }
    settings = Settings.from_env(env)
    container = installed(bootstrap(settings), _shadowed_config(tmp_path))
    model = container.model
    try:
        store = container.storage.bucket(settings.data_bucket)
        key = f"{upload_prefix(model)}penguins.csv"
        assert container.upload_notifier is not None
        container.upload_notifier(store.bucket, key, store.write(key, penguins_csv))
        container.bus.drain()
        proposal = propose(container, version=None, reason="v1", proposed_by="ana")
        assert approve(container, proposal.id, reason="ok", approved_by="bo").status == "succeeded"
        request = RetrainRequested(request_id="second")
        container.bus.publish("retrain-requested", orjson.dumps(request.to_body()), {})
        container.bus.drain()
        assert container.registry.aliases(model) == {"champion": 2, "staging": 2, "production": 1}

        production = container.production_deployer.current()
        assert production is not None
        versions = set()
        with requests.Session() as session:
            for _ in range(REQUESTS):
                response = session.post(
                    f"{production.url}/predict", json={"instances": [INSTANCE]}, timeout=10
                )
                assert response.status_code == 200
                versions.add(response.json()["model"]["version"])
        assert versions == {1}

        def counted() -> bool:
            comparisons = _report(env)["comparisons"]
            return sum(c["mirrored"] + c["dropped"] for c in comparisons) >= REQUESTS * 0.95

        # A worker mirrors once its sender read the rate (its first requests go
        # unmirrored); its last records are written BATCH_SECONDS after the batch before.
        assert wait_until(counted, 90.0)
        [comparison] = _report(env)["comparisons"]
        assert (comparison["production"], comparison["candidate"]) == (1, 2)
        assert comparison["mirrored"] > REQUESTS / 2
        assert comparison["errors"] == 0
        assert 0.0 <= comparison["agreement"] <= 1.0
        assert comparison["probability_mad"] is not None
        assert 0 < comparison["production_p50_ms"] <= comparison["production_p99_ms"]
        assert 0 < comparison["candidate_p50_ms"] <= comparison["candidate_p99_ms"]
    finally:
        subprocess.run([str(MODELRAIL), "down"], cwd=REPO, env=env, timeout=120, check=False)
    assert container.deployer.current() is None
    assert container.production_deployer.current() is None
