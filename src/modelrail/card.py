"""The human-readable model card stored with every version (HTML, inline SVG plot).

Rendered from the manifest alone, deterministically (no clock), so re-registering a
run after a crash writes byte-identical files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

_BAR_WIDTH = 360


def render(manifest: Mapping[str, Any], importance: Sequence[tuple[str, float]]) -> bytes:
    model, version = manifest["model"], manifest["version"]
    lineage = manifest["lineage"]
    trigger = lineage["trigger"]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{value:.4f}</td>"
        f"<td>{_champion_value(manifest, name)}</td></tr>"
        for name, value in sorted(manifest["metrics"].items())
    )
    checks = "".join(
        f"<li>{escape(check['reason'])}</li>" for check in manifest["verdict"]["checks"]
    )
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(model)} v{version} model card</title>
<style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}}
code{{word-break:break-all}}</style></head><body>
<h1>{escape(model)} — version {version}</h1>
<p>Objective: <b>{escape(manifest["features"]["objective"])}</b>; target
<b>{escape(manifest["features"]["target"])}</b>; best iteration {manifest["best_iteration"]};
run <code>{escape(manifest["run_id"])}</code>.</p>
<h2>Hold-out metrics</h2>
<table><tr><th>metric</th><th>candidate</th><th>champion</th></tr>{rows}</table>
<h2>Gate</h2><ul>{checks or "<li>no thresholds configured</li>"}</ul>
<h2>Feature importance (gain)</h2>{_bars(importance)}
<h2>Lineage</h2>
<ul><li>Trigger: {escape(str(trigger["kind"]))} <code>{escape(str(trigger["key"]))}</code></li>
<li>Data: <code>{escape(str(lineage["data"]["uri"]))}</code> ({lineage["data"]["rows"]} rows,
sha256 <code>{escape(str(lineage["data"]["sha256"]))}</code>)</li>
<li>Code: <code>{escape(str(lineage["code"]["version"]))}</code></li>
<li>Config: <code>{escape(str(lineage["config"]["hash"]))}</code></li></ul>
</body></html>
"""
    return html.encode()


def _champion_value(manifest: Mapping[str, Any], name: str) -> str:
    champion = manifest.get("champion") or {}
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
