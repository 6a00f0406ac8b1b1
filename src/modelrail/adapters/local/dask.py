"""Dask clusters on this machine or reached by address (``DaskClusters``).

With a scheduler's address (``[training.dask] scheduler``, or the emulator stack's own
``dask scheduler``), training connects to that cluster; without one it starts a
``distributed.LocalCluster`` of single-threaded worker processes for the block and
stops it after, so nothing outlives the training job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

# How long connecting to a scheduler may take before the job fails (and is retried).
CONNECT_TIMEOUT_S = 60


class DaskClusters:
    def __init__(self, scheduler: str | None = None) -> None:
        # A scheduler the deployment names (MODELRAIL_DASK_SCHEDULER), used when
        # pipeline.toml names none.
        self.scheduler = scheduler

    @contextlib.contextmanager
    def client(self, scheduler: str | None, workers: int) -> Iterator[Any]:
        from distributed import Client, LocalCluster

        address = scheduler or self.scheduler
        if address is not None:
            with Client(address, timeout=CONNECT_TIMEOUT_S) as client:
                yield client
            return
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
