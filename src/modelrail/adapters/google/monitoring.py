"""RevisionMetrics on Cloud Monitoring (API v3, ``projects.timeSeries.list``, REST).

Cloud Run writes each revision's ``run.googleapis.com/request_count`` (labelled with
``response_code_class``) and ``run.googleapis.com/request_latencies`` (a distribution,
in ms) to Cloud Monitoring; a production canary reads what the old and the new revision
answered during a step from there. Cloud Monitoring shows a minute's requests a minute
or two later, so a step's ``hold_seconds`` should be some minutes: a count that lags
only holds the step longer.

In the cloud the calls carry the default credentials (``roles/monitoring.viewer``);
with ``api_endpoint`` set (emulator mode: the local control plane answers the same
requests from its counts) they go there unauthenticated.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson
import urllib3

from modelrail.kernel.errors import TransientError

_ENDPOINT = "https://monitoring.googleapis.com"
_CALL_TIMEOUT_S = 30.0
REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CloudMonitoringMetrics:
    """Each Cloud Run revision's requests, 5xx answers and p99 latency in a window."""

    def __init__(self, project: str, api_endpoint: str | None = None) -> None:
        self.project = project
        self.api_endpoint = api_endpoint
        self._http: Any = None

    def _session(self) -> Any:
        if self._http is None:
            if self.api_endpoint is not None:
                self._http = urllib3.PoolManager(retries=False)
            else:
                import google.auth
                from google.auth.transport.urllib3 import AuthorizedHttp

                credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/monitoring.read"]
                )
                self._http = AuthorizedHttp(credentials)  # type: ignore[no-untyped-call]
        return self._http

    def _series(
        self, metric: str, service: str, revision: str, start: datetime, end: datetime,
        aggregation: dict[str, str],
    ) -> list[dict[str, Any]]:  # fmt: skip
        query = {
            "filter": (
                f'metric.type = "{metric}" AND resource.type = "cloud_run_revision" AND '
                f'resource.labels.service_name = "{service}" AND '
                f'resource.labels.revision_name = "{revision}"'
            ),
            "interval.startTime": _stamp(start),
            "interval.endTime": _stamp(end),
            **{f"aggregation.{key}": value for key, value in aggregation.items()},
        }
        url = f"{self.api_endpoint or _ENDPOINT}/v3/projects/{self.project}/timeSeries"
        series: list[dict[str, Any]] = []
        while True:
            try:
                response = self._session().request(
                    "GET", url, fields=query, timeout=_CALL_TIMEOUT_S
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise TransientError(f"reading {metric} of {revision}: {exc}") from exc
            if response.status != 200:
                raise TransientError(
                    f"reading {metric} of {revision}: HTTP {response.status} "
                    f"{response.data[:300]!r}"
                )
            body = orjson.loads(response.data)
            series += body.get("timeSeries", [])
            if not body.get("nextPageToken"):
                return series
            query["pageToken"] = body["nextPageToken"]

    def window(self, service: str, revision: str, start: datetime, end: datetime) -> dict[str, Any]:
        requests = errors = 0
        for series in self._series(REQUEST_COUNT, service, revision, start, end, {}):
            count = sum(int(point["value"].get("int64Value", 0)) for point in series["points"])
            requests += count
            if series["metric"].get("labels", {}).get("response_code_class") == "5xx":
                errors += count
        seconds = max(60, math.ceil((end - start).total_seconds()))
        latencies = self._series(
            REQUEST_LATENCIES, service, revision, start, end,
            {
                "alignmentPeriod": f"{seconds}s",
                "perSeriesAligner": "ALIGN_DELTA",
                "crossSeriesReducer": "REDUCE_PERCENTILE_99",
                "groupByFields": "resource.labels.revision_name",
            },
        )  # fmt: skip
        p99 = [
            float(point["value"]["doubleValue"])
            for series in latencies
            for point in series["points"]
            if "doubleValue" in point["value"]
        ]
        return {"requests": requests, "errors": errors, "p99_ms": max(p99) if p99 else None}
