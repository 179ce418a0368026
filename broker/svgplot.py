"""Small time-series line charts as inline SVG, for the server-rendered ops pages.

The dashboard shows throughput and consumer lag per queue over the last hour, and its pages work
without JavaScript on a laptop and on a phone.  :func:`line_chart` turns samples into one ``<svg>``
element to embed in HTML: no script and no external asset, scaled to its container through its
``viewBox``, and readable as text through ``<title>`` and ``<desc>``.

Text is laid out without a browser, so widths are estimated from the character count at the chart's
11px font.  Nothing here does I/O, and the markup depends only on the arguments: the same samples
render the same chart.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

__all__ = ["Series", "line_chart", "nice_ceiling", "format_value", "time_ticks"]

#: Series colours: the Okabe-Ito palette, told apart with the common colour-vision deficiencies,
#: without its yellow, which is too pale on white (https://jfly.uni-koeln.de/color/).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")

#: ``stroke-dasharray`` by series, so lines differ without colour too; the first series is solid.
DASHES = ("", "6 3", "2 2", "8 3 2 3")

#: Time-axis steps in seconds.  Each divides a day, so ticks fall on round UTC clock times.
TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

#: How many time ticks to aim for; the step chosen gives 3 to 7 whenever one of them can.
TARGET_TICKS = 5

#: Nice y-axis maxima are these mantissas times a power of ten, each with its number of gridline
#: intervals, so that every gridline gets a short label (0.5, 1, 1.5, ... rather than 0.625).
NICE_MANTISSAS = ((1, 5), (2, 4), (2.5, 5), (5, 5), (10, 5))

#: The smallest chart, in user units, that still fits its axis labels.
MIN_WIDTH, MIN_HEIGHT = 200, 100

#: A window with a single timestamp is widened to this many seconds, so it still has a time axis.
MIN_WINDOW_SECONDS = 60

#: Estimated average width of a character at the chart's 11px system font.
CHAR_WIDTH = 6.2

#: Height of one header row (the title and legend entries), in user units.
ROW_HEIGHT = 14

#: Length of the line sample in front of each legend entry.
LEGEND_SAMPLE = 18

#: Margins around the plot area: padding at the left, room for the last time label at the right and
#: for the time labels below.
PAD, RIGHT_MARGIN, BOTTOM_MARGIN = 4, 18, 18

#: Styles scoped by the ``svgplot`` class: a ``<style>`` inside inline SVG applies to the whole page.
STYLE = (
    ".svgplot{display:block;font:11px system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}"
    ".svgplot text{fill:#333}"
    ".svgplot .title{font-weight:600}"
    ".svgplot .axis text{fill:#555}"
    ".svgplot .grid{stroke:#e8e8e8}"
    ".svgplot .frame{fill:none;stroke:#d0d0d0}"
    ".svgplot .baseline,.svgplot .tick{stroke:#888}"
    ".svgplot .empty{fill:#777}"
)

#: Characters XML 1.0 does not allow at all, even escaped; they are dropped from labels.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class Series:
    """One line of a chart.

    Parameters:
      label(str): The name shown in the legend and the description, such as a queue name.
      points(Sequence[tuple[float, float | None]]): ``(epoch seconds, value)`` samples in any
        order.  A ``None``, NaN or infinite value is a gap: the line stops there and starts again.
    """

    label: str
    points: Sequence[tuple[float, float | None]]


def nice_ceiling(value: float) -> float:
    """Returns the smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value``.

    Returns:
      float: 1 when ``value`` is not positive, so an all-zero chart still has a scale.
    """
    return _nice_scale(value)[0]


def format_value(value: float) -> str:
    """Formats a value compactly: ``0.5``, ``15``, ``12.5``, ``1.2k``, ``3.4M``.

    Three significant digits at most, with a k/M/G/T suffix from a thousand on.
    """
    scales = ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"))
    index = 0
    while index + 1 < len(scales) and abs(value) >= scales[index + 1][0]:
        index += 1
    while True:
        divisor, suffix = scales[index]
        text = f"{value / divisor:.3g}"
        # 999.96 rounds up to "1e+03": say 1k instead.
        if abs(float(text)) < 1000 or index + 1 == len(scales):
            break
        index += 1
    return ("0" if text == "-0" else text) + suffix


def time_ticks(start: float, end: float) -> list[float]:
    """Returns round UTC clock times between ``start`` and ``end`` to label the time axis.

    The step is the one of :data:`TIME_STEPS` whose tick count is nearest :data:`TARGET_TICKS`
    (the larger step on a tie), so a one-hour window gets ticks every 15 minutes.  The charts are
    meant for hours: a window of more than about a week gets more than seven ticks, and ``HH:MM``
    labels do not tell days apart.

    Returns:
      list[float]: Epoch seconds in increasing order, all within the window.
    """

    def count(step: int) -> int:
        return math.floor(end / step) - math.ceil(start / step) + 1

    step = min(TIME_STEPS, key=lambda step: (abs(count(step) - TARGET_TICKS), -step))
    first = math.ceil(start / step)
    return [float(tick * step) for tick in range(first, first + max(count(step), 0))]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    start: float | None = None,
    end: float | None = None,
    width: int = 600,
    height: int = 160,
) -> str:
    """Renders series as a line chart: one inline ``<svg>`` element as a string.

    The chart fills the width of its container and keeps its aspect ratio, so ``width`` and
    ``height`` set the proportions and the size of the text relative to the chart: on a narrow
    page, a smaller ``width`` (such as 360) keeps the 11px labels legible.  Every sample becomes a
    vertex, so downsample long series first (one point per pixel column is plenty).

    The y axis starts at 0, for rates and lags; negative values are drawn on the baseline.

    Parameters:
      series(Sequence[Series]): The lines, coloured and dashed in this order.
      title(str): Shown above the plot and used as the accessible name.
      unit(str): The unit of the values, such as ``"msg/s"``, for the heading and the description.
      start(float | None): Epoch seconds at the left edge; the earliest sample by default.  Samples
        outside ``start``..``end`` are left out.
      end(float | None): Epoch seconds at the right edge; the latest sample by default.
      width(int): The width of the ``viewBox``, in user units.
      height(int): The height of the ``viewBox``, in user units.

    Returns:
      str: The ``<svg>`` markup.  Without any value in the window, an empty frame saying "no data".

    Raises:
      ValueError: If ``width`` or ``height`` is below :data:`MIN_WIDTH` or :data:`MIN_HEIGHT`, or
        ``end`` is before ``start``.
    """
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        raise ValueError(f"chart size {width}x{height} is below the minimum {MIN_WIDTH}x{MIN_HEIGHT}")
    if start is not None and end is not None and end < start:
        raise ValueError(f"chart end {end} is before its start {start}")
    # A default bound comes from the samples on the right side of the other bound, so a window
    # given only a start whose samples are all older says "no data" rather than raising.
    times = [t for line in series for t, _ in line.points if math.isfinite(t)]
    if start is None:
        start = min((t for t in times if end is None or t <= end), default=None)
    if end is None:
        end = max((t for t in times if start is None or t >= start), default=None)
    if start is not None and end == start:
        end = start + MIN_WINDOW_SECONDS
    samples = [_samples_in(line, start, end) for line in series]
    values = [value for line in samples for _, value in line if value is not None]
    top_value, step = _nice_scale(max(values, default=0.0))
    y_labels = [(i * step, format_value(i * step)) for i in range(round(top_value / step) + 1)] if values else []

    heading = f"{title} ({unit})" if unit else title
    legend, rows = _legend_layout(heading, [line.label for line in series], width)
    longest = max((len(text) for _, text in y_labels), default=0)
    plot = _Plot(
        left=PAD + 4 + longest * CHAR_WIDTH,
        top=rows * ROW_HEIGHT + 8,
        right=width - RIGHT_MARGIN,
        bottom=height - BOTTOM_MARGIN,
        start=start if start is not None else 0.0,
        end=end if end is not None else 1.0,
        top_value=top_value,
    )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="svgplot" viewBox="0 0 {width} {height}" width="100%"'
        f' preserveAspectRatio="xMidYMid meet" role="img" aria-label={quoteattr(_clean(title))}>',
        f"<title>{_text(title)}</title>",
        f"<desc>{_text(_describe(series, samples, unit, start, end))}</desc>",
        f"<style>{STYLE}</style>",
        f'<text class="title" x="{PAD}" y="12">{_text(heading)}</text>',
        _legend(legend),
        f'<rect class="frame" x="{_n(plot.left)}" y="{_n(plot.top)}" width="{_n(plot.right - plot.left)}"'
        f' height="{_n(plot.bottom - plot.top)}"/>',
        _y_axis(plot, y_labels),
        _x_axis(plot, [] if start is None or end is None else time_ticks(start, end)),
    ]
    if values:
        parts.extend(_lines(plot, index, line) for index, line in enumerate(samples))
    else:
        parts.append(
            f'<text class="empty" x="{_n((plot.left + plot.right) / 2)}" y="{_n((plot.top + plot.bottom) / 2)}"'
            ' text-anchor="middle" dominant-baseline="middle">no data</text>'
        )
    parts.append("</svg>")
    return "".join(part for part in parts if part)


@dataclass(frozen=True)
class _Plot:
    """The plot area in user units, and the time window and value range it maps."""

    left: float
    top: float
    right: float
    bottom: float
    start: float
    end: float
    top_value: float

    def x(self, t: float) -> float:
        return self.left + (self.right - self.left) * (t - self.start) / (self.end - self.start)

    def y(self, value: float) -> float:
        clamped = min(max(value, 0.0), self.top_value)
        return self.bottom - (self.bottom - self.top) * clamped / self.top_value


def _nice_scale(value: float) -> tuple[float, float]:
    """Returns the nice maximum for ``value`` and the gridline step that divides it."""
    if not value > 0:  # also NaN
        return 1.0, 0.2
    exponent = math.floor(math.log10(value))
    for mantissa, intervals in NICE_MANTISSAS:
        # Rounding to 12 digits undoes float noise such as 2.5 * 0.1 == 0.25000000000000006.
        top = float(f"{mantissa * 10.0**exponent:.12g}")
        if top >= value:
            return top, float(f"{top / intervals:.12g}")
    raise AssertionError("unreachable: the last mantissa is the next power of ten")


def _samples_in(line: Series, start: float | None, end: float | None) -> list[tuple[float, float | None]]:
    """The samples of ``line`` inside the window, by time, with every gap value as ``None``."""
    samples = []
    for t, value in sorted(line.points, key=lambda point: point[0]):
        if not math.isfinite(t) or (start is not None and t < start) or (end is not None and t > end):
            continue
        finite = value is not None and math.isfinite(value)
        samples.append((t, float(value) if finite else None))
    return samples


def _segments(samples: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Splits samples into runs without gaps."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, value in samples:
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, value))
    return [run for run in runs if run]


def _describe(
    series: Sequence[Series],
    samples: list[list[tuple[float, float | None]]],
    unit: str,
    start: float | None,
    end: float | None,
) -> str:
    """The text alternative: the window, then each series' latest and largest value."""
    suffix = f" {unit}" if unit else ""
    summaries = []
    for line, points in zip(series, samples):
        values = [value for _, value in points if value is not None]
        if values:
            summaries.append(
                f"{line.label}: latest {format_value(values[-1])}{suffix}, max {format_value(max(values))}{suffix}"
            )
        else:
            summaries.append(f"{line.label}: no data")
    window = f"{_clock(start)} to {_clock(end)} UTC. " if start is not None and end is not None else ""
    return window + ("; ".join(summaries) if summaries else "no data")


def _legend_layout(heading: str, labels: list[str], width: int) -> tuple[list[tuple[float, float, str]], int]:
    """Places legend entries after the heading, wrapping to new rows; returns them and the row count."""
    x, row = PAD + len(heading) * CHAR_WIDTH * 1.1 + 16, 0
    entries = []
    for label in labels:
        entry_width = LEGEND_SAMPLE + 4 + len(label) * CHAR_WIDTH
        if x + entry_width > width - PAD and x > PAD:
            x, row = PAD, row + 1
        entries.append((x, 12 + row * ROW_HEIGHT, label))
        x += entry_width + 12
    return entries, row + 1


def _legend(entries: list[tuple[float, float, str]]) -> str:
    items = []
    for index, (x, baseline, label) in enumerate(entries):
        sample_y = _n(baseline - 4)
        items.append(
            f'<line x1="{_n(x)}" y1="{sample_y}" x2="{_n(x + LEGEND_SAMPLE)}" y2="{sample_y}"{_stroke(index)}/>'
            f'<text x="{_n(x + LEGEND_SAMPLE + 4)}" y="{_n(baseline)}">{_text(label)}</text>'
        )
    return f'<g class="legend">{"".join(items)}</g>' if items else ""


def _y_axis(plot: _Plot, labels: list[tuple[float, str]]) -> str:
    items = []
    for value, text in labels:
        y = _n(plot.y(value))
        line_class = "baseline" if value == 0 else "grid"
        items.append(
            f'<line class="{line_class}" x1="{_n(plot.left)}" y1="{y}" x2="{_n(plot.right)}" y2="{y}"/>'
            f'<text x="{_n(plot.left - 4)}" y="{y}" text-anchor="end" dominant-baseline="middle">{text}</text>'
        )
    return f'<g class="axis y-axis">{"".join(items)}</g>' if items else ""


def _x_axis(plot: _Plot, ticks: list[float]) -> str:
    items = []
    for tick in ticks:
        x = _n(plot.x(tick))
        items.append(
            f'<line class="tick" x1="{x}" y1="{_n(plot.bottom)}" x2="{x}" y2="{_n(plot.bottom + 3)}"/>'
            f'<text x="{x}" y="{_n(plot.bottom + 14)}" text-anchor="middle">{_clock(tick)}</text>'
        )
    return f'<g class="axis x-axis">{"".join(items)}</g>' if items else ""


def _lines(plot: _Plot, index: int, samples: list[tuple[float, float | None]]) -> str:
    """One series: a polyline per run without gaps, and a dot for a run of one sample."""
    shapes = []
    for run in _segments(samples):
        if len(run) == 1:
            t, value = run[0]
            colour = PALETTE[index % len(PALETTE)]
            shapes.append(f'<circle cx="{_n(plot.x(t))}" cy="{_n(plot.y(value))}" r="2" fill="{colour}"/>')
        else:
            points = " ".join(f"{_n(plot.x(t))},{_n(plot.y(value))}" for t, value in run)
            shapes.append(f'<polyline points="{points}"{_stroke(index)}/>')
    return f'<g class="series">{"".join(shapes)}</g>'


def _stroke(index: int) -> str:
    """The presentation attributes of series ``index``'s line, starting with a space."""
    dash = DASHES[index % len(DASHES)]
    attributes = f' fill="none" stroke="{PALETTE[index % len(PALETTE)]}" stroke-width="1.5" stroke-linejoin="round"'
    return attributes + (f' stroke-dasharray="{dash}"' if dash else "")


def _clock(t: float) -> str:
    """UTC ``HH:MM`` of epoch seconds."""
    return time.strftime("%H:%M", time.gmtime(t))


def _n(number: float) -> str:
    """A coordinate with at most one decimal, without a trailing ``.0``."""
    text = f"{round(number, 1):.1f}".removesuffix(".0")
    return "0" if text == "-0" else text


def _clean(text: str) -> str:
    return _INVALID_XML.sub("", text)


def _text(text: str) -> str:
    """Escapes ``text`` for element content."""
    return escape(_clean(text))
