"""Server-side SVG charts for the console: no JavaScript, no CDN, readable at a glance.

Each function returns a `SafeString` holding one `<svg>` that scales to its container's width.
Every piece of text goes through `format_html`, so labels are escaped. Colours come from CSS
classes (`static/console/console.css`), so the charts follow the page's palette.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from delivery.observability.stats import Bucket

_WIDTH = 640
_LEFT = 44  # room for the y-axis labels
_BOTTOM = 20  # room for the x-axis labels
_TOP = 8


@dataclass(frozen=True)
class Series:
    """One stacked layer of a column chart."""

    name: str
    css_class: str
    values: Sequence[int]


def _join(parts: Iterable[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((part,) for part in parts))


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10ⁿ at or above `value` (1 for nothing), for a round axis."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _at(value: float) -> float:
    """A coordinate rounded to a tenth of a pixel: shorter SVG, same picture."""
    return round(value, 1)


def _number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}".rstrip("0").rstrip(".") + "k"
    return f"{value:g}"


def _hour_label(bucket: Bucket, *, index: int, every: int) -> str | None:
    if index % every:
        return None
    start = bucket.start
    return start.strftime("%b %d") if start.hour == 0 and every > 1 else start.strftime("%H:%M")


def column_chart(*, buckets: Sequence[Bucket], series: Sequence[Series], title: str,
                 height: int = 150) -> SafeString:
    """Stacked hourly columns, one per bucket, with a round y axis and a tooltip per column."""
    totals = [sum(layer.values[index] for layer in series) for index in range(len(buckets))]
    top = nice_ceiling(max(totals, default=0))
    plot_height = height - _TOP - _BOTTOM
    slot = (_WIDTH - _LEFT) / max(len(buckets), 1)
    parts = [_grid(top=top, plot_height=plot_height)]
    for index, bucket in enumerate(buckets):
        parts.append(_column(bucket=bucket, index=index, series=series, top=top, slot=slot,
                             plot_height=plot_height))
    every = max(1, math.ceil(len(buckets) / 8))
    for index, bucket in enumerate(buckets):
        label = _hour_label(bucket, index=index, every=every)
        if label:
            x = _at(_LEFT + slot * (index + 0.5))
            parts.append(format_html('<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                                     x, height - 5, label))
    if not any(totals):
        parts.append(format_html('<text class="empty" x="{}" y="{}" text-anchor="middle">{}</text>',
                                 _LEFT + (_WIDTH - _LEFT) // 2, _TOP + plot_height // 2,
                                 "Nothing sent in this period"))
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}</svg>',
        _WIDTH, height, title, title, _join(parts),
    )


def _grid(*, top: float, plot_height: int) -> SafeString:
    lines = []
    # A middle line only when it falls on a whole number: "0.5 requests" reads oddly.
    for fraction in (0, 0.5, 1) if top >= 2 else (0, 1):
        y = _at(_TOP + plot_height * (1 - fraction))
        lines.append(format_html(
            '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
            '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
            _LEFT, _WIDTH, y, y, _LEFT - 6, _at(y + 4), _number(top * fraction),
        ))
    return _join(lines)


def _column(*, bucket: Bucket, index: int, series: Sequence[Series], top: float, slot: float,
            plot_height: int) -> SafeString:
    x = _LEFT + slot * index + max(slot * 0.12, 0.5)
    width = max(slot * 0.76, 1)
    base: float = _TOP + plot_height
    rects = []
    for layer in series:
        value = layer.values[index]
        if not value:
            continue
        bar = plot_height * value / top
        base -= bar
        rects.append(format_html('<rect class="{}" x="{}" y="{}" width="{}" height="{}"/>',
                                 layer.css_class, _at(x), _at(base), _at(width), _at(bar)))
    detail = ", ".join(f"{layer.values[index]} {layer.name}" for layer in series)
    tooltip = f"{bucket.start:%b %d %H:%M} UTC: {detail}"
    # A full-height transparent target, so that hovering anywhere over the hour shows its numbers.
    return format_html(
        '<g><title>{}</title><rect class="hover" x="{}" y="{}" width="{}" height="{}"/>{}</g>',
        tooltip, _at(_LEFT + slot * index), _TOP, _at(slot), plot_height, _join(rects),
    )


def requests_chart(buckets: Sequence[Bucket]) -> SafeString:
    return column_chart(
        buckets=buckets,
        title="Requests per hour",
        series=[
            Series("delivered", "delivered", [bucket.delivered for bucket in buckets]),
            Series("failed", "failed", [bucket.failed for bucket in buckets]),
            Series("pending", "pending", [bucket.pending for bucket in buckets]),
        ],
    )


def users_chart(buckets: Sequence[Bucket]) -> SafeString:
    return column_chart(
        buckets=buckets,
        title="Users delivered per hour",
        height=110,
        series=[Series("users delivered", "users", [bucket.users_delivered for bucket in buckets])],
    )


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    css_class: str = "bar"


def bar_rows(*, bars: Sequence[Bar], unit: str, title: str, marker: tuple[float, str] | None = None,
             empty_text: str = "No data") -> SafeString:
    """Horizontal bars, one labelled row each; `marker` draws a dashed reference line (e.g. the deadline)."""
    row_height, label_width = 22, 110
    height = max(len(bars), 1) * row_height + 18
    scale = nice_ceiling(max([bar.value for bar in bars] + [marker[0] if marker else 0]))
    span = _WIDTH - label_width - 70
    parts = []
    for index, bar in enumerate(bars):
        y = 4 + index * row_height
        length = _at(max(span * bar.value / scale, 1.5))
        parts.append(format_html(
            '<text class="label" x="{}" y="{}" text-anchor="end">{}</text>'
            '<rect class="{}" x="{}" y="{}" width="{}" height="{}" rx="2"/>'
            '<text class="value" x="{}" y="{}">{} {}</text>',
            label_width - 8, y + 14, bar.label, bar.css_class, label_width, y + 3, length, row_height - 8,
            _at(label_width + length + 6), y + 14, f"{round(bar.value):,}", unit,
        ))
    if not bars:
        parts.append(format_html('<text class="empty" x="{}" y="18">{}</text>', label_width, empty_text))
    elif marker:
        x = _at(label_width + span * marker[0] / scale)
        parts.append(format_html(
            '<line class="marker" x1="{}" x2="{}" y1="0" y2="{}"/>'
            '<text class="marker-label" x="{}" y="{}" text-anchor="middle">{}</text>',
            x, x, height - 14, x, height - 3, marker[1],
        ))
    return format_html(
        '<svg class="chart bars" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}</svg>',
        _WIDTH, height, title, title, _join(parts),
    )


def latency_chart(*, p50: float | None, p95: float | None, p99: float | None, timeout_ms: int) -> SafeString:
    """p50/p95/p99 bars against the destination's deadline."""
    bars = [Bar(name, value, "latency") for name, value in (("p50", p50), ("p95", p95), ("p99", p99))
            if value is not None]
    return bar_rows(bars=bars, unit="ms", title="Attempt latency",
                    marker=(timeout_ms, f"deadline {timeout_ms} ms"), empty_text="No attempts in this period")


def failures_chart(failures: Sequence[tuple[str, int]]) -> SafeString:
    bars = [Bar(label, count, "failed") for label, count in failures]
    return bar_rows(bars=bars, unit="", title="Failed attempts by reason", empty_text="No failed attempts")
