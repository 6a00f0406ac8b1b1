"""The staging service's application factory (its composition root).

``create_service()`` reads ``Settings`` and ``ServiceSettings`` from the environment,
opens the artifact bucket and the manifest signer (``adapters.by_mode.open_signer``: the Cloud
KMS key, or embedded mode's key file), loads the pinned version through
``Registry.load`` (which verifies the manifest's signature, then checks the model's
sha256 against it, before anything parses it) and returns the ``Service``. A version
that fails to load (a missing or bad signature included) leaves the service live
(``/healthz``) but not ready (``/readyz`` and ``/predict`` answer 503), with the reason
logged, unless ``require_model`` is set: then the process exits. ``create_app()``
wraps the same service in a Flask app (its test client, its extension registry).

``Service`` answers every route and renders every problem, in one place
(``Service.respond``): it reads the body, decodes it (``modelrail.domain.decoding``), predicts
(``predictor``) and writes the JSON answer itself, with no request or response objects,
which would cost more per request than the prediction itself. Two thin adapters carry
requests to it: granian's RSGI interface (``Service.__rsgi__``, as the server runs it),
which awaits the body with a deadline, so a client that stops sending holds no worker
thread, and WSGI (``Service.__call__``: the Flask app and its test client).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from modelrail.kernel import logs
from modelrail.kernel.problems import PROBLEM_JSON, Problem
from modelrail.settings.service import ServiceSettings

if TYPE_CHECKING:
    from flask import Flask

    from modelrail.kernel.ports import ManifestSigner

log = logging.getLogger("modelrail.serving")

_JSON = "application/json"
_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    408: "408 Request Timeout",
    413: "413 Content Too Large",
    415: "415 Unsupported Media Type",
    422: "422 Unprocessable Content",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
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
    from modelrail.native import compiled
    from modelrail.serving.predictor import Predictor

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
        loaded = registry.load(name, version, signer=signer)
        predictor = Predictor(name, version, loaded.manifest, loaded.model_text)
        decoder = RequestDecoder(predictor.schema, max_instances=settings.max_instances)
        if settings.predictor == "compiled":
            reading = compiled.Reading(
                predictor.schema, loaded.manifest.get("examples") or [], decoder.plain_matrix
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
        predictor=predictor, decoder=decoder, loaded_at=time.time(), load_seconds=elapsed
    )


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service as a Flask app (its test client, its extension registry).
    ``test_config`` replaces the environment: ``store`` (a BlobStore), ``signer`` (a
    ``ManifestSigner``) plus any ``ServiceSettings`` field (``model_name``, ...)."""
    from flask import Flask

    service = create_service(test_config)
    app = Flask("modelrail.serving")
    app.config["MODELRAIL_SERVICE"] = service.settings
    app.extensions["modelrail"] = service.state
    app.wsgi_app = service  # type: ignore[method-assign]
    return app


def create_service(test_config: Mapping[str, Any] | None = None) -> Service:
    """The service as the server runs it: an RSGI app (``__rsgi__``, as granian serves
    it) that is also a WSGI callable (``__call__``), without importing Flask."""
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
    return Service(load_model(service, store, signer), service, project)


class Service:
    """Every route of the staging service, and the one place its problems are
    rendered (``respond``): request ids, trace-aware logging, ``Connection: close``
    while draining. No request or response objects, which would cost more per request
    than the prediction itself: each interface's adapter hands ``respond`` the method,
    the path, a header lookup and a body reader."""

    def __init__(self, state: ModelState, settings: ServiceSettings, project: str) -> None:
        self.state = state
        self.settings = settings
        self.predict_routes = {settings.predict_route, "/predict"}
        # Vertex AI sends traffic once its health route answers 200: that is readiness.
        self.probe_routes = {"/healthz": False, "/readyz": True}
        self.probe_routes.setdefault(settings.health_route, True)
        self.metadata_prefix = "/v1/models/"
        self.project = project
        self.log_all = settings.access_log == "all"
        self.log_errors = settings.access_log in ("all", "errors")
        # Set by the server when it is about to stop: answers then close their
        # connection, so clients reconnect elsewhere instead of racing the close.
        self.draining: Any = None  # anything with a truthy-when-draining ``value``
        self._openapi: bytes | None = None
        self.deadlines: BodyDeadlines  # set in each worker by __rsgi_init__

    def respond(
        self,
        method: str,
        path: str,
        header: Callable[[str], str | None],
        read: Callable[[int], bytes] | None,
        client: str | None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer to one request, whichever interface carried it: its status,
        headers and body. ``header`` gives a request header by its lower-case name;
        ``read(n)`` gives up to n bytes of the body (None: it did not arrive within the
        request timeout); ``client`` is the client's address, for the access log."""
        started = time.perf_counter()
        request_id = header("x-request-id")
        if not request_id or len(request_id) > _REQUEST_ID_MAX or not request_id.isprintable():
            # 128 random bits as 32 hex digits, like uuid4().hex at a sixth of its cost.
            request_id = os.urandom(16).hex()
        allowed = "GET"
        try:
            if path in self.predict_routes:
                allowed = "POST"
                status, body, detail = self._predict(method, header, read)
            elif path in self.probe_routes:
                status, body, detail = self._probe(method, path)
            elif path == "/openapi.json":
                status, body, detail = self._get(method, path, self._openapi_document)
            elif path.startswith(self.metadata_prefix):
                name = path.removeprefix(self.metadata_prefix)
                status, body, detail = self._get(method, path, lambda: self._metadata(name))
            else:
                raise Problem("not-found", f"no route {path}")
            content_type = _JSON
        except Problem as problem:
            status, detail = problem.status, problem.detail
            body, content_type = self._render(problem, path, request_id), PROBLEM_JSON
        except Exception:
            log.exception(
                "request failed",
                extra={"fields": {"event": "internal_error", "request_id": request_id}},
            )
            failure = Problem("internal-error", "see the service log")
            status, detail = failure.status, "internal error"
            body, content_type = self._render(failure, path, request_id), PROBLEM_JSON
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("X-Request-Id", request_id),
        ]
        if status == 405:
            headers.append(("Allow", allowed))
        if read is None or (self.draining is not None and self.draining.value):
            # Draining, or the rest of a late body may still come: close the connection.
            headers.append(("Connection", "close"))
        if self.log_all or (status >= 400 and self.log_errors):
            self._log(method, path, header, client, status, started, request_id, detail)
        return status, headers, body if method != "HEAD" else b""

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """WSGI (the Flask app, its test client): the body is read as it is asked for."""

        def header(name: str) -> str | None:
            key = name.upper().replace("-", "_")
            value: str | None = environ.get(key if key in _CGI_HEADERS else "HTTP_" + key)
            return value

        status, headers, body = self.respond(
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("PATH_INFO") or "/",
            header,
            environ["wsgi.input"].read,
            environ.get("REMOTE_ADDR"),
        )
        start_response(_STATUS_LINES.get(status, f"{status} Error"), headers)
        return [body]

    def __rsgi_init__(self, loop: Any) -> None:
        """Called by granian in each worker, with the worker's event loop."""
        self.deadlines = BodyDeadlines(loop, self.settings.request_timeout_s)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        """granian's RSGI interface: the body is awaited, so a client that stops
        sending holds no thread, and one that has not sent it all within
        ``request_timeout_s`` is answered 408."""
        body = await _read_body(protocol, scope, self.settings.max_body_bytes, self.deadlines)
        status, headers, answer = self.respond(
            scope.method,
            scope.path,
            scope.headers.get,
            None if body is None else lambda size: body[:size],
            scope.client.rpartition(":")[0],
        )
        protocol.response_bytes(status, headers, answer)

    def _probe(self, method: str, path: str) -> tuple[int, bytes, str | None]:
        if method not in ("GET", "HEAD"):
            raise Problem("method-not-allowed", f"{method} is not allowed on {path}")
        if not self.probe_routes[path]:
            return 200, b'{"status":"ok"}', None
        predictor = self._predictor()
        answer = {
            "status": "ready",
            "model": predictor.model,
            "version": predictor.version,
            "predictor": predictor.booster.kind,
            "reader": self.state.decoder.reader,
        }
        return 200, orjson.dumps(answer), None

    def _predict(
        self,
        method: str,
        header: Callable[[str], str | None],
        read: Callable[[int], bytes] | None,
    ) -> tuple[int, bytes, str | None]:
        if method != "POST":
            raise Problem("method-not-allowed", "use POST")
        predictor = self._predictor()
        _check_media_type(header("content-type") or "")
        batch = self.state.decoder.decode(self._read_body(read, header("content-length")))
        answer: dict[str, Any] = {
            "predictions": predictor.predict(batch.matrix),
            "model": {"name": predictor.model, "version": predictor.version},
        }
        if batch.warnings:
            answer["warnings"] = batch.warnings
        detail = f"{len(batch.warnings)} warning(s)" if batch.warnings else None
        return 200, _encode_answer(answer), detail

    def _get(
        self, method: str, path: str, answer: Callable[[], bytes]
    ) -> tuple[int, bytes, str | None]:
        if method not in ("GET", "HEAD"):
            raise Problem("method-not-allowed", f"{method} is not allowed on {path}")
        return 200, answer(), None

    def _predictor(self) -> Any:
        if self.state.predictor is None:
            raise Problem("not-ready", self.state.error or "no model is loaded")
        return self.state.predictor

    def _openapi_document(self) -> bytes:
        if self._openapi is None:  # built once, on first use: not on the way to a prediction
            from modelrail.serving import openapi

            predictor = self.state.predictor
            self._openapi = orjson.dumps(
                openapi.build(
                    self.settings,
                    predictor.schema if predictor is not None else None,
                    self.settings.model_name,
                    predictor.version if predictor is not None else None,
                )
            )
        return self._openapi

    def _metadata(self, name: str) -> bytes:
        if name != self.settings.model_name:
            raise Problem(
                "not-found", f"this service serves {self.settings.model_name!r}, not {name!r}"
            )
        predictor = self._predictor()
        manifest = predictor.manifest
        lineage = manifest.get("lineage") or {}
        body = {
            "name": predictor.model,
            "version": predictor.version,
            "run_id": manifest.get("run_id"),
            "created_at": manifest.get("created_at"),
            "objective": predictor.objective,
            "classes": list(predictor.classes),
            "features": manifest.get("features", {}).get("features", []),
            "best_iteration": manifest.get("best_iteration"),
            "predictor": predictor.booster.kind,
            "metrics": manifest.get("metrics", {}),
            "verdict": manifest.get("verdict"),
            "files": manifest.get("files", {}),
            "lineage": {k: v for k, v in lineage.items() if not isinstance(v, list | dict)}
            if isinstance(lineage, dict)
            else lineage,
            "limits": {
                "max_body_bytes": self.settings.max_body_bytes,
                "max_instances": self.settings.max_instances,
                "request_timeout_s": self.settings.request_timeout_s,
            },
        }
        return orjson.dumps(body, default=str)

    @staticmethod
    def _render(problem: Problem, path: str, request_id: str) -> bytes:
        body = problem.body(path)
        body["request_id"] = request_id
        return orjson.dumps(body)

    def _read_body(self, read: Callable[[int], bytes] | None, length_header: str | None) -> bytes:
        """The whole body, within ``max_body_bytes``, or the problem with it."""
        limit = self.settings.max_body_bytes
        if read is None:
            raise Problem(
                "request-timeout",
                f"the body did not arrive within {self.settings.request_timeout_s:g} s",
            )
        if length_header:
            try:
                length = int(length_header)
            except ValueError:
                raise Problem("bad-request", "invalid Content-Length") from None
            if length > limit:
                raise _too_large(limit)
            body = read(length)
            if len(body) < length:  # the client stopped sending: do not parse a fragment
                raise Problem(
                    "bad-request",
                    f"the body ended after {len(body)} of the {length} bytes its "
                    "Content-Length announced",
                )
            return body
        # No Content-Length (chunked): read at most one byte past the limit.
        body = read(limit + 1)
        if len(body) > limit:
            raise _too_large(limit)
        return body

    def _log(
        self,
        method: str,
        path: str,
        header: Callable[[str], str | None],
        client: str | None,
        status: int,
        started: float,
        request_id: str,
        detail: str | None,
    ) -> None:
        fields: dict[str, Any] = {
            "httpRequest": {
                "requestMethod": method,
                "requestUrl": path,
                "status": status,
                "latency": f"{time.perf_counter() - started:.6f}s",
                "userAgent": header("user-agent"),
                "remoteIp": client,
            },
            "request_id": request_id,
            **logs.trace_fields(
                self.project, header("traceparent"), header("x-cloud-trace-context")
            ),
        }
        message = f"{method} {path} {status}"
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
