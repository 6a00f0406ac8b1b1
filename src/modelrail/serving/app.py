"""The staging service's application factory (its composition root).

``create_app()`` reads ``Settings`` and ``ServiceSettings`` from the environment, opens
the artifact bucket, loads the pinned version through ``Registry.load`` (which checks
the model's sha256 before anything parses it) and returns a Flask app. A version that
fails to load leaves the service live (``/healthz``) but not ready (``/readyz`` and
``/predict`` answer 503), with the reason logged, unless ``require_model`` is set.

The prediction route and the probes (``/healthz``, ``/readyz``) are answered by a small
WSGI layer in front of Flask: it reads the body, decodes it (``requests``), predicts
(``predictor``) and writes the JSON answer itself, skipping Flask's request and response
objects, which would cost more per request than the prediction itself. Every other
route is an ordinary Flask view. Both share the request-id, trace and error
conventions.

``create_service()`` is the same service for the server process: the WSGI layer with
the model loaded, and the Flask app built on the first request that needs it, so that
importing Flask (a third of a start-up) is not on the way to the first prediction.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from modelrail import logs
from modelrail.serving.problems import PROBLEM_JSON, Problem
from modelrail.serving.settings import ServiceSettings

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger("modelrail.serving")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_JSON = "application/json"
_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    422: "422 Unprocessable Content",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
_REQUEST_ID_MAX = 128
# Predictions are msgspec structs (see ``predictor``); every other body is a dict.
_encode_answer = msgspec.json.Encoder().encode


@dataclasses.dataclass
class ModelState:
    """What the service serves: a predictor, or the reason there is none."""

    predictor: Any = None  # modelrail.serving.predictor.Predictor once loaded
    decoder: Any = None  # modelrail.serving.requests.RequestDecoder
    error: str | None = None
    loaded_at: float | None = None
    load_seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None


def load_model(settings: ServiceSettings, store: Any) -> ModelState:
    """Resolve the pin (or alias), verify and load it; never raises unless required."""
    from modelrail.registry import Registry
    from modelrail.serving.predictor import Predictor
    from modelrail.serving.requests import RequestDecoder

    started = time.perf_counter()
    registry = Registry(store)
    name = settings.model_name
    try:
        version = settings.model_version
        if version is None:
            assert settings.model_alias is not None
            alias = registry.alias(name, settings.model_alias)
            if alias is None:
                raise LookupError(f"{name} has no alias {settings.model_alias!r}")
            version = alias.version
        loaded = registry.load(name, version)
        predictor = Predictor(name, version, loaded.manifest, loaded.model_text)
        if settings.predictor == "compiled":
            predictor.use_compiled(lambda file: registry.read_file(name, loaded.version, file))
        decoder = RequestDecoder(predictor.schema, max_instances=settings.max_instances)
    except Exception as exc:
        message = f"model {name} v{settings.model_version or settings.model_alias} refused: {exc}"
        log.error(
            message,
            extra={
                "fields": {
                    "event": "model_refused",
                    "model": name,
                    "error_type": type(exc).__name__,
                }
            },
        )
        if settings.require_model:
            raise
        return ModelState(error=message)
    elapsed = time.perf_counter() - started
    log.info(
        f"loaded {name} v{version} (sha256 verified) in {elapsed * 1000:.1f} ms",
        extra={"fields": {"event": "model_loaded", "model": name, "version": version}},
    )
    return ModelState(
        predictor=predictor, decoder=decoder, loaded_at=time.time(), load_seconds=elapsed
    )


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service. ``test_config`` replaces the environment: ``store`` (a
    BlobStore) plus any ``ServiceSettings`` field (``model_name``, ``model_version``, ...)."""
    service, state, project = _load(test_config)
    app = build_flask(service, state)
    app.wsgi_app = ServiceMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, state, service, project
    )
    return app


def create_service(test_config: Mapping[str, Any] | None = None) -> ServiceMiddleware:
    """The service as the server runs it: a WSGI callable whose Flask app is built
    on the first request that is not a prediction or a probe."""
    service, state, project = _load(test_config)

    def flask_app() -> WsgiApp:
        return build_flask(service, state).wsgi_app

    return ServiceMiddleware(flask_app, state, service, project, lazy=True)


def _load(test_config: Mapping[str, Any] | None) -> tuple[ServiceSettings, ModelState, str]:
    logs.configure()
    if test_config is None:
        from modelrail.bootstrap import open_artifact_store
        from modelrail.config import Settings

        settings = Settings.from_env()
        service = ServiceSettings.from_env()
        store = open_artifact_store(settings)
        project = settings.project
    else:
        service = ServiceSettings.from_mapping(test_config)
        store = test_config["store"]
        project = str(test_config.get("project", "modelrail-local"))
    return service, load_model(service, store), project


def build_flask(service: ServiceSettings, state: ModelState) -> Flask:
    """The Flask app of every route but the prediction route and the probes."""
    from flask import Flask, Response, request

    from modelrail.serving import openapi

    app = Flask("modelrail.serving")
    app.config["MODELRAIL_SERVICE"] = service
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["modelrail"] = state
    version = state.predictor.version if state.ready else None
    document = orjson.dumps(
        openapi.build(
            service, state.predictor.schema if state.ready else None, service.model_name, version
        )
    )

    def problem_response(problem: Problem) -> Response:
        body = problem.body(request.path)
        body["request_id"] = request.environ.get("modelrail.request_id", "")
        return Response(orjson.dumps(body), status=problem.status, mimetype=PROBLEM_JSON)

    def not_ready() -> Response:
        return problem_response(Problem("not-ready", state.error or "no model is loaded"))

    @app.get("/v1/models/<name>")
    def model_metadata(name: str) -> Response:
        if name != service.model_name:
            return problem_response(
                Problem("not-found", f"this service serves {service.model_name!r}, not {name!r}")
            )
        if not state.ready:
            return not_ready()
        manifest = state.predictor.manifest
        lineage = manifest.get("lineage") or {}
        body = {
            "name": state.predictor.model,
            "version": state.predictor.version,
            "run_id": manifest.get("run_id"),
            "created_at": manifest.get("created_at"),
            "objective": state.predictor.objective,
            "classes": list(state.predictor.classes),
            "features": manifest.get("features", {}).get("features", []),
            "best_iteration": manifest.get("best_iteration"),
            "predictor": state.predictor.booster.kind,
            "metrics": manifest.get("metrics", {}),
            "verdict": manifest.get("verdict"),
            "files": manifest.get("files", {}),
            "lineage": {k: v for k, v in lineage.items() if not isinstance(v, list | dict)}
            if isinstance(lineage, dict)
            else lineage,
            "limits": {
                "max_body_bytes": service.max_body_bytes,
                "max_instances": service.max_instances,
                "request_timeout_s": service.request_timeout_s,
            },
        }
        return Response(orjson.dumps(body, default=str), mimetype=_JSON)

    @app.get("/openapi.json")
    def openapi_document() -> Response:
        return Response(document, mimetype=_JSON)

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return problem_response(Problem("not-found", f"no route {request.path}"))

    @app.errorhandler(405)
    def wrong_method(_: Exception) -> Response:
        return problem_response(
            Problem("method-not-allowed", f"{request.method} is not allowed on {request.path}")
        )

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):  # e.g. a 400 Werkzeug raised itself
            return problem_response(Problem("bad-request", exc.description or exc.name))
        log.exception("unhandled error", extra={"fields": {"event": "internal_error"}})
        return problem_response(Problem("internal-error", "see the service log"))

    return app


class ServiceMiddleware:
    """Request ids, trace-aware logging, and the prediction route and probes without
    Flask. ``flask_app`` is the WSGI app of the other routes, or with ``lazy`` a
    function that builds it (once, on first use)."""

    def __init__(
        self,
        flask_app: Any,
        state: ModelState,
        settings: ServiceSettings,
        project: str,
        *,
        lazy: bool = False,
    ) -> None:
        self._flask_app: WsgiApp | None = None if lazy else flask_app
        self._build_flask: Callable[[], WsgiApp] | None = flask_app if lazy else None
        self._flask_lock = threading.Lock()
        self.state = state
        self.settings = settings
        self.predict_routes = {settings.predict_route, "/predict"}
        # Vertex AI sends traffic once its health route answers 200: that is readiness.
        self.probe_routes = {"/healthz": False, "/readyz": True}
        self.probe_routes.setdefault(settings.health_route, True)
        self.project = project
        self.log_all = settings.access_log == "all"
        self.log_errors = settings.access_log in ("all", "errors")
        # Set by the server when it is about to stop: answers then close their
        # connection, so clients reconnect elsewhere instead of racing the close.
        self.draining: Any = None  # anything with a truthy-when-draining ``value``

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if not request_id or len(request_id) > _REQUEST_ID_MAX or not request_id.isprintable():
            # 128 random bits as 32 hex digits, like uuid4().hex at a sixth of its cost.
            request_id = os.urandom(16).hex()
        environ["modelrail.request_id"] = request_id
        closing = self.draining is not None and self.draining.value
        path = environ.get("PATH_INFO")
        if path in self.predict_routes or path in self.probe_routes:
            if path in self.predict_routes:
                status, content_type, body, detail = self._predict(environ, request_id)
            else:
                status, content_type, body, detail = self._probe(environ, path, request_id)
            headers = [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", request_id),
            ]
            if status == 405:
                headers.append(("Allow", "POST" if path in self.predict_routes else "GET"))
            if closing:
                headers.append(("Connection", "close"))
            start_response(_STATUS_LINES.get(status, f"{status} Error"), headers)
            if self.log_all or (status >= 400 and self.log_errors):
                self._log(environ, status, started, request_id, detail)
            return [body] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]

        captured: list[int] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.append(int(status[:3]))
            headers.append(("X-Request-Id", request_id))
            if closing:
                headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        result = self.flask_app()(environ, start)
        if captured and (self.log_all or (captured[0] >= 400 and self.log_errors)):
            self._log(environ, captured[0], started, request_id, None)
        return result

    def flask_app(self) -> WsgiApp:
        app = self._flask_app
        if app is None:
            with self._flask_lock:
                if self._flask_app is None:
                    assert self._build_flask is not None
                    self._flask_app = self._build_flask()
                app = self._flask_app
        return app

    def _probe(
        self, environ: dict[str, Any], path: str, request_id: str
    ) -> tuple[int, str, bytes, str | None]:
        method = environ.get("REQUEST_METHOD")
        problem = None
        if method not in ("GET", "HEAD"):
            problem = Problem("method-not-allowed", f"{method} is not allowed on {path}")
        elif not self.probe_routes[path]:
            return 200, _JSON, b'{"status":"ok"}', None
        predictor = self.state.predictor
        if predictor is None and problem is None:
            problem = Problem("not-ready", self.state.error or "no model is loaded")
        if problem is not None:
            body_dict = problem.body(path)
            body_dict["request_id"] = request_id
            return problem.status, PROBLEM_JSON, orjson.dumps(body_dict), problem.detail
        answer = {
            "status": "ready",
            "model": predictor.model,
            "version": predictor.version,
            "predictor": predictor.booster.kind,
        }
        return 200, _JSON, orjson.dumps(answer), None

    def _predict(
        self, environ: dict[str, Any], request_id: str
    ) -> tuple[int, str, bytes, str | None]:
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                raise Problem("method-not-allowed", "use POST")
            state = self.state
            if state.predictor is None:
                raise Problem("not-ready", state.error or "no model is loaded")
            _check_media_type(environ.get("CONTENT_TYPE", ""))
            body = self._read_body(environ)
            batch = state.decoder.decode(body)
            predictor = state.predictor
            answer: dict[str, Any] = {
                "predictions": predictor.predict(batch.matrix),
                "model": {"name": predictor.model, "version": predictor.version},
            }
            if batch.warnings:
                answer["warnings"] = batch.warnings
            return (
                200,
                _JSON,
                _encode_answer(answer),
                (f"{len(batch.warnings)} warning(s)" if batch.warnings else None),
            )
        except Problem as problem:
            body_dict = problem.body(environ.get("PATH_INFO"))
            body_dict["request_id"] = request_id
            return problem.status, PROBLEM_JSON, orjson.dumps(body_dict), problem.detail
        except Exception:
            log.exception(
                "prediction failed",
                extra={"fields": {"event": "internal_error", "request_id": request_id}},
            )
            failure = Problem("internal-error", "see the service log")
            body_dict = failure.body(environ.get("PATH_INFO"))
            body_dict["request_id"] = request_id
            return 500, PROBLEM_JSON, orjson.dumps(body_dict), "internal error"

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        limit = self.settings.max_body_bytes
        stream = environ["wsgi.input"]
        length_header = environ.get("CONTENT_LENGTH")
        if length_header:
            try:
                length = int(length_header)
            except ValueError:
                raise Problem("bad-request", "invalid Content-Length") from None
            if length > limit:
                raise _too_large(limit)
            body: bytes = stream.read(length)
            if len(body) < length:  # the client stopped sending: do not parse a fragment
                raise Problem(
                    "bad-request",
                    f"the body ended after {len(body)} of the {length} bytes its "
                    "Content-Length announced",
                )
            return body
        # No Content-Length (chunked): read at most one byte past the limit.
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise _too_large(limit)
        return body

    def _log(
        self,
        environ: dict[str, Any],
        status: int,
        started: float,
        request_id: str,
        detail: str | None,
    ) -> None:
        fields: dict[str, Any] = {
            "httpRequest": {
                "requestMethod": environ.get("REQUEST_METHOD"),
                "requestUrl": environ.get("PATH_INFO"),
                "status": status,
                "latency": f"{time.perf_counter() - started:.6f}s",
                "userAgent": environ.get("HTTP_USER_AGENT"),
                "remoteIp": environ.get("REMOTE_ADDR"),
            },
            "request_id": request_id,
            **logs.trace_fields(
                self.project,
                environ.get("HTTP_TRACEPARENT"),
                environ.get("HTTP_X_CLOUD_TRACE_CONTEXT"),
            ),
        }
        message = f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} {status}"
        if detail:
            message += f": {detail}"
        level = (
            logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        )
        log.log(level, message, extra={"fields": fields})


def _check_media_type(content_type: str) -> None:
    """JSON, in UTF-8 (RFC 8259): a body in another charset would be read as the wrong
    text, so it is refused rather than guessed at."""
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type != _JSON:
        raise Problem(
            "unsupported-media-type",
            f"send Content-Type: application/json, not {media_type or 'none'}",
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise Problem(
                "unsupported-media-type",
                f"JSON is read as UTF-8 (RFC 8259); charset={charset} is not",
            )


def _too_large(limit: int) -> Problem:
    return Problem("payload-too-large", f"the body must be at most {limit} bytes", limit=limit)
