"""Rows: what every scenario returns, one per figure.

A row holds one figure (say, tasks/s of KafkaBroker with 8 threads) measured once per run, and its
median, min and max.  Rows of the same ``scenario``, ``case`` and ``metric`` are comparable: the
report divides a subject's median by each baseline's.  A baseline that could not run is still a
row, with ``status`` "unavailable" and the reason in ``note``.
"""

from __future__ import annotations

import math
import statistics

#: The system every scenario is about.
SUBJECT = "KafkaBroker"

#: The keys of every row.
KEYS = ("scenario", "case", "system", "metric", "unit", "better", "runs", "median", "min", "max", "status", "note")


def row(
    scenario: str,
    case: str,
    system: str,
    metric: str,
    unit: str,
    runs: list[float],
    *,
    better: str = "higher",
    note: str = "",
    samples: list[float] | None = None,
) -> dict:
    """Returns a measured row.

    Parameters:
      runs: The figure of each run.
      better: ``"higher"`` or ``"lower"``: which way is an improvement.
      samples: Raw samples behind the figure (latencies of the median run, say), for plots.
    """
    values = [float(v) for v in runs if v is not None and math.isfinite(v)]
    if not values:
        return unavailable(scenario, case, system, note or "no run produced this figure", metric=metric, unit=unit)
    result = dict(
        scenario=scenario,
        case=case,
        system=system,
        metric=metric,
        unit=unit,
        better=better,
        runs=values,
        median=statistics.median(values),
        min=min(values),
        max=max(values),
        status="ok",
        note=note,
    )
    if samples is not None:
        result["samples"] = [float(s) for s in samples]
    return result


def unavailable(scenario: str, case: str, system: str, reason: str, *, metric: str = "", unit: str = "") -> dict:
    """Returns the row of a figure that could not be measured, and why."""
    return dict(
        scenario=scenario,
        case=case,
        system=system,
        metric=metric,
        unit=unit,
        better="higher",
        runs=[],
        median=None,
        min=None,
        max=None,
        status="unavailable",
        note=reason,
    )


def percentile(values: list[float], p: float) -> float:
    """Returns the ``p`` quantile (0..1) of the values, by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * p) - 1))]


def median_run(runs: list[list[float]]) -> list[float]:
    """Returns the samples of the run whose median is the median, for plots."""
    measured = [r for r in runs if r]
    if not measured:
        return []
    return sorted(measured, key=statistics.median)[len(measured) // 2]


def ratio(subject: dict, baseline: dict) -> float | None:
    """Returns the subject's median divided by a baseline's (whichever way is better)."""
    if subject["status"] != "ok" or baseline["status"] != "ok" or not baseline["median"]:
        return None
    return subject["median"] / baseline["median"]
