"""Health-history plot as inline SVG: no JavaScript charting library, no network, prints fine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape

from fleetpulse.alerts.store.repository import HistoryPoint

WIDTH, HEIGHT = 900, 280
LEFT, RIGHT, TOP, BOTTOM = 48, 170, 16, 36
COLOURS = ["#c0392b", "#2471a3", "#1e8449", "#b9770e", "#7d3c98", "#117a65", "#566573"]


def threshold_lines(points: Sequence[HistoryPoint], raise_threshold: Callable[[str], float]) -> list[tuple[float, str]]:
    """(level, label) of the raise threshold served for each component on the chart, components
    sharing a level on one line: a trained disk model raises at its own operating point, not at
    the rules' fleet-wide level."""
    by_level: dict[float, list[str]] = {}
    for component in sorted({p.component for p in points}):
        by_level.setdefault(raise_threshold(component), []).append(component)
    return [(level, f"{', '.join(names)} alert {level:.1%}") for level, names in sorted(by_level.items())]


def risk_svg(
    points: Sequence[HistoryPoint],
    raise_threshold: Callable[[str], float],
    markers: Sequence[tuple[datetime, str]] = (),
) -> str:
    """Risk over time per component, with each component's raise threshold and ticket openings marked."""
    if not points:
        return (
            f'<svg class="plot" viewBox="0 0 {WIDTH} 60" role="img" aria-label="no history">'
            f'<text x="10" y="35" fill="#555">No risk history recorded for this device yet.</text></svg>'
        )
    start = min(p.at for p in points)
    end = max(p.at for p in points)
    span = max((end - start).total_seconds(), 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: datetime) -> float:
        return LEFT + (at - start).total_seconds() / span * plot_w

    def y(risk: float) -> float:
        return TOP + (1.0 - risk) * plot_h

    parts = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="failure risk over time">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fbfbfb" stroke="#bbb"/>',
    ]
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="#e3e3e3"/>'
        )
        parts.append(f'<text x="{LEFT - 6}" y="{y(level) + 4:.1f}" text-anchor="end" font-size="11">{level:.0%}</text>')
    for level, label in threshold_lines(points, raise_threshold):
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
            f'stroke="#c0392b" stroke-dasharray="6 4"/>'
            f'<text x="{LEFT + plot_w - 4}" y="{y(level) - 4:.1f}" text-anchor="end" font-size="11" fill="#c0392b">'
            f"{escape(label)}</text>"
        )
    for at, label in markers:
        if start <= at <= end:
            parts.append(
                f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#888" '
                f'stroke-dasharray="2 3"><title>{escape(label)}</title></line>'
            )
    series: dict[str, list[HistoryPoint]] = {}
    for point in points:
        name = point.component + (f" {point.component_id[:12]}" if point.component_id else "")
        series.setdefault(name, []).append(point)
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{x(p.at):.1f},{y(p.risk):.1f}" for p in sorted(pts, key=lambda p: p.at))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        if len(pts) == 1:
            parts.append(f'<circle cx="{x(pts[0].at):.1f}" cy="{y(pts[0].risk):.1f}" r="3" fill="{colour}"/>')
        legend_y = TOP + 14 + i * 18
        parts.append(
            f'<rect x="{WIDTH - RIGHT + 12}" y="{legend_y - 9}" width="12" height="3" fill="{colour}"/>'
            f'<text x="{WIDTH - RIGHT + 30}" y="{legend_y}" font-size="12">{escape(name)}</text>'
        )
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 12}" font-size="11">{start:%Y-%m-%d %H:%M} UTC</text>')
    parts.append(
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 12}" font-size="11" text-anchor="end">{end:%Y-%m-%d %H:%M} UTC</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
