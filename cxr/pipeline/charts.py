"""Two small SVG charts for the experiment report, with no plotting library:
a line chart (curves over steps, epochs or labeled images) and a horizontal
grouped bar chart (per-class AP). The output is a standalone SVG string that
GitHub and browsers render inside Markdown.
"""

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
FONT = 'font-family="sans-serif" font-size="12"'
SMALL_FONT = 'font-family="sans-serif" font-size="8"'


def nice_ticks(low, high, count=5):
    """Round tick values covering [low, high]: the step of 1, 2 or 5 x 10^k that
    gives the number of intervals closest to count - 1."""
    if not math.isfinite(low) or not math.isfinite(high):
        raise ValueError("tick range must be finite")
    if high <= low:  # one value: centre it in a range half its size on either side
        pad = abs(low) / 2 or 1.0
        low, high = low - pad, high + pad
    intervals = max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10((high - low) / intervals))
    step = min(
        (m * magnitude for m in (1, 2, 5, 10)), key=lambda s: abs((high - low) / s - intervals)
    )
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _label(value):
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def _frame(width, height, title):
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" {FONT} '
        f'font-weight="bold">{escape(title)}</text>',
    ]


def line_chart(series, *, title, x_label, y_label, width=560, height=320, markers=False):
    """series: (name, xs, ys) triples; None values in ys are skipped; markers on every
    point (always on a series of one point)."""
    left, right, top, bottom = 60, 150, 30, 45
    points = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if y is not None]
    if not points:
        raise ValueError(f"chart {title!r} has no data")
    x_ticks = nice_ticks(min(p[0] for p in points), max(p[0] for p in points))
    y_ticks = nice_ticks(min(p[1] for p in points), max(p[1] for p in points))
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * plot_w

    def sy(y):
        return top + plot_h - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * plot_h

    parts = _frame(width, height, title)
    for y in y_ticks:
        parts.append(
            f'<line x1="{left}" y1="{sy(y):.1f}" x2="{left + plot_w}" y2="{sy(y):.1f}" '
            'stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" {FONT}>{_label(y)}</text>'
        )
    for x in x_ticks:
        parts.append(
            f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f"{FONT}>{_label(x)}</text>"
        )
    parts += _axis_titles((left, top, plot_w, plot_h), height, x_label, y_label)
    for i, (name, xs, ys) in enumerate(series):
        kept = [(sx(x), sy(y)) for x, y in zip(xs, ys) if y is not None]
        parts += _series(kept, i, name, (left + plot_w, top), markers or len(kept) == 1)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _axis_titles(plot, height, x_label, y_label):
    left, top, plot_w, plot_h = plot
    return [
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#333"/>',
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle" {FONT}>'
        f"{escape(x_label)}</text>",
        f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" text-anchor="middle" '
        f"{FONT}>{escape(y_label)}</text>",
    ]


def _series(points, index, name, legend_at, markers):
    """One curve (points in SVG pixels), its markers and its legend entry."""
    color = PALETTE[index % len(PALETTE)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    parts = [f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>']
    if markers:
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>' for x, y in points]
    right, top = legend_at
    legend_y = top + 10 + 18 * index
    return parts + [
        f'<line x1="{right + 12}" y1="{legend_y}" x2="{right + 32}" y2="{legend_y}" '
        f'stroke="{color}" stroke-width="3"/>',
        f'<text x="{right + 38}" y="{legend_y + 4}" {FONT}>{escape(name)}</text>',
    ]


def bar_chart(categories, groups, *, title, x_label, width=560, bar_height=8):
    """Horizontal grouped bars: groups are (name, values) with one value (or
    None, drawn as 'n/a') per category."""
    left, right, top, bottom = 150, 30, 48, 36
    values = [v for _, vs in groups for v in vs if v is not None]
    x_ticks = nice_ticks(0.0, max(values) if values else 1.0)
    row = bar_height * len(groups) + 6
    plot_w, plot_h = width - left - right, row * len(categories)
    height = top + plot_h + bottom

    def sx(x):
        return left + x / x_ticks[-1] * plot_w

    parts = _frame(width, height, title)
    for i, (name, _) in enumerate(groups):
        x = left + 130 * i
        parts.append(
            f'<rect x="{x}" y="26" width="12" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        )
        parts.append(f'<text x="{x + 16}" y="35" {FONT}>{escape(name)}</text>')
    for x in x_ticks:
        parts.append(
            f'<line x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{top + plot_h}" '
            'stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{sx(x):.1f}" y="{top + plot_h + 14}" text-anchor="middle" {FONT}>'
            f"{_label(x)}</text>"
        )
    for c, category in enumerate(categories):
        y0 = top + c * row + 3
        parts.append(
            f'<text x="{left - 6}" y="{y0 + row / 2 + 1:.1f}" text-anchor="end" {FONT}>'
            f"{escape(category)}</text>"
        )
        for g, (_, vs) in enumerate(groups):
            y = y0 + g * bar_height
            if vs[c] is None:
                parts.append(
                    f'<text x="{left + 3}" y="{y + bar_height - 1}" {SMALL_FONT} fill="#888">'
                    "n/a</text>"
                )
            else:
                parts.append(
                    f'<rect x="{left}" y="{y}" width="{max(sx(vs[c]) - left, 0):.1f}" '
                    f'height="{bar_height - 1}" fill="{PALETTE[g % len(PALETTE)]}"/>'
                )
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" {FONT}>'
        f"{escape(x_label)}</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
