"""A Dask cluster of Compute Engine VMs made for each training run (``DaskClusters``).

dask-cloudprovider's ``GCPCluster`` creates a scheduler VM and the workers, each
running the training image (the same locked dependencies as the job, so
``lightgbm.dask`` meets the same LightGBM on every side), as the ``dask`` service
account Terraform's ``dask_training`` switch provisions, on its subnetwork, with no
public address (``cloudprovider.gcp.public_ingress`` off: the job reaches the VMs over
Direct VPC egress, and the custom role cannot attach an external IP). The VMs boot
Container-Optimized OS, which has Docker, so nothing is installed from the internet
the subnetwork cannot reach; the image is pulled from Artifact Registry with the VM's
credentials. The cluster is closed (its VMs deleted) when the run ends, whatever
happened; a job killed at its timeout cannot, and docs/deploy.md says how to find what
it left.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from modelrail.kernel.errors import ConfigError

SOURCE_IMAGE = "projects/cos-cloud/global/images/family/cos-stable"


@dataclasses.dataclass(frozen=True)
class GcpDask:
    """Where and how the per-run VMs are made (the MODELRAIL_DASK_GCP_* settings)."""

    project: str
    zone: str
    network: str
    machine_type: str
    workers: int
    service_account: str
    image: str

    def cluster_options(self, run_label: str) -> dict[str, Any]:
        """``GCPCluster``'s arguments."""
        registry = self.image.split("/", 1)[0]  # e.g. europe-west1-docker.pkg.dev
        return {
            "projectid": self.project,
            "zone": self.zone,
            "network": self.network,
            "machine_type": self.machine_type,
            "n_workers": self.workers,
            "docker_image": self.image,
            "source_image": SOURCE_IMAGE,
            "bootstrap": False,  # Docker is on the image; nothing to install
            "extra_bootstrap": [f"docker-credential-gcr configure-docker --registries={registry}"],
            "service_account": self.service_account,
            "instance_labels": {"modelrail": "training", "run": run_label},
            "auto_shutdown": True,
        }


class GcpDaskClusters:
    def __init__(self, gcp: GcpDask, cluster_class: Any = None) -> None:
        self.gcp = gcp
        self._cluster_class = cluster_class  # tests give a stand-in

    @contextlib.contextmanager
    def client(self, scheduler: str | None, workers: int) -> Iterator[Any]:
        """The run's own cluster (the deployment's size, not ``workers``), or the one at
        ``scheduler`` when pipeline.toml names one."""
        import dask
        from distributed import Client

        if scheduler is not None:
            with Client(scheduler, timeout=60) as client:
                yield client
            return
        cluster_class = self._cluster_class
        if cluster_class is None:
            try:
                from dask_cloudprovider.gcp import GCPCluster
            except ImportError as exc:
                raise ConfigError(
                    "MODELRAIL_DASK_CLOUD=gcp needs dask-cloudprovider[gcp] in the training "
                    "image (the distributed extra)"
                ) from exc
            cluster_class = GCPCluster
        with dask.config.set({"cloudprovider.gcp.public_ingress": False}):
            cluster = cluster_class(**self.gcp.cluster_options("modelrail"))
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
