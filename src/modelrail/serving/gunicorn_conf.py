"""gunicorn settings of the staging service's gunicorn entry point.

The image and the local deployer run ``python -m modelrail.serving.server`` (granian,
see ``server``), which is several times faster on the same cores; this entry point
serves the same app with the same environment variables.

Port: Vertex AI's ``AIP_HTTP_PORT``, else Cloud Run's ``PORT``, else 8080, on all
interfaces; ``MODELRAIL_BIND`` (comma-separated gunicorn binds, e.g. ``fd://3``)
overrides it (``fd://N`` for an inherited socket).

Workers: one process per core and a few threads each (``gthread``). Requests are
CPU-bound and short (tens of microseconds of LightGBM, the rest Python), so more
processes than cores only add context switches; threads keep connections alive
(Cloud Run's front end reuses them) and overlap the GIL-free LightGBM call and
socket I/O. The app is preloaded in the master so the model is read, hash-checked
and parsed once, before any worker forks; OpenMP is held to one thread so that fork
is safe and workers do not compete for cores.
"""

from __future__ import annotations

import os

from modelrail.logs import dict_config

_env = os.environ
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before lib_lightgbm is loaded

_port = _env.get("AIP_HTTP_PORT") or _env.get("PORT") or "8080"
bind = _env.get("MODELRAIL_BIND", f"0.0.0.0:{_port}").split(",")
workers = int(_env.get("MODELRAIL_WORKERS") or len(os.sched_getaffinity(0)))
worker_class = _env.get("MODELRAIL_WORKER_CLASS", "gthread")
threads = int(_env.get("MODELRAIL_THREADS", "4"))
preload_app = True
# The request timeout: a worker silent for this long is restarted.
timeout = int(float(_env.get("MODELRAIL_REQUEST_TIMEOUT_S", "30")))
# Cloud Run sends SIGTERM and kills 10 s later: finish in-flight requests before that.
graceful_timeout = int(_env.get("MODELRAIL_GRACEFUL_TIMEOUT_S", "8"))
keepalive = 75  # longer than the front ends' idle timeouts, so they close first
backlog = 2048
# Oversized headers are refused by gunicorn itself; bodies are bounded by the app.
limit_request_line = 8190
limit_request_fields = 100
accesslog = None  # the app logs requests in Cloud Logging's format
errorlog = "-"
loglevel = _env.get("MODELRAIL_GUNICORN_LOGLEVEL", "warning")
proc_name = _env.get("MODELRAIL_PROC_NAME", "modelrail-staging")
logconfig_dict = {
    **dict_config(
        {
            "gunicorn.error": {
                "handlers": ["stderr"],
                "level": loglevel.upper(),
                "propagate": False,
                "qualname": "gunicorn.error",
            },
            "gunicorn.access": {
                "handlers": [],
                "level": "CRITICAL",
                "propagate": False,
                "qualname": "gunicorn.access",
            },
        }
    ),
    "root": {"level": "WARNING", "handlers": ["stderr"]},
}


def when_ready(server):  # type: ignore[no-untyped-def]
    """Master is listening: serve the listening socket to a successor, if asked."""
    path = _env.get("MODELRAIL_HANDOFF_SOCKET")
    if path:
        from pathlib import Path

        from modelrail.serving import handoff

        handoff.serve(Path(path), [listener.sock for listener in server.LISTENERS])
    server.log.info("staging service ready")
