"""Small, dependency-free SVG charts: a job's loss curve, an evaluation's scores
(people read pictures faster than numbers)."""

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


# Evaluation scores: one panel per metric, one bar per model with its interval.

EVALUATION_COLOURS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#dc2626")
METRIC_LABELS = {
    "exact_match": ("exact match", 0.0, 1.0),
    "chrf": ("chrF", 0.0, 100.0),
    "grader": ("grader (1-5)", 0.0, 5.0),
}


def evaluation_svg(summary: dict[str, Any] | None, metrics: Sequence[str], *, title: str) -> str:
    """Per-model mean scores with their 95% intervals, a panel per metric."""
    models = (summary or {}).get("models") or []
    panels = [m for m in metrics if m in METRIC_LABELS]
    panel_w = 220
    width = max(WIDTH, LEFT + RIGHT + panel_w * max(1, len(panels)))
    legend_h = 16 * len(models)
    height = HEIGHT + legend_h
    plot_top, plot_bottom = TOP + 10, HEIGHT - BOTTOM
    plot_h = plot_bottom - plot_top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Evaluation scores for {escape(title)}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-family="sans-serif" font-size="14">{escape(title)}</text>',
    ]
    if not models or not panels:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
            'font-family="sans-serif" font-size="13" fill="#6b7280">'
            "No answers scored yet</text></svg>"
        )
        return "".join(parts)
    for p, metric in enumerate(panels):
        label, low, high = METRIC_LABELS[metric]
        x0 = LEFT + p * panel_w
        inner = panel_w - 30
        bar_w = inner / max(1, len(models)) * 0.7

        def y(value: float, low: float = low, high: float = high) -> float:
            return plot_bottom - (min(high, max(low, value)) - low) / (high - low) * plot_h

        parts.append(
            f'<line x1="{x0}" y1="{plot_bottom}" x2="{x0 + inner}" y2="{plot_bottom}" '
            'stroke="#9ca3af"/>'
            f'<text x="{x0 + inner / 2}" y="{HEIGHT - 14}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="12">{escape(label)}</text>'
            f'<text x="{x0 - 4}" y="{plot_top + 4}" text-anchor="end" font-family="sans-serif" '
            f'font-size="10" fill="#6b7280">{high:g}</text>'
        )
        for m, model in enumerate(models):
            score = (model.get("scores") or {}).get(metric)
            if not score:
                continue
            colour = EVALUATION_COLOURS[m % len(EVALUATION_COLOURS)]
            left = x0 + m * inner / len(models) + (inner / len(models) - bar_w) / 2
            top = y(float(score["mean"]))
            centre = left + bar_w / 2
            parts.append(
                f'<rect x="{left:.1f}" y="{top:.1f}" width="{bar_w:.1f}" '
                f'height="{plot_bottom - top:.1f}" fill="{colour}"/>'
                f'<line x1="{centre:.1f}" y1="{y(float(score["ci_low"])):.1f}" '
                f'x2="{centre:.1f}" y2="{y(float(score["ci_high"])):.1f}" '
                'stroke="#111827" stroke-width="1.5"/>'
                f'<text x="{centre:.1f}" y="{top - 6:.1f}" text-anchor="middle" '
                f'font-family="sans-serif" font-size="10">{float(score["mean"]):.3g}</text>'
            )
    for m, model in enumerate(models):
        colour = EVALUATION_COLOURS[m % len(EVALUATION_COLOURS)]
        top = HEIGHT + m * 16
        parts.append(
            f'<rect x="{LEFT}" y="{top}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{LEFT + 14}" y="{top + 9}" font-family="sans-serif" '
            f'font-size="11">{escape(str(model.get("model", "")))}</text>'
        )
    win = (summary or {}).get("win_rate")
    if win and win.get("rate") is not None:
        parts.append(
            f'<text x="{width - RIGHT}" y="22" text-anchor="end" font-family="sans-serif" '
            f'font-size="12">win rate {float(win["rate"]):.2f} on {escape(str(win["metric"]))}'
            "</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
