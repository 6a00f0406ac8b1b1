"""The cloud's Dask cluster: per-run VMs made by dask-cloudprovider's GCPCluster from
the variables Terraform's dask_training switch sets, closed when the run ends. No
project is reachable here, so a stand-in for GCPCluster records what it is asked for
and runs a local cluster in its place."""

from __future__ import annotations

from typing import Any, ClassVar

import dask
import pytest
from distributed import LocalCluster

from modelrail.adapters.by_mode import open_dask_clusters
from modelrail.adapters.google.dask_gcp import GcpDaskClusters
from modelrail.kernel.errors import ConfigError
from modelrail.settings.process import Settings
from tests.conftest import settings_env

# Dask's processes listen on ports the kernel picks, from the same range as the free
# ports the emulator stacks choose and then bind: never beside a stack starting up.
pytestmark = pytest.mark.xdist_group("emulators")

TERRAFORM_ENV = {
    "MODELRAIL_DASK_CLOUD": "gcp",
    "MODELRAIL_DASK_GCP_PROJECT": "acme-ml",
    "MODELRAIL_DASK_GCP_ZONE": "europe-west1-b",
    "MODELRAIL_DASK_GCP_NETWORK": "modelrail-dask-vms",
    "MODELRAIL_DASK_GCP_MACHINE_TYPE": "e2-standard-8",
    "MODELRAIL_DASK_GCP_WORKERS": "2",
    "MODELRAIL_DASK_GCP_SERVICE_ACCOUNT": "modelrail-dask@acme-ml.iam.gserviceaccount.com",
    "MODELRAIL_DASK_GCP_IMAGE": "europe-west1-docker.pkg.dev/acme-ml/modelrail/train:abc123",
}


class StandInCluster(LocalCluster):  # type: ignore[misc]
    made: ClassVar[list[dict[str, Any]]] = []
    closed: ClassVar[int] = 0

    def __init__(self, **options: Any) -> None:
        StandInCluster.made.append(
            {**options, "public_ingress": dask.config.get("cloudprovider.gcp.public_ingress")}
        )
        super().__init__(
            n_workers=options["n_workers"], threads_per_worker=1, dashboard_address=None
        )

    def close(self, *args: Any, **kwargs: Any) -> Any:
        StandInCluster.closed += 1
        return super().close(*args, **kwargs)


def test_the_run_gets_vms_as_terraform_provisions_them_and_they_are_deleted(
    tmp_path: Any,
) -> None:
    settings = Settings.from_env(settings_env(tmp_path, MODELRAIL_MODE="cloud", **TERRAFORM_ENV))
    clusters = open_dask_clusters(settings)
    assert isinstance(clusters, GcpDaskClusters)
    clusters._cluster_class = StandInCluster

    with clusters.client(None, workers=5) as client:
        assert len(client.scheduler_info()["workers"]) == 2  # the deployment's size

    [options] = StandInCluster.made
    assert options["public_ingress"] is False  # no VM gets a public address
    assert options["projectid"] == "acme-ml"
    assert options["network"] == "modelrail-dask-vms"
    assert options["machine_type"] == "e2-standard-8"
    assert options["service_account"] == TERRAFORM_ENV["MODELRAIL_DASK_GCP_SERVICE_ACCOUNT"]
    assert options["docker_image"] == TERRAFORM_ENV["MODELRAIL_DASK_GCP_IMAGE"]
    assert options["bootstrap"] is False  # nothing installed from the internet
    assert options["extra_bootstrap"] == [
        "docker-credential-gcr configure-docker --registries=europe-west1-docker.pkg.dev"
    ]
    assert StandInCluster.closed == 1


def test_a_switch_half_set_is_a_config_error(tmp_path: Any) -> None:
    env = {k: v for k, v in TERRAFORM_ENV.items() if k != "MODELRAIL_DASK_GCP_IMAGE"}
    settings = Settings.from_env(settings_env(tmp_path, MODELRAIL_MODE="cloud", **env))

    with pytest.raises(ConfigError, match="_IMAGE"):
        open_dask_clusters(settings)
