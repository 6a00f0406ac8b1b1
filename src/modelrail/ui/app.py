"""The UI's Flask application factory: routes over a ``Container``'s RunLog and Registry,
for every model the installation holds (the run list filters by ``?model=NAME``).

Every page reads the buckets when it is asked for, so it shows what the pipeline has
recorded by then; nothing is cached and nothing is written.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from flask import Flask, Response, abort, render_template, request
from markupsafe import Markup

from modelrail.domain.card import served
from modelrail.domain.features import FeatureSchema
from modelrail.domain.promotion import Promotions
from modelrail.domain.registry import PROFILE_FILE
from modelrail.domain.runs import RunSummary, failure_reasons
from modelrail.kernel.errors import IntegrityError, NotFound
from modelrail.service import history
from modelrail.ui import plots

if TYPE_CHECKING:
    from modelrail.service.container import Container

# What the pages may load: their own stylesheet and inline styles (model cards carry
# theirs), no script, nothing from another origin: the UI works offline.
_CSP = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
_RUN_ID = re.compile(r"^run-[0-9a-f]{20}$")
CARD, MANIFEST = "card.html", "manifest.json"


def create_app(container: Container) -> Flask:
    """The read-only UI over ``container``'s run history and registry."""
    app = Flask(__name__)
    app.config["container"] = container
    app.jinja_env.filters["pretty"] = _pretty
    app.jinja_env.globals["mode"] = container.settings.mode

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/")
    def runs() -> str:
        installed = container.models.names()
        model = request.args.get("model") or None
        if model is not None and model not in installed:
            abort(404, f"no model {model}")
        summaries = list(reversed(container.runs.runs(model)))
        return render_template(
            "runs.html",
            runs=[_run_row(run) for run in summaries],
            models=installed,
            model=model,
        )

    @app.get("/runs/<run_id>")
    def run(run_id: str) -> str:
        summary = container.runs.run(run_id) if _RUN_ID.match(run_id) else None
        if summary is None:
            abort(404, f"no run {run_id}")
        stages = [
            {
                **record.to_json(),
                "memory": record.memory,
                "reasons": failure_reasons(record.error or {}) if record.status == "failed" else [],
            }
            for record in summary.stages.values()
        ]
        return render_template(
            "run.html",
            run=_run_row(summary),
            stages=stages,
            reports=container.runs.reports(run_id),
            lineage=summary.lineage.to_json() if summary.lineage is not None else {},
        )

    @app.get("/models")
    def models() -> str:
        registry = container.registry
        return render_template(
            "models.html",
            models=[
                {
                    "name": m,
                    "objective": container.models.config(m).objective,
                    "versions": registry.versions(m),
                    "aliases": registry.aliases(m),
                    "runs": len(container.runs.runs(m)),
                }
                for m in container.models.names()
            ],
        )

    @app.get("/models/<model>")
    def model(model: str) -> str:
        registry = container.registry
        if model not in container.models.names():
            abort(404, f"no model {model}")
        aliases = registry.aliases(model)
        versions = [
            {**summary, "has_card": CARD in summary["files"]}
            for summary in registry.summaries(model)
        ]
        names = sorted({name for v in versions for name in v["metrics"]})
        plots_by_metric = [
            plots.metric_plot(
                name, [(v["version"], v["metrics"][name]) for v in versions if name in v["metrics"]]
            )
            for name in names
        ]
        return render_template(
            "model.html",
            model=model,
            aliases=aliases,
            versions=list(reversed(versions)),
            metric_names=names,
            plots=plots_by_metric,
            # Production's history (domain.promotion): newest first.
            promotions=list(reversed(Promotions(container.artifacts).history(model))),
            shadow=_latest_shadow(container, model),
        )

    @app.get("/models/<model>/monitoring")
    def monitoring(model: str) -> str:
        from modelrail.service.monitoring import reports

        if model not in container.models.names():
            abort(404, f"no model {model}")
        windows = reports(container.for_model(model))
        features = sorted({row["feature"] for r in windows for row in r["features"]})
        limits = {
            row["feature"]: (row["warn"], row["fail"]) for r in windows for row in r["features"]
        }
        drift_plots = [
            plots.drift_plot(
                name,
                [
                    (r["window"]["to"], row["psi"])
                    for r in windows
                    for row in r["features"]
                    if row["feature"] == name and row["psi"] is not None
                ],
                *limits[name],
            )
            for name in features
        ]
        return render_template(
            "monitoring.html",
            model=model,
            windows=list(reversed(windows)),
            plots=drift_plots,
            predictions=_prediction_plots(container.for_model(model), windows),
            volume=plots.volume_plot([(r["window"]["to"], r["instances"]) for r in windows]),
        )

    @app.get(f"/models/<model>/versions/<int:version>/{CARD}")
    def card(model: str, version: int) -> Response:
        # The card as it was signed, with where the version served since (card.served).
        stored = _version_file(container, model, version, CARD)
        shown = served(
            stored, version, history.served(container, model), history.promotions(container, model)
        )
        return Response(shown, mimetype="text/html")

    @app.get(f"/models/<model>/versions/<int:version>/{MANIFEST}")
    def manifest(model: str, version: int) -> Response:
        try:
            data = orjson.dumps(
                container.registry.manifest(model, version).to_json(), option=orjson.OPT_INDENT_2
            )
        except NotFound:
            abort(404, f"{model} has no version {version}")
        return Response(data, mimetype="application/json")

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return render_template("error.html", message=getattr(error, "description", "")), 404

    return app


def _version_file(container: Container, model: str, version: int, name: str) -> bytes:
    try:
        data = container.registry.read_file(model, version, name)
    except NotFound:
        abort(404, f"{model} has no version {version}")
    except IntegrityError as exc:  # shown, not served: the bytes are not the registered ones
        abort(409, exc.message)
    if data is None:
        abort(404, f"{model} v{version} has no {name}")
    return data


def _prediction_plots(container: Container, windows: list[dict[str, Any]]) -> list[Markup]:
    """The predictions' PSI by window, and the latest judged window's predictions beside
    the training target of the version it asked."""
    judged = [r for r in windows if r.get("predictions")]
    if not judged:
        return []
    warn, fail = container.config.drift
    shown = [
        plots.drift_plot(
            "predictions",
            [(r["window"]["to"], r["predictions"]["psi"]) for r in judged],
            warn,
            fail,
        )
    ]
    latest = judged[-1]
    try:
        manifest = container.registry.load(container.model, latest["version"]).manifest
        profile = container.registry.file(manifest, PROFILE_FILE)
    except (NotFound, IntegrityError):
        return shown
    target_name = FeatureSchema.from_dict(manifest.features).target
    target = orjson.loads(profile)["columns"].get(target_name) if profile else None
    if target is not None:
        title = f"predictions in v{latest['version']}'s last window"
        shown.append(plots.distribution_plot(title, target, latest["predictions"]["distribution"]))
    return shown


def _run_row(run: RunSummary) -> dict[str, Any]:
    stages = [record.to_json() for record in run.stages.values()]
    version = None
    for record in stages:
        event = record.get("event") or {}
        if "version" in event and event.get("event_type") != "pipeline-failed":
            version = event["version"]
    model = run.lineage.model if run.lineage is not None else None
    return {
        "run_id": run.run_id,
        "started_at": run.started_at,
        "trigger": run.trigger,
        "outcome": run.outcome,
        "failure": run.failure,
        "duration_s": run.duration_s,
        "stages": stages,
        "timeline": plots.timeline(stages),
        "version": version,
        "model": model,
        "blessed_by": dict(run.blessed_by) if run.blessed_by is not None else None,
    }


# The most of one record, report or event a page shows: records written before they
# were bounded (or a report of another version) cannot make a page of megabytes.
MAX_SHOWN_CHARS = 100_000


def _pretty(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}\n… ({len(text):,} characters; the rest is in the bucket)"


def _latest_shadow(container: Container, model: str) -> Any:
    """The shadow comparison (``service.shadow``) of the last day whose record is the
    newest, if production mirrored any."""
    from datetime import UTC, datetime, timedelta

    from modelrail.service.shadow import report

    until = datetime.now(UTC)
    found = report(container.artifacts, model, since=until - timedelta(days=1), until=until)
    return max(found, key=lambda comparison: comparison.last or "", default=None)
