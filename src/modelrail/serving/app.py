"""The staging service: a Flask app (``StagingService``), built by ``create_app``.

``create_app()`` reads ``Settings`` and ``ServiceSettings`` from the environment, opens
the artifact bucket and the manifest signer (``adapters.by_mode``: the Cloud KMS key,
or embedded mode's key file), loads the pinned version through ``Registry.load``
(which verifies the manifest's signature, then checks the model's sha256 against it,
before anything parses it) and returns the app. A version that fails to load (a
missing or bad signature included) leaves the service live (``/healthz``) but not
ready (``/readyz`` and ``/predict`` answer 503), with the reason logged, unless
``require_model`` is set: then the process exits.

The routes are Flask views over the decoder (``modelrail.domain.decoding``) and the
predictor (``predictor``); every error is an RFC 9457 problem (``errorhandler``), every
answer carries its request id (``after_request``), and ``MAX_CONTENT_LENGTH`` bounds
bodies. Add blueprints, hooks or WSGI middleware (``app.wsgi_app = ...``) as to any
Flask app.

The server (granian) reaches the app through ``StagingService.__rsgi__``: it awaits
the body with a deadline (``BodyDeadlines``: a client that stops sending holds no
thread and gets 408), then calls ``wsgi_app`` with the whole body. Under granian's
WSGI interface a body is read by a blocked thread with no deadline, which a few
hundred stalled clients would exhaust.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import msgspec
import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
)

from modelrail.kernel import logs
from modelrail.kernel.problems import PROBLEM_JSON, Problem
from modelrail.serving import protocols
from modelrail.settings.service import ServiceSettings

if TYPE_CHECKING:
    import numpy as np

    from modelrail.domain.decoding import Batch
    from modelrail.kernel.ports import ManifestSigner

log = logging.getLogger("modelrail.serving")

_JSON = protocols.JSON
_REQUEST_ID_MAX = 128
# The two request headers WSGI names without the HTTP_ prefix.
_CGI_HEADERS = ("CONTENT_TYPE", "CONTENT_LENGTH")
# Predictions are msgspec structs (see ``predictor``); every other body is a dict.
_encode_answer = msgspec.json.Encoder().encode


@dataclasses.dataclass
class ModelState:
    """What the service serves: a predictor, or the reason there is none."""

    predictor: Any = None  # modelrail.serving.predictor.Predictor once loaded
    decoder: Any = None  # modelrail.domain.decoding.RequestDecoder
    log: Any = None  # modelrail.serving.prediction_log.PredictionLog, if it samples
    mirror: Any = None  # modelrail.serving.shadow.ShadowMirror, if it has a candidate
    error: str | None = None
    loaded_at: float | None = None
    load_seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None


def load_model(settings: ServiceSettings, store: Any, signer: ManifestSigner) -> ModelState:
    """Resolve the pin (or alias), verify and load it; never raises unless required.
    ``signer`` (a ``ManifestSigner``) gives the public key the manifest's signature is
    checked with; every other file is checked against that manifest."""
    from modelrail.domain.decoding import RequestDecoder
    from modelrail.domain.registry import Registry
    from modelrail.native import loader
    from modelrail.serving.predictor import Predictor

    started = time.perf_counter()
    registry = Registry(store, signer=signer)
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
        decoder = RequestDecoder(predictor.schema, max_instances=settings.max_instances)
        if settings.predictor == "compiled":
            reading = loader.Reading(
                predictor.schema, loaded.manifest.examples, decoder.plain_matrix
            )
            predictor.use_compiled(lambda file: registry.file(loaded.manifest, file), reading)
            if predictor.booster.read is not None:
                decoder.use_native(predictor.booster.read)
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
        f"loaded {name} v{version} (signature and sha256 verified) in {elapsed * 1000:.1f} ms",
        extra={"fields": {"event": "model_loaded", "model": name, "version": version}},
    )
    return ModelState(
        predictor=predictor,
        decoder=decoder,
        log=_prediction_log(
            store, name, version, loaded.manifest.lineage.log_rate, settings.service_name
        ),
        mirror=_shadow_mirror(store, settings.shadow_url, name, version),
        loaded_at=time.time(),
        load_seconds=elapsed,
    )


def _prediction_log(store: Any, model: str, version: int, rate: float, service: str | None) -> Any:
    """The version's prediction log, at the rate its configuration set (versions
    registered before the rate was recorded log at the default), its lines naming the
    ``service`` that answered; None at rate 0."""
    from modelrail.serving.prediction_log import PredictionLog

    if rate <= 0:
        return None

    def write(key: str, data: bytes) -> None:
        store.write(key, data, content_type="application/x-ndjson")

    return PredictionLog(write, model=model, version=version, rate=rate, service=service)


def _shadow_mirror(store: Any, url: str | None, model: str, version: int) -> Any:
    """The mirror to the candidate at ``url`` (None without one), at the rate of the
    model's configuration (``[production] shadow``, ``shadow_rate``), read by its
    sender thread."""
    if url is None:
        return None
    from modelrail.domain import shadow
    from modelrail.serving.shadow import ShadowMirror

    def read_rate() -> float:
        return shadow.definition_rate(store.read(shadow.definition_key(model)).data)

    def write(key: str, data: bytes) -> None:
        store.write(key, data, content_type="application/x-ndjson")

    return ShadowMirror(url, write, read_rate, model=model, version=version)


def create_app(test_config: Mapping[str, Any] | None = None) -> StagingService:
    """The service as the server runs it. ``test_config`` replaces the environment:
    ``store`` (a BlobStore), ``signer`` (a ``ManifestSigner``) plus any
    ``ServiceSettings`` field (``model_name``, ...)."""
    logs.configure()
    if test_config is None:
        from modelrail.adapters.by_mode import open_artifact_store, open_signer
        from modelrail.settings.process import Settings

        settings = Settings.from_env()
        service = ServiceSettings.from_env()
        store = open_artifact_store(settings)
        signer = open_signer(settings)
        project = settings.project
    else:
        service = ServiceSettings.from_mapping(test_config)
        store, signer = test_config["store"], test_config["signer"]
        project = str(test_config.get("project", "modelrail-local"))
    return StagingService(load_model(service, store, signer), service, project)


class StagingService(Flask):
    """The staging service's Flask app: ``/predict`` (and Vertex AI's predict route),
    ``/explain``, the probes, ``/openapi.json``, ``/v1/models/<name>``, and the MLflow,
    KServe v1 and Open Inference Protocol v2 routes over the same path
    (``protocols``)."""

    def __init__(self, state: ModelState, settings: ServiceSettings, project: str) -> None:
        super().__init__("modelrail.serving")
        self.state = state
        self.settings = settings
        self.project = project
        self.extensions["modelrail"] = state
        self.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
        self.log_all = settings.access_log == "all"
        self.log_errors = settings.access_log in ("all", "errors")
        # Set by the server when it is about to stop: answers then close their
        # connection, so clients reconnect elsewhere instead of racing the close.
        self.draining: Any = None  # anything with a truthy-when-draining ``value``
        self.deadlines: BodyDeadlines  # set in each worker by __rsgi_init__
        self._openapi_document: bytes | None = None
        self._base_environ: dict[str, Any] = {}
        rules = [
            (r, "predict", ["POST"]) for r in dict.fromkeys((settings.predict_route, "/predict"))
        ]
        rules += [("/healthz", "live", ["GET"]), ("/readyz", "ready", ["GET"])]
        if settings.health_route not in ("/healthz", "/readyz"):
            # Vertex AI sends traffic once its health route answers 200: that is readiness.
            rules.append((settings.health_route, "ready", ["GET"]))
        rules += [
            ("/explain", "explain", ["POST"]),
            ("/openapi.json", "openapi", ["GET"]),
            ("/v1/models/<path:name>", "metadata", ["GET"]),
            # MLflow's scoring protocol
            ("/invocations", "invocations", ["POST"]),
            ("/ping", "ping", ["GET"]),
            # KServe v1
            ("/", "v1_live", ["GET"]),
            ("/v1/models/<path:name>:predict", "v1_predict", ["POST"]),
            ("/v1/models/<path:name>:explain", "v1_explain", ["POST"]),
            # The Open Inference Protocol (KServe v2)
            ("/v2", "v2_server", ["GET"]),
            ("/v2/health/live", "v2_live", ["GET"]),
            ("/v2/health/ready", "v2_ready", ["GET"]),
            ("/v2/models/<path:name>", "v2_model", ["GET"]),
            ("/v2/models/<path:name>/ready", "v2_model_ready", ["GET"]),
            ("/v2/models/<path:name>/infer", "v2_infer", ["POST"]),
        ]
        for rule, view, methods in rules:
            self.add_url_rule(
                rule, f"{view}:{rule}", getattr(self, f"_{view}"), methods=methods,
                provide_automatic_options=False,
            )  # fmt: skip
        self.register_error_handler(Problem, self._problem)
        self.register_error_handler(HTTPException, self._http_error)
        self.register_error_handler(Exception, self._internal_error)
        self.after_request(self._finish)

    # -- views ---------------------------------------------------------------------

    def _predict(self) -> Response:
        batch = self._decoded()
        predictions = self._predicted(batch)[0]
        response = self._json(_encode_answer(self._answer(predictions, batch)))
        mirror = self.state.mirror
        if mirror is not None and mirror.sampled():  # the candidate's answer: serving.shadow
            environ = request.environ
            started = environ.get("modelrail.started", time.perf_counter())
            mirror.mirror(
                _request_id(), environ["modelrail.body"], request.content_type or _JSON,
                predictions, time.perf_counter() - started,
            )  # fmt: skip
        return response

    def _explain(self) -> Response:
        batch = self._decoded()
        predictions = self._predicted(batch)[0]
        answer = self._answer(predictions, batch)
        answer["explanations"] = self.state.predictor.explain(batch.matrix)
        return self._json(_encode_answer(answer))

    def _decoded(self, protocol: str | None = None) -> Batch:
        """The batch of a ``/predict`` body (the native reader's, or the decoder's)."""
        self._predicting(protocol)
        protocols.media_type(request.headers.get("Content-Type", ""))
        body = request.environ["modelrail.body"] = self._body()
        batch: Batch = self.state.decoder.decode(body)
        return batch

    def _predicting(self, protocol: str | None = None) -> None:
        """Marks the request as a prediction (its refusal goes to the prediction log),
        answered in ``protocol``'s form (None: this service's own), by a loaded model."""
        request.environ["modelrail.predicting"] = True
        self._speaks(protocol)
        self._predictor()

    def _predicted(self, batch: Batch) -> tuple[list[Any], np.ndarray]:
        """The answers and the model's numbers for ``batch``; sampled into the
        prediction log. Every protocol's prediction comes through here."""
        predictor = self.state.predictor
        outputs = predictor.outputs(batch.matrix)
        predictions = predictor.answers(outputs)
        if batch.warnings:
            request.environ["modelrail.detail"] = f"{len(batch.warnings)} warning(s)"
        prediction_log = self.state.log
        if prediction_log is not None and prediction_log.sampled():
            prediction_log.answered(_request_id(), batch.matrix, predictions, batch.unseen)
        return predictions, outputs

    def _answer(self, predictions: list[Any], batch: Batch) -> dict[str, Any]:
        predictor = self.state.predictor
        answer: dict[str, Any] = {
            "predictions": predictions,
            "model": {"name": predictor.model, "version": predictor.version},
        }
        if batch.warnings:
            answer["warnings"] = batch.warnings
        return answer

    # -- MLflow, KServe v1, the Open Inference Protocol (``protocols``) --------------------

    def _speaks(self, protocol: str | None) -> None:
        """Errors of this request are answered as ``protocol``'s clients read them."""
        if protocol is not None:
            request.environ["modelrail.protocol"] = protocol

    def _named(self, name: str) -> None:
        if name != self.settings.model_name:
            raise Problem(
                "not-found", f"this service serves {self.settings.model_name!r}, not {name!r}"
            )

    def _invocations(self) -> Response:
        self._predicting(protocols.MLFLOW)
        content_type = request.headers.get("Content-Type", "")
        batch = protocols.mlflow_batch(self.state.decoder, content_type, self._body())
        predictions = self._predicted(batch)[0]
        return self._json(_encode_answer(protocols.answer(predictions, batch.warnings)))

    def _ping(self) -> Response:
        self._speaks(protocols.MLFLOW)
        self._predictor()
        return self._json(b"{}")

    def _v1_live(self) -> Response:
        return self._json(b'{"status":"alive"}')

    def _v1_predict(self, name: str) -> Response:
        self._speaks(protocols.KSERVE_V1)
        self._named(name)
        batch = self._decoded(protocols.KSERVE_V1)
        predictions = self._predicted(batch)[0]
        return self._json(_encode_answer(protocols.answer(predictions, batch.warnings)))

    def _v1_explain(self, name: str) -> Response:
        self._speaks(protocols.KSERVE_V1)
        self._named(name)
        return self._explain()

    def _v2_server(self) -> Response:
        return self._json(b'{"name":"modelrail","version":"1","extensions":[]}')

    def _v2_live(self) -> Response:
        return self._json(b'{"live":true}')

    def _v2_ready(self) -> Response:
        ready = self.state.ready
        return self._json(orjson.dumps({"ready": ready}), 200 if ready else 503)

    def _v2_model(self, name: str) -> Response:
        self._speaks(protocols.OIP_V2)
        self._named(name)
        return self._json(orjson.dumps(protocols.v2_model(self._predictor())))

    def _v2_model_ready(self, name: str) -> Response:
        self._speaks(protocols.OIP_V2)
        self._named(name)
        self._predictor()
        return self._json(orjson.dumps({"name": name, "ready": True}))

    def _v2_infer(self, name: str) -> Response:
        self._predicting(protocols.OIP_V2)
        self._named(name)
        protocols.media_type(request.headers.get("Content-Type", ""))
        batch, requested, request_id = protocols.v2_request(self.state.decoder, self._body())
        outputs = self._predicted(batch)[1]
        predictor = self.state.predictor
        answer: dict[str, Any] = {
            "model_name": predictor.model,
            "model_version": str(predictor.version),
            "id": request_id if isinstance(request_id, str) else _request_id(),
            "outputs": protocols.v2_answer(predictor, outputs, requested),
        }
        if batch.warnings:
            answer["parameters"] = {"warnings": batch.warnings}
        return self._json(_encode_answer(answer))

    def _live(self) -> Response:
        return self._json(b'{"status":"ok"}')

    def _ready(self) -> Response:
        predictor = self._predictor()
        answer = {
            "status": "ready",
            "model": predictor.model,
            "version": predictor.version,
            "predictor": predictor.booster.kind,
            "reader": self.state.decoder.reader,
            "explainer": predictor.explainer,
        }
        if predictor.booster.kind != predictor.explainer:
            answer["explainer_reason"] = predictor.explainer_reason
        return self._json(orjson.dumps(answer))

    def _openapi(self) -> Response:
        if self._openapi_document is None:  # built once, on first use
            from modelrail.serving import openapi

            predictor = self.state.predictor
            self._openapi_document = orjson.dumps(
                openapi.build(
                    self.settings,
                    predictor.schema if predictor is not None else None,
                    self.settings.model_name,
                    predictor.version if predictor is not None else None,
                )
            )
        return self._json(self._openapi_document)

    def _metadata(self, name: str) -> Response:
        self._named(name)
        predictor = self._predictor()
        manifest = predictor.manifest.to_json()
        lineage = manifest["lineage"]
        body = {
            "name": predictor.model,
            "ready": True,  # KServe v1's model readiness (503 while not ready)
            "version": predictor.version,
            "run_id": manifest["run_id"],
            "created_at": manifest["created_at"],
            "objective": predictor.objective,
            "classes": list(predictor.classes),
            "features": manifest["features"].get("features", []),
            "best_iteration": manifest["best_iteration"],
            "predictor": predictor.booster.kind,
            "metrics": manifest["metrics"],
            "verdict": manifest["verdict"],
            "files": manifest["files"],
            "lineage": {k: v for k, v in lineage.items() if not isinstance(v, list | dict)},
            "limits": {
                "max_body_bytes": self.settings.max_body_bytes,
                "max_instances": self.settings.max_instances,
                "request_timeout_s": self.settings.request_timeout_s,
            },
        }
        return self._json(orjson.dumps(body, default=str))

    def _body(self) -> bytes:
        """The whole body, within ``MAX_CONTENT_LENGTH``, or the problem with it."""
        environ = request.environ
        if environ.get("modelrail.timed_out"):
            raise Problem(
                "request-timeout",
                f"the body did not arrive within {self.settings.request_timeout_s:g} s",
            )
        limit, length = self.settings.max_body_bytes, request.content_length
        if length is None:  # chunked: read at most one byte past the limit
            chunked: bytes = environ["wsgi.input"].read(limit + 1)
            if len(chunked) > limit:
                raise _too_large(limit)
            return chunked
        if length > limit:
            raise _too_large(limit)
        body: bytes = environ["wsgi.input"].read(length)
        if len(body) < length:  # the client stopped sending: do not parse a fragment
            raise Problem(
                "bad-request",
                f"the body ended after {len(body)} of the {length} bytes its "
                "Content-Length announced",
            )
        return body

    def _predictor(self) -> Any:
        if self.state.predictor is None:
            raise Problem("not-ready", self.state.error or "no model is loaded")
        return self.state.predictor

    def _json(self, body: bytes, status: int = 200, content_type: str = _JSON) -> Response:
        return self.response_class(body, status, content_type=content_type)

    # -- errors, request ids, the access log ------------------------------------------

    def _problem(self, problem: Problem) -> Response:
        environ = request.environ
        environ["modelrail.detail"] = problem.detail
        prediction_log = self.state.log
        if (
            prediction_log is not None
            and environ.get("modelrail.predicting")
            and prediction_log.sampled()
        ):
            errors = len(problem.extensions.get("errors", ()))
            prediction_log.refused(_request_id(), problem.status, problem.slug, errors)
        protocol = environ.get("modelrail.protocol")
        if protocol is not None:
            return self._json(protocols.error_body(protocol, problem), problem.status)
        body = problem.body(request.path)
        body["request_id"] = _request_id()
        return self._json(orjson.dumps(body), problem.status, PROBLEM_JSON)

    def _http_error(self, error: HTTPException) -> Response:
        """Flask's own errors (no route, a method a route does not take, a body over
        ``MAX_CONTENT_LENGTH``) as problems."""
        if isinstance(error, NotFound):
            problem = Problem("not-found", f"no route {request.path}")
        elif isinstance(error, MethodNotAllowed):
            problem = Problem(
                "method-not-allowed", f"{request.method} is not allowed on {request.path}"
            )
        elif isinstance(error, RequestEntityTooLarge):
            problem = _too_large(self.settings.max_body_bytes)
        else:
            problem = Problem("bad-request", error.description or "bad request")
        response = self._problem(problem)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(m for m in error.valid_methods if m != "HEAD")
        return response

    def _internal_error(self, error: Exception) -> Response:
        log.error(
            "request failed", exc_info=error,
            extra={"fields": {"event": "internal_error", "request_id": _request_id()}},
        )  # fmt: skip
        response = self._problem(Problem("internal-error", "see the service log"))
        request.environ["modelrail.detail"] = "internal error"
        return response

    def _finish(self, response: Response) -> Response:
        environ = request.environ
        response.headers["X-Request-Id"] = _request_id()
        if environ.get("modelrail.timed_out") or (
            self.draining is not None and self.draining.value
        ):
            # Draining, or the rest of a late body may still come: close the connection.
            response.headers["Connection"] = "close"
        status = response.status_code
        if self.log_all or (status >= 400 and self.log_errors):
            self._log(status, environ.get("modelrail.detail"))
        return response

    def _log(self, status: int, detail: str | None) -> None:
        headers = request.headers
        started = request.environ.get("modelrail.started")
        fields: dict[str, Any] = {
            "httpRequest": {
                "requestMethod": request.method,
                "requestUrl": request.path,
                "status": status,
                "latency": f"{time.perf_counter() - started:.6f}s" if started else None,
                "userAgent": headers.get("User-Agent"),
                "remoteIp": request.remote_addr,
            },
            "request_id": _request_id(),
            **logs.trace_fields(
                self.project, headers.get("traceparent"), headers.get("X-Cloud-Trace-Context")
            ),
        }
        message = f"{request.method} {request.path} {status}"
        if detail:
            message += f": {detail}"
        level = (
            logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        )
        log.log(level, message, extra={"fields": fields})

    # -- granian's RSGI interface -------------------------------------------------------

    def __rsgi_init__(self, loop: Any) -> None:
        """Called by granian in each worker, with the worker's event loop."""
        self.deadlines = BodyDeadlines(loop, self.settings.request_timeout_s)
        self._base_environ = {
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            # The whole body is in wsgi.input: Werkzeug may read a body without a
            # Content-Length (chunked) up to MAX_CONTENT_LENGTH.
            "wsgi.input_terminated": True,
        }

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """granian's RSGI interface: the body is awaited, so a client that stops
        sending holds no thread, and one that has not sent it all within
        ``request_timeout_s`` is answered 408; then the WSGI app answers."""
        started = time.perf_counter()
        body = await _read_body(protocol, scope, self.settings.max_body_bytes, self.deadlines)
        host, _, port = (scope.server or ":").rpartition(":")
        environ = {
            **self._base_environ,
            "REQUEST_METHOD": scope.method,
            "PATH_INFO": unquote(scope.path, "latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": host or "localhost",
            "SERVER_PORT": port or "80",
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": (scope.client or "").rpartition(":")[0],
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body or b""),
            "modelrail.started": started,
        }
        if body is None:
            environ["modelrail.timed_out"] = True
        for name, value in scope.headers.items():
            key = name.upper().replace("-", "_")
            if key not in _CGI_HEADERS:
                key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        answer: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
        ) -> Callable[[bytes], object]:
            answer[:] = (status, headers)
            return _no_write

        chunks = self.wsgi_app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = answer
        protocol.response_bytes(int(status[:3]), headers, data)


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the staging service returns its body; it never calls write()")


def _request_id() -> str:
    """The request's id: the client's ``X-Request-Id`` if it is a sane one, else 128
    random bits as 32 hex digits (like uuid4().hex at a sixth of its cost)."""
    environ = request.environ
    found: str | None = environ.get("modelrail.request_id")
    if found is None:
        found = environ.get("HTTP_X_REQUEST_ID")
        if not found or len(found) > _REQUEST_ID_MAX or not found.isprintable():
            found = os.urandom(16).hex()
        environ["modelrail.request_id"] = found
    return found


def _too_large(limit: int) -> Problem:
    return Problem("payload-too-large", f"the body must be at most {limit} bytes", limit=limit)


class BodyDeadlines:
    """Cancels the body reads of requests older than ``timeout`` seconds.

    One timer per worker looks at the pending reads every ``timeout / 8`` seconds, so a
    request pays a dict insert and delete per read, no timer and no task of its own.
    This works whichever task implementation steps the coroutine: granian's Rust tasks
    are no asyncio tasks, which ``asyncio.timeout`` needs. A read cancelled here raises
    ``CancelledError`` at its ``await``, at most ``timeout / 8`` after its deadline."""

    def __init__(self, loop: Any, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._tick = timeout / 8
        self._pending: dict[Any, float] = {}
        loop.call_later(self._tick, self._expire)

    def deadline(self) -> float:
        """The deadline of a request whose body starts to be read now."""
        return float(self._loop.time()) + self._timeout

    async def wait(self, read: Any, deadline: float) -> Any:
        """The result of ``read`` (a future of granian's), cancelled past ``deadline``."""
        pending = self._pending
        pending[read] = deadline
        try:
            return await read
        finally:
            del pending[read]

    def _expire(self) -> None:
        now = self._loop.time()
        for read, deadline in list(self._pending.items()):
            if deadline <= now:
                read.cancel()
        self._loop.call_later(self._tick, self._expire)


async def _read_body(
    protocol: Any, scope: Any, limit: int, deadlines: BodyDeadlines
) -> bytes | None:
    """The body as it arrives, up to one chunk past ``limit`` (``_read_body`` of the
    WSGI path then answers 413); a client that closes early leaves what it sent. None
    if the whole body did not arrive within the request's deadline. A body whose
    length is announced and within ``limit`` is read until that length, chunk by chunk
    (granian's one-call read keeps nothing of a body cut short, and the 400 names how
    much arrived)."""
    deadline = deadlines.deadline()
    length = scope.headers.get("content-length", "")
    wanted = int(length) if length.isdigit() and int(length) <= limit else limit + 1
    chunks: list[bytes] = []
    try:
        with contextlib.suppress(RuntimeError):  # granian: the client closed the connection
            stream = protocol.__aiter__()
            size = 0
            while size < wanted:
                chunk = await deadlines.wait(stream.__anext__(), deadline)
                if not chunk:  # granian: the body ended
                    break
                chunks.append(chunk)
                size += len(chunk)
    except StopAsyncIteration:
        pass
    except asyncio.CancelledError:
        return None
    return b"".join(chunks)
