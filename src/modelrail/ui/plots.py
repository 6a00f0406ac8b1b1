"""Inline SVG for the UI: a run's stage timeline, a metric across versions, a
feature's drift and the volume across monitoring windows, and a window's distribution
beside the training data's.

Drawn here rather than by a charting library so the pages need no script and nothing
from the network; every text is escaped.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from markupsafe import Markup

# A stage's colour by its status (the stylesheet's palette).
_STATUS_COLOURS = {"succeeded": "#2e7d32", "skipped": "#b28704", "failed": "#c62828"}
_WIDTH, _HEIGHT, _PAD = 360, 140, 28


def timeline(stages: Sequence[Mapping[str, Any]], width: int = 320) -> Markup:
    """One bar per stage, in order, each as wide as its share of the run's duration
    (at least a sliver, so a fast stage stays visible)."""
    total = sum(float(s.get("duration_s") or 0) for s in stages) or 1.0
    floor = 4.0
    room = width - floor * len(stages)
    x = 0.0
    parts = []
    for stage in stages:
        duration = float(stage.get("duration_s") or 0)
        bar = floor + room * duration / total
        colour = _STATUS_COLOURS.get(str(stage.get("status")), "#616161")
        label = f"{stage['stage']}: {stage.get('status')} in {duration:.2f} s"
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{max(bar - 1, 1):.1f}" height="14" '
            f'fill="{colour}"><title>{escape(label)}</title></rect>'
        )
        x += bar
    return Markup(
        f'<svg class="timeline" width="{width}" height="14" viewBox="0 0 {width} 14" '
        f'role="img" aria-label="stage timeline">{"".join(parts)}</svg>'
    )


def metric_plot(name: str, points: Sequence[tuple[int, float]]) -> Markup:
    """``name`` by version: a line through each version's value, the values labelled."""
    if not points:
        return Markup("")
    versions = [v for v, _ in points]
    values = [y for _, y in points]
    low, high = min(values), max(values)
    span = (high - low) or abs(high) or 1.0
    first, last = min(versions), max(versions)

    def at(version: int, value: float) -> tuple[float, float]:
        x = _PAD + (version - first) / ((last - first) or 1) * (_WIDTH - 2 * _PAD)
        if last == first:
            x = _WIDTH / 2
        y = _HEIGHT - _PAD - (value - low) / span * (_HEIGHT - 2 * _PAD)
        return x, y

    coords = [at(v, y) for v, y in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    marks = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>v{v}: {value:.4g}</title></circle>'
        f'<text x="{x:.1f}" y="{y - 7:.1f}" text-anchor="middle">{value:.4g}</text>'
        f'<text x="{x:.1f}" y="{_HEIGHT - 8}" text-anchor="middle">v{v}</text>'
        for (x, y), (v, value) in zip(coords, points, strict=True)
    )
    return Markup(
        f'<svg class="plot" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{escape(name)} by version">'
        f'<text x="4" y="14" class="plot-title">{escape(name)}</text>'
        f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="2"/>'
        f"{marks}</svg>"
    )


def drift_plot(
    feature: str, points: Sequence[tuple[str, float]], warn: float, fail: float
) -> Markup:
    """``feature``'s PSI in each monitoring window (labelled by its end), on an axis
    from 0, with the warn and fail limits drawn across."""
    if not points:
        return Markup("")
    top = max(fail, *(psi for _, psi in points)) * 1.15
    left, right, bottom, top_y = 40, _WIDTH - 10, _HEIGHT - _PAD, 22

    def y(value: float) -> float:
        return bottom - value / top * (bottom - top_y)

    def x(index: int) -> float:
        return left + (index + 0.5) / len(points) * (right - left)

    limits = "".join(
        f'<line x1="{left}" x2="{right}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
        f'class="limit-{name}" stroke="{colour}" stroke-dasharray="4 3"/>'
        f'<text x="{left - 4}" y="{y(level) + 4:.1f}" text-anchor="end">{level:g}</text>'
        f'<text x="{right}" y="{y(level) - 3:.1f}" text-anchor="end">{name}</text>'
        for name, level, colour in (("warn", warn, "#b28704"), ("fail", fail, "#c62828"))
    )
    line = " ".join(f"{x(i):.1f},{y(psi):.1f}" for i, (_, psi) in enumerate(points))
    marks = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(psi):.1f}" r="3.5">'
        f"<title>{escape(label)}: PSI {psi:.4f}</title></circle>"
        for i, (label, psi) in enumerate(points)
    )
    first, last = points[0][0], points[-1][0]
    return Markup(
        f'<svg class="plot drift" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{escape(feature)}: PSI by monitoring window">'
        f'<text x="4" y="14" class="plot-title">{escape(feature)} (PSI)</text>'
        f'<line x1="{left}" x2="{left}" y1="{top_y}" y2="{bottom}" stroke="#616161"/>'
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#616161"/>'
        f'<text x="{left - 4}" y="{bottom + 4}" text-anchor="end">0</text>'
        f"{limits}"
        f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="2"/>{marks}'
        f'<text x="{left}" y="{_HEIGHT - 8}">{escape(first[:16])}</text>'
        f'<text x="{right}" y="{_HEIGHT - 8}" text-anchor="end">{escape(last[:16])}</text>'
        "</svg>"
    )


def volume_plot(points: Sequence[tuple[str, int]]) -> Markup:
    """The instances asked in each monitoring window (labelled by its end), as bars on
    an axis from 0."""
    if not points:
        return Markup("")
    top = max(count for _, count in points) or 1
    left, right, bottom, top_y = 48, _WIDTH - 10, _HEIGHT - _PAD, 22
    step = (right - left) / len(points)
    bars = "".join(
        f'<rect x="{left + i * step + 1:.1f}" y="{bottom - count / top * (bottom - top_y):.1f}" '
        f'width="{max(step - 2, 1):.1f}" height="{count / top * (bottom - top_y):.1f}" '
        f'fill="#1565c0"><title>{escape(label)}: {count} instances</title></rect>'
        for i, (label, count) in enumerate(points)
    )
    return Markup(
        f'<svg class="plot volume" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="instances by monitoring window">'
        f'<text x="4" y="14" class="plot-title">instances asked</text>'
        f'<line x1="{left}" x2="{left}" y1="{top_y}" y2="{bottom}" stroke="#616161"/>'
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#616161"/>'
        f'<text x="{left - 4}" y="{bottom + 4}" text-anchor="end">0</text>'
        f'<text x="{left - 4}" y="{top_y + 4}" text-anchor="end">{top}</text>'
        f"{bars}"
        f'<text x="{left}" y="{_HEIGHT - 8}">{escape(points[0][0][:16])}</text>'
        f'<text x="{right}" y="{_HEIGHT - 8}" text-anchor="end">{escape(points[-1][0][:16])}</text>'
        "</svg>"
    )


def distribution_plot(
    title: str, baseline: Mapping[str, Any], current: Mapping[str, Any]
) -> Markup:
    """Two profiles of one column side by side, bin by bin (a numeric profile's bins
    or a categorical's values, and the missing share): the training data's in grey,
    the window's in blue, on a share axis from 0."""
    labels, before, after = _bins_of(baseline, current)
    top = max(*before, *after, 0.01)
    left, right, bottom, top_y = 40, _WIDTH - 10, _HEIGHT - _PAD - 14, 22
    step = (right - left) / len(labels)
    bars = []
    for i, (label, old, new) in enumerate(zip(labels, before, after, strict=True)):
        x = left + i * step
        for offset, share, colour, name in (
            (0, old, "#9e9e9e", "training"),
            (1, new, "#1565c0", "window"),
        ):
            height = share / top * (bottom - top_y)
            bars.append(
                f'<rect x="{x + 1 + offset * (step - 2) / 2:.1f}" y="{bottom - height:.1f}" '
                f'width="{max((step - 2) / 2, 0.5):.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{escape(label)}: {name} {share:.1%}</title></rect>"
            )
    # A number's edges are ticks between its bins; a category names its bar.
    numeric = baseline["kind"] == "numeric"
    every = 1 if step >= 32 else 2
    for i, label in enumerate(labels):
        if numeric and 0 < i < len(labels) - 1:
            if (i - 1) % every == 0:
                edge = baseline["edges"][i - 1]
                bars.append(
                    f'<text x="{left + i * step:.1f}" y="{bottom + 12}" '
                    f'text-anchor="middle" class="bin">{edge:.4g}</text>'
                )
        elif not numeric or i == len(labels) - 1:
            bars.append(
                f'<text x="{left + (i + 0.5) * step:.1f}" y="{bottom + 12}" '
                f'text-anchor="middle" class="bin">{escape(label[:8])}</text>'
            )
    return Markup(
        f'<svg class="plot distribution" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{escape(title)}: training data and window">'
        f'<text x="4" y="14" class="plot-title">{escape(title)} (grey: training)</text>'
        f'<line x1="{left}" x2="{left}" y1="{top_y}" y2="{bottom}" stroke="#616161"/>'
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#616161"/>'
        f'<text x="{left - 4}" y="{bottom + 4}" text-anchor="end">0</text>'
        f'<text x="{left - 4}" y="{top_y + 4}" text-anchor="end">{top:.0%}</text>'
        f"{''.join(bars)}</svg>"
    )


def _bins_of(
    baseline: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[list[str], list[float], list[float]]:
    """The bins two profiles of one column share: labels, and each profile's shares."""
    if baseline["kind"] == "numeric":
        edges = [f"{edge:.4g}" for edge in baseline["edges"]]
        inner = [f"{low}-{high}" for low, high in itertools.pairwise(edges)]
        labels = [f"<{edges[0]}", *inner, f">={edges[-1]}"] if edges else []
        before, after = list(baseline["shares"]), list(current["shares"])
    else:
        labels = sorted(set(baseline["shares"]) | set(current["shares"]))
        before = [baseline["shares"].get(k, 0.0) for k in labels]
        after = [current["shares"].get(k, 0.0) for k in labels]
    return [*labels, "missing"], [*before, baseline["missing"]], [*after, current["missing"]]
