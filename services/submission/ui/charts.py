"""Accuracy against N as inline SVG, drawn on the server from a finished job's metrics."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 560, 280
LEFT, RIGHT, TOP, BOTTOM = 44, 170, 12, 34
# One colour per line, readable on white and for the common colour-vision deficiencies.
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


def _series(metrics: dict[str, Any]) -> list[tuple[str, dict[int, float], bool]]:
    """(label, points by k, dashed) for coverage and each strategy's curve."""
    out: list[tuple[str, dict[int, float], bool]] = []
    coverage = metrics.get("pass_at_k") or {}
    if coverage:
        out.append(("coverage (pass@k)", {int(k): float(v) for k, v in coverage.items()}, True))
    for strategy, curve in (metrics.get("curves") or {}).items():
        if curve:
            out.append((str(strategy), {int(k): float(v) for k, v in curve.items()}, False))
    return out


def accuracy_chart(metrics: dict[str, Any] | None) -> Markup | None:
    """An SVG of accuracy (%) against candidates per problem (log2 axis); None without curves."""
    series = _series(metrics or {})
    ks = sorted({k for _, points, _ in series for k in points})
    if not ks:
        return None
    span = max(math.log2(ks[-1]), 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(k: int) -> float:
        return LEFT + plot_w * math.log2(k) / span

    def y(v: float) -> float:
        return TOP + plot_h * (1.0 - v)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Accuracy against candidates per problem">',
        *_grid(ks, x, y),
    ]
    for i, (label, points, dashed) in enumerate(series):
        colour = "#666" if dashed else COLOURS[i % len(COLOURS)]
        xs = sorted(points)
        path = " ".join(f"{x(k):.1f},{y(points[k]):.1f}" for k in xs)
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for k in xs:
            parts.append(
                f'<circle cx="{x(k):.1f}" cy="{y(points[k]):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(label)} at k={k}: {100 * points[k]:.1f}%</title></circle>"
            )
        ly = TOP + 14 + 18 * i
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 12}" y1="{ly - 4}" x2="{WIDTH - RIGHT + 32}" '
            f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{WIDTH - RIGHT + 38}" y="{ly}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _grid(ks: list[int], x: Any, y: Any) -> list[str]:
    """Axes, gridlines and tick labels."""
    parts = []
    for pct in (0, 25, 50, 75, 100):
        py = y(pct / 100)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{py:.1f}" x2="{WIDTH - RIGHT}" y2="{py:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{pct}%</text>'
        )
    for k in ks:
        parts.append(
            f'<text class="tick" x="{x(k):.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle">{k}</text>'
        )
    parts.append(
        f'<text class="tick" x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">candidates per problem (k)</text>'
    )
    return parts
