"""How numbers, durations, parameters and metric names read in a report (text and plots)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

# Metric names written in capitals (RMSE, not rmse).
_UPPER_METRICS = {"rmse", "mae", "mse", "r2"}

EVALUATOR_NAMES = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}
"""Importance evaluators by their names in papers."""


def metric_label(metric: str) -> str:
    """rmse -> RMSE; other names as they are."""
    return metric.upper() if metric.lower() in _UPPER_METRICS else metric


def objective_label(metric: str) -> str:
    """How an objective is named in text: "validation RMSE", or "objective" when unknown."""
    if metric == "objective" or metric.startswith("objective "):
        return metric
    if metric in ("n_parameters", "train_seconds"):
        return metric
    return f"validation {metric_label(metric)}"


def evaluator_name(evaluator: object) -> str:
    """An importance evaluator as papers name it: fanova -> fANOVA."""
    return EVALUATOR_NAMES.get(str(evaluator), str(evaluator))


def first_line(text: str, limit: int = 200) -> str:
    """The first line of a (possibly long) error message, cut to ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def fmt(x: object) -> str:
    """A value in a short form: 4 significant digits, whole large numbers in full, — for None."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        if math.isfinite(x) and x.is_integer() and 1e4 <= abs(x) < 1e15:
            return f"{x:.0f}"  # parameter counts, seconds: not 2e+04
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def duration(seconds: float | None) -> str:
    """Seconds as "12.3 s", "4m 05s" or "1h 02m 03s"; — when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def params_text(params: Mapping[str, Any]) -> str:
    """Parameters as ``name=value`` pairs, sorted by name."""
    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(params.items()))


def metrics_text(m: Mapping[str, float]) -> str:
    """Metrics as ``name value`` pairs, sorted by name; — when there are none."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in sorted(m.items())) or "—"


def distribution_text(d: BaseDistribution) -> str:
    """A search-space dimension in words: "float 0.0001 .. 0.1 (log)", "one of a, b"."""
    if isinstance(d, CategoricalDistribution):
        return "one of " + ", ".join(fmt(c) for c in d.choices)
    if isinstance(d, FloatDistribution | IntDistribution):
        kind = "int" if isinstance(d, IntDistribution) else "float"
        extra = " (log)" if d.log else (f" step {fmt(d.step)}" if d.step not in (None, 1) else "")
        return f"{kind} {fmt(d.low)} .. {fmt(d.high)}{extra}"
    return type(d).__name__
