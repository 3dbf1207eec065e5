"""Median, min and max of repeated runs; a least-squares slope."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TypedDict

__all__ = ["Summary", "slope", "summary"]


class Summary(TypedDict):
    median: float
    min: float
    max: float
    runs: int


def summary(values: Sequence[float]) -> Summary:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line; (0, y) for a single point."""
    if len(xs) < 2:
        return 0.0, ys[0] if ys else 0.0
    fit = statistics.linear_regression(xs, ys)
    return fit.slope, fit.intercept
