"""A loss curve as a small, dependency-free SVG (people read curves faster than numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 40
SERIES = (
    ("train_loss", "#2563eb", "training loss"),
    ("valid_loss", "#ea580c", "validation loss"),
)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def loss_curve_svg(points: Sequence[dict[str, Any]], *, title: str) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Loss curve for {escape(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-family="sans-serif" font-size="14">{escape(title)}</text>',
    ]
    values = [float(p[key]) for p in points for key, _, _ in SERIES if p.get(key) is not None]
    steps = [int(p["step"]) for p in points]
    if not values or not steps:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            'font-family="sans-serif" font-size="13" fill="#6b7280">'
            "No training steps reported yet</text></svg>"
        )
        return "".join(parts)
    low, high = min(0.0, min(values)), max(values) * 1.05 or 1.0
    first, last = min(steps), max(steps)
    span = max(1, last - first)

    def x(step: int) -> float:
        return LEFT + (step - first) / span * plot_w

    def y(value: float) -> float:
        return TOP + plot_h - (value - low) / (high - low) * plot_h

    for tick in _nice_ticks(low, high):
        parts.append(
            f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{WIDTH - RIGHT}" y2="{y(tick):.1f}" '
            'stroke="#e5e7eb"/>'
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
            'font-family="sans-serif" '
            f'font-size="11" fill="#374151">{tick:.2f}</text>'
        )
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 12}" font-family="sans-serif" '
        f'font-size="11">step {first}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 12}" text-anchor="end" font-family="sans-serif" '
        f'font-size="11">step {last}</text>'
    )
    legend_x = WIDTH - RIGHT - 150
    for index, (key, colour, label) in enumerate(SERIES):
        coords = [
            f"{x(int(p['step'])):.1f},{y(float(p[key])):.1f}"
            for p in points
            if p.get(key) is not None
        ]
        if not coords:
            continue
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(coords)}"/>'
            f'<rect x="{legend_x}" y="{12 + index * 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{21 + index * 14}" font-family="sans-serif" '
            f'font-size="11">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
