"""The human-readable model card stored with every version (HTML, inline SVG plots).

Rendered from the manifest and the metrics of the versions before it, deterministically
(no clock), so re-registering a run after a crash writes byte-identical files. It reads
in a browser with no network: no script, no stylesheet or font from elsewhere.

Where the version served (``served``) is not in the stored card: it happens after the
card is written, and the card is one of the version's signed files. It is added where
the card is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from modelrail.domain.history import STAGING, Period
from modelrail.domain.registry import Manifest
from modelrail.domain.rollout import describe_step

_BAR_WIDTH = 360


def render(
    manifest: Manifest,
    importance: Sequence[tuple[str, float]],
    history: Sequence[Mapping[str, Any]] = (),
) -> bytes:
    """The card of ``manifest``; ``history`` holds the earlier versions' metrics."""
    model, version = manifest.model, manifest.version
    lineage = manifest.lineage
    trigger, data = lineage.trigger, lineage.data or {}
    code = lineage.code or {}
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{value:.4f}</td>"
        f"<td>{_champion_value(manifest, name)}</td></tr>"
        for name, value in sorted(manifest.metrics.items())
    )
    checks = "".join(f"<li>{escape(check['reason'])}</li>" for check in manifest.verdict["checks"])
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(model)} v{version} model card</title>
<style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}}
code{{word-break:break-all}}</style></head><body>
<h1>{escape(model)} — version {version}</h1>
<p>Objective: <b>{escape(manifest.features["objective"])}</b>; target
<b>{escape(manifest.features["target"])}</b>; best iteration {manifest.best_iteration};
run <code>{escape(manifest.run_id)}</code>.</p>
<h2>Hold-out metrics</h2>
<table><tr><th>metric</th><th>candidate</th><th>champion</th></tr>{rows}</table>
<h2>Gate</h2><ul>{checks or "<li>no thresholds configured</li>"}</ul>
{_blessed_by_hand(lineage.blessed_by, manifest.verdict)}
{_judged_by(manifest.verdict)}
{_promotion(manifest.verdict)}
{_reference(manifest)}
{_diagnostics(manifest.diagnostics)}
{_drift(lineage.drift)}
{_history(manifest, history)}
<h2>Feature importance (gain)</h2>{_bars(importance)}
{_explanation((manifest.diagnostics or {}).get("explanation"), importance)}
<h2>Lineage</h2>
<ul><li>Trigger: {escape(str(trigger["kind"]))} <code>{escape(str(trigger["key"]))}</code></li>
<li>Data: <code>{escape(str(data.get("uri")))}</code> ({data.get("rows")} rows,
sha256 <code>{escape(str(data.get("sha256")))}</code>)</li>
{_snapshot(data.get("snapshot"))}
<li>Code: <code>{escape(str(code.get("version")))}</code></li>
<li>Config: <code>{escape(str(lineage.config["hash"]))}</code></li></ul>
</body></html>
"""
    return html.encode()


def _blessed_by_hand(blessed_by: Mapping[str, Any] | None, verdict: Mapping[str, Any]) -> str:
    """Who registered the version the gate rejected, why, and what the gate said."""
    if blessed_by is None:
        return ""
    reasons = "".join(f"<li>{escape(str(reason))}</li>" for reason in verdict.get("reasons", []))
    return (
        '<h2>Blessed by hand</h2><p class="blessed-by">The gate rejected this candidate; '
        f"{escape(str(blessed_by['who']))} registered it anyway at "
        f"{escape(str(blessed_by['at']))}: {escape(str(blessed_by['reason']))}. "
        "It is not the champion.</p>"
        + (f"<p>The gate said:</p><ul>{reasons}</ul>" if reasons else "")
    )


def _judged_by(verdict: Mapping[str, Any]) -> str:
    """How the candidate was judged (a hold-out, or cross-validation), with the
    warnings and notes that go with it."""
    if "judged_by" not in verdict:
        return ""  # a version registered before the verdict said so
    said = "".join(
        f"<li>{escape(text)}</li>"
        for text in [*verdict.get("warnings", []), *verdict.get("notes", [])]
    )
    return f'<p class="judged-by">Judged by {escape(verdict["judged_by"])}.</p>' + (
        f"<ul>{said}</ul>" if said else ""
    )


def _promotion(verdict: Mapping[str, Any]) -> str:
    """Whether the version became the champion, why, and every comparison made."""
    if "promotion" not in verdict:
        return ""  # a version registered before the champion rule
    compared = "".join(
        f"<li>on the {escape(name)}: {escape(c['text'])}</li>"
        for name, comparisons in verdict.get("comparisons", {}).items()
        for c in comparisons
    )
    return f'<h2>Champion</h2><p class="promotion">{escape(verdict["promotion"])}</p>' + (
        f"<ul>{compared}</ul>" if compared else ""
    )


def _champion_value(manifest: Manifest, name: str) -> str:
    champion = manifest.champion or {}
    value = (champion.get("metrics") or {}).get(name)
    return "—" if value is None else f"{value:.4f}"


def _bars(importance: Sequence[tuple[str, float]]) -> str:
    if not importance:
        return "<p>none</p>"
    top = max(value for _, value in importance) or 1.0
    height = 22 * len(importance)
    bars = "".join(
        f'<text x="0" y="{22 * i + 15}" font-size="13">{escape(name)}</text>'
        f'<rect x="160" y="{22 * i + 4}" height="14" '
        f'width="{_BAR_WIDTH * value / top:.1f}" fill="#4c78a8"/>'
        for i, (name, value) in enumerate(importance)
    )
    return f'<svg width="{160 + _BAR_WIDTH + 10}" height="{height}" role="img">{bars}</svg>'


def _snapshot(snapshot: Mapping[str, Any] | None) -> str:
    if not snapshot:
        return ""
    return (
        f"<li>Validated snapshot: <code>{escape(str(snapshot['uri']))}</code> "
        f"({snapshot['rows']} rows, sha256 <code>{escape(str(snapshot['sha256']))}</code>)</li>"
    )


def _reference(manifest: Manifest) -> str:
    champion = manifest.champion or {}
    reference = champion.get("reference")
    if not reference:
        return ""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{value:.4f}</td>"
        f"<td>{reference['champion_metrics'].get(name, float('nan')):.4f}</td></tr>"
        for name, value in sorted(reference["metrics"].items())
    )
    return (
        f"<h2>On v{champion['version']}'s reference set</h2>"
        f"<p>The {reference['rows']} hold-out rows the champion was judged on: data this run "
        "did not provide, so corrupted new data cannot hide a worse model.</p>"
        f"<table><tr><th>metric</th><th>candidate</th><th>champion</th></tr>{rows}</table>"
    )


def _diagnostics(diagnostics: Mapping[str, Any] | None) -> str:
    if not diagnostics:
        return ""
    if "actual" in diagnostics:
        return "<h2>Predicted against actual (hold-out)</h2>" + _scatter(
            diagnostics["actual"], diagnostics["predicted"]
        )
    classes = diagnostics["classes"]
    per_class = "".join(
        f"<tr><td>{escape(name)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
        for name, m in diagnostics["per_class"].items()
    )
    top = max((max(row) for row in diagnostics["confusion"]), default=0) or 1
    cells = "".join(
        f"<tr><th>{escape(classes[i])}</th>"
        + "".join(
            f'<td style="background:rgba(76,120,168,{count / top:.2f})">{count}</td>'
            for count in row
        )
        + "</tr>"
        for i, row in enumerate(diagnostics["confusion"])
    )
    header = "".join(f"<th>{escape(name)}</th>" for name in classes)
    return (
        "<h2>Per class (hold-out)</h2>"
        "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>support</th></tr>{per_class}</table>"
        "<h3>Confusion matrix (rows: actual, columns: predicted)</h3>"
        f"<table><tr><th></th>{header}</tr>{cells}</table>"
    )


def _scatter(actual: Sequence[float], predicted: Sequence[float]) -> str:
    size, pad = 320, 30
    low = min(*actual, *predicted)
    high = max(*actual, *predicted)
    span = (high - low) or 1.0

    def at(value: float) -> float:
        return pad + (value - low) / span * (size - 2 * pad)

    points = "".join(
        f'<circle cx="{at(a):.1f}" cy="{size - at(p):.1f}" r="2" fill="#4c78a8"/>'
        for a, p in zip(actual, predicted, strict=True)
    )
    diagonal = f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#999"/>'
    labels = (
        f'<text x="{size / 2}" y="{size - 5}" font-size="12">actual</text>'
        f'<text x="2" y="14" font-size="12">predicted ({low:.3g} to {high:.3g})</text>'
    )
    return f'<svg width="{size}" height="{size}" role="img">{diagonal}{points}{labels}</svg>'


def _drift(drift: Mapping[str, Any] | None) -> str:
    if not drift or drift.get("champion") is None:
        return ""
    warnings = drift.get("warnings") or []
    rows = "".join(
        f"<tr><td>{escape(w['column'])}</td><td>{w['psi']:.4f}</td><td>{w['warn']}</td>"
        f"<td>{escape(w['status'])}</td></tr>"
        for w in warnings
    )
    body = (
        f"<table><tr><th>column</th><th>PSI</th><th>warn at</th><th>status</th></tr>{rows}</table>"
        if rows
        else "<p>Every column within its warn limit.</p>"
    )
    return f"<h2>Drift against v{drift['champion']}'s training data</h2>{body}"


def _history(manifest: Manifest, history: Sequence[Mapping[str, Any]]) -> str:
    points = [*history, {"version": manifest.version, "metrics": manifest.metrics}]
    if len(points) < 2:
        return ""
    width, height, pad = 360, 120, 24
    charts = []
    for name in sorted(manifest.metrics):
        series = [(p["version"], p["metrics"][name]) for p in points if name in p["metrics"]]
        values = [v for _, v in series]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        step = (width - 2 * pad) / max(len(series) - 1, 1)
        coords = [
            (pad + i * step, height - pad - (v - low) / span * (height - 2 * pad))
            for i, (_, v) in enumerate(series)
        ]
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        dots = "".join(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#4c78a8"><title>v{version}: '
            f"{value:.4f}</title></circle>"
            for (x, y), (version, value) in zip(coords, series, strict=True)
        )
        charts.append(
            f"<figure><figcaption>{escape(name)}: v{series[0][0]} {series[0][1]:.4f} → "
            f"v{series[-1][0]} {series[-1][1]:.4f}</figcaption>"
            f'<svg width="{width}" height="{height}" role="img"><polyline points="{line}" '
            f'fill="none" stroke="#4c78a8"/>{dots}</svg></figure>'
        )
    return "<h2>Metrics across versions</h2>" + "".join(charts)


def _explanation(
    explanation: Mapping[str, Any] | None, importance: Sequence[tuple[str, float]]
) -> str:
    """Each feature's mean absolute contribution on the hold-out beside its share of the
    gain, and a dependence plot (value against contribution) of the top features."""
    if not explanation:
        return ""
    gain = dict(importance)
    total_gain = sum(gain.values()) or 1.0
    mean_abs = explanation["mean_abs_contribution"]
    top = max(mean_abs.values(), default=0.0) or 1.0
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{value:.4f}</td>"
        f'<td><svg width="120" height="10" role="img"><rect height="10" '
        f'width="{120 * value / top:.1f}" fill="#4c78a8"/></svg></td>'
        f"<td>{100 * gain.get(name, 0.0) / total_gain:.1f}%</td></tr>"
        for name, value in sorted(mean_abs.items(), key=lambda item: -item[1])
    )
    plots = "".join(
        f"<figure><figcaption>{escape(d['feature'])}</figcaption>{_dependence(d)}</figure>"
        for d in explanation["dependence"]
    )
    return (
        "<h2>Feature contributions (hold-out, TreeSHAP)</h2>"
        f"<p>Mean absolute contribution to the {escape(explanation['units'])} over "
        f"{explanation['rows']} of the {explanation['hold_out_rows']} hold-out rows "
        "(LightGBM's <code>pred_contrib</code>, as <code>/explain</code> answers), beside "
        "each feature's share of the gain.</p>"
        "<table><tr><th>feature</th><th>mean |contribution|</th><th></th>"
        f"<th>gain</th></tr>{rows}</table>"
        f"<h3>Dependence: value against contribution</h3>{plots}"
    )


def _dependence(dependence: Mapping[str, Any]) -> str:
    """One point per sampled row: the feature's value (x; a category's name, or
    "missing") against its contribution (y), with both axes labelled."""
    width, height, pad = 360, 220, 44
    values, contributions = dependence["values"], dependence["contributions"]
    if dependence["categorical"] or any(v is None for v in values):
        ticks = sorted({"missing" if v is None else str(v) for v in values} if
                       dependence["categorical"] else {"missing"})  # fmt: skip
    else:
        ticks = []
    numbers = [v for v in values if v is not None and not dependence["categorical"]]
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 1.0)
    y_low, y_high = min(contributions, default=0.0), max(contributions, default=0.0)
    y_low, y_high = min(y_low, 0.0), max(y_high, 0.0)
    numeric_room = (width - 2 * pad) * (0.8 if ticks and numbers else 1.0)
    slot = (width - 2 * pad - (numeric_room if numbers else 0)) / max(len(ticks), 1)

    def x_of(value: Any) -> float:
        if value is None or dependence["categorical"]:
            label = "missing" if value is None else str(value)
            start = pad + (numeric_room if numbers else 0)
            return start + slot * (ticks.index(label) + 0.5)
        return pad + (float(value) - low) / ((high - low) or 1.0) * numeric_room

    def y_of(value: float) -> float:
        return height - pad - (value - y_low) / ((y_high - y_low) or 1.0) * (height - 2 * pad)

    points = "".join(
        f'<circle cx="{x_of(v):.1f}" cy="{y_of(c):.1f}" r="2" fill="#4c78a8"/>'
        for v, c in zip(values, contributions, strict=True)
    )
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        f'stroke="#333"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>'
        f'<line x1="{pad}" y1="{y_of(0.0):.1f}" x2="{width - pad}" y2="{y_of(0.0):.1f}" '
        'stroke="#bbb" stroke-dasharray="3"/>'
        f'<text x="2" y="{pad - 6}" font-size="11">{y_high:.3g}</text>'
        f'<text x="2" y="{height - pad}" font-size="11">{y_low:.3g}</text>'
        f'<text x="{pad}" y="14" font-size="11">contribution</text>'
        f'<text x="{width / 2 - 30}" y="{height - 4}" font-size="11">'
        f"{escape(dependence['feature'])}</text>"
    )
    if numbers:
        axes += (
            f'<text x="{pad}" y="{height - pad + 14}" font-size="11">{low:.3g}</text>'
            f'<text x="{pad + numeric_room - 24:.1f}" y="{height - pad + 14}" font-size="11">'
            f"{high:.3g}</text>"
        )
    axes += "".join(
        f'<text x="{x_of(None if t == "missing" else t) - 14:.1f}" y="{height - pad + 14}" '
        f'font-size="11">{escape(t)}</text>'
        for t in ticks
    )
    return f'<svg width="{width}" height="{height}" role="img">{axes}{points}</svg>'


def served(
    card: bytes,
    version: int,
    periods: Sequence[Period],
    promotions: Sequence[Mapping[str, Any]],
) -> bytes:
    """``card``, version ``version``'s stored card, with where the version served: each
    period on staging and production from when to when (``domain.history``), and every
    proposal of it for production (``service.history.promotions``), who proposed and
    approved it, its outcome and each rollout step.

    The stored card is written once, at registration, and its sha256 is in the signed
    manifest: it cannot hold what happens to the version later, and rewriting it would
    break the signature. So this section is rendered from the records each time the card
    is shown (the UI's card page, ``modelrail card``) and set before ``</body>``; the
    stored bytes stay as they were signed."""
    mine = [period for period in periods if period.version == version]
    rows = "".join(
        f"<tr><td>{escape(p.service)}</td><td>{escape(p.since)}</td>"
        f"<td>{escape(p.until) if p.until else '<b>still serving</b>'}</td>"
        f"<td>{_moved_by(p)}</td></tr>"
        for p in mine
    )
    table = (
        "<table><tr><th>service</th><th>from</th><th>until</th><th>moved there by</th></tr>"
        f"{rows}</table>"
        if rows
        else f"<p>v{version} has served neither staging nor production yet.</p>"
    )
    proposals = "".join(
        _proposal(entry) for entry in promotions if entry["proposal"]["version"] == version
    )
    section = (
        f'<section id="served"><h2>Where it served</h2>{table}'
        + (f"<h3>Proposed for production</h3>{proposals}" if proposals else "")
        + "</section>\n"
    )
    head, end, tail = card.rpartition(b"</body>")
    if not end:
        return card + section.encode()
    return head + section.encode() + end + tail


def _moved_by(period: Period) -> str:
    if period.service == STAGING:
        return f"run <code>{escape(str(period.source))}</code>"
    proposal, approval = period.source["proposal"], period.source["approval"] or {}
    return (
        f"promotion <code>{escape(proposal['id'])}</code>, proposed by "
        f"{escape(proposal['proposed_by'])}, approved by {escape(approval.get('approved_by', '?'))}"
    )


def _proposal(entry: Mapping[str, Any]) -> str:
    """One proposal: who proposed and approved it, why, its outcome, its steps."""
    proposal, approval, outcome = entry["proposal"], entry["approval"], entry["outcome"]
    before = proposal["production_version"]
    lines = [
        f"<b>{escape(entry['status'])}</b>: v{before} → v{proposal['version']}"
        if before
        else f"<b>{escape(entry['status'])}</b>: production served nothing before",
        f"proposed by {escape(proposal['proposed_by'])} at {escape(proposal['proposed_at'])}: "
        f"{escape(proposal['reason'])}",
    ]
    if approval is not None:
        lines.append(
            f"approved by {escape(approval['approved_by'])} at "
            f"{escape(approval['approved_at'])}: {escape(approval['reason'])}"
        )
    if outcome is not None and outcome["status"] == "succeeded":
        lines.append(
            f"production moved to it at {escape(outcome['finished_at'])} "
            f"(<code>{escape(str(outcome['revision']))}</code>)"
        )
    elif outcome is not None:
        lines.append(f"failed at {escape(outcome['finished_at'])}: {escape(outcome['detail'])}")
    steps = "".join(f"<li>{_step(step)}</li>" for step in entry.get("steps") or [])
    return (
        f'<div class="promotion" id="promotion-{escape(proposal["id"])}">'
        f"<p>Proposal <code>{escape(proposal['id'])}</code>, "
        + "; ".join(lines)
        + ".</p>"
        + (f'<ol class="steps">{steps}</ol>' if steps else "")
        + "</div>"
    )


def _step(step: Mapping[str, Any]) -> str:
    """A rollout step: its share of the traffic, when, what each revision answered (and,
    where they log it, how their predictions compare), and its breach."""
    text = f"{step['percent']:g} % of production's traffic from {escape(step['started_at'])}"
    if step.get("ended_at"):
        text += f" to {escape(step['ended_at'])}"
    answered = describe_step(step)
    if answered:
        text += f": {escape(answered, quote=False)}"
    if step.get("breach"):
        text += f' <b class="breach">breach: {escape(step["breach"])}</b>'
    return text
