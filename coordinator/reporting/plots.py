"""The report's plots, each drawn as PNG bytes.

A plot without data raises :class:`NothingToPlot` with the reason, which the report lists
instead of the plot. Plots are drawn on :class:`matplotlib.figure.Figure` objects with an
explicit Agg canvas rather than through ``pyplot``: no process-wide backend is selected, no
figure is registered globally (so none stays open), and reports can be built from the
coordinator's threads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from coordinator.reporting.analysis import Importance
from coordinator.reporting.facts import DEFAULT_MARK, TrialFacts, number, sign
from coordinator.reporting.text import evaluator_name, fmt

MAX_PARALLEL_PARAMS = 12
"""Axes of the parallel-coordinates plot (the most important parameters first)."""

_STATE_COLOURS = {
    "complete": "tab:blue",
    "pruned": "tab:orange",
    "failed": "tab:red",
    "running": "tab:gray",
    "waiting": "tab:gray",
}


class NothingToPlot(Exception):
    """A plot has no data to draw; the message says why."""


def _new_figure(
    width: float = 8.0,
    height: float = 5.0,
    *,
    left: float = 0.1,
    bottom: float = 0.11,
    right: float = 0.97,
    top: float = 0.92,
) -> Figure:
    """A figure on its own Agg canvas with fixed margins (a layout engine would double the
    drawing time, and these figures have known sizes)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left, bottom=bottom, right=right, top=top)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    fig.clear()
    return buf.getvalue()


def plot_history(trials: Sequence[TrialFacts], direction: str, ylabel: str) -> bytes:
    """Objective per trial number with the best-so-far line."""
    pts = sorted(
        (t.number, t.value)
        for t in trials
        if t.state == "complete" and t.value is not None and math.isfinite(t.value)
    )
    if not pts:
        raise NothingToPlot("no complete trial with a finite value")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    best = np.minimum.accumulate(ys) if direction == "minimize" else np.maximum.accumulate(ys)
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.scatter(xs, ys, s=18, color="tab:blue", label="complete trial", zorder=3)
    ax.step(xs, best, where="post", color="tab:red", label="best so far", zorder=2)
    defaults = [t for t in trials if t.enqueued == DEFAULT_MARK and t.number in xs]
    if defaults:
        d = defaults[0]
        ax.scatter(
            [d.number], [d.value or 0.0], s=80, marker="*", color="black", zorder=4, label="default"
        )
    ax.set_xlabel("trial number")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Optimisation history ({direction})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return _png(fig)


def plot_intermediate(trials: Sequence[TrialFacts], ylabel: str) -> bytes:
    """Objective per epoch for every trial, coloured by state."""
    curves = []
    for t in trials:
        pts = sorted((s, v) for s, v in t.intermediate.items() if math.isfinite(v))
        if pts:
            curves.append((t, pts))
    if not curves:
        raise NothingToPlot("no trial reported intermediate values")
    fig = _new_figure()
    ax = fig.add_subplot()
    seen: set[str] = set()
    # Complete trials last, so pruned ones do not hide them.
    for t, pts in sorted(curves, key=lambda c: (c[0].state == "complete", c[0].number)):
        colour = _STATE_COLOURS.get(t.state, "tab:gray")
        seen.add(t.state)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=colour,
            alpha=0.8 if t.state == "complete" else 0.5,
            linewidth=1.0,
            marker="." if len(pts) == 1 else None,
        )
    handles = [Line2D([0], [0], color=_STATE_COLOURS[s], label=s) for s in sorted(seen)]
    ax.legend(handles=handles, loc="upper right")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title("Learning curves (validation objective per epoch)")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_importance(importance: Importance) -> bytes:
    """Horizontal bars, most important parameter on top."""
    if not importance.values:
        raise NothingToPlot(importance.reason or "no importances")
    names = list(importance.values)[::-1]
    vals = [importance.values[n] for n in names]
    height = max(2.5, 0.45 * len(names) + 1.2)
    longest = max(len(n) for n in names)
    fig = _new_figure(
        8.0,
        height,
        left=min(0.45, 0.04 + 0.011 * longest),
        bottom=0.6 / height,
        top=1.0 - 0.45 / height,
    )
    ax = fig.add_subplot()
    ax.barh(names, vals, color="tab:blue")
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlabel("importance (normalised)")
    ax.set_xlim(0, max(vals) * 1.2 if max(vals) > 0 else 1.0)
    ax.set_title(f"Parameter importance ({evaluator_name(importance.evaluator)})")
    return _png(fig)


# ---- parallel coordinates --------------------------------------------------------------------

_Axis = tuple[list[float], list[tuple[float, str]]]
"""A parameter's values normalised to [0, 1] (NaN where absent), and its tick labels."""


def _categorical_axis(raw: Sequence[Any], dist: object) -> _Axis:
    """Choices at evenly spaced positions: the distribution's first, then any others seen."""
    choices: list[Any] = list(dist.choices) if isinstance(dist, CategoricalDistribution) else []
    for v in raw:
        if v is not None and v not in choices:
            choices.append(v)
    n = len(choices)
    pos = {i: (i / (n - 1) if n > 1 else 0.5) for i in range(n)}
    vals = [pos[choices.index(v)] if v is not None else math.nan for v in raw]
    return vals, [(pos[i], fmt(c)) for i, c in enumerate(choices)]


def _numeric_axis(raw: Sequence[Any], dist: object) -> _Axis:
    """Values between the range's ends (widened to the values seen), on a log scale if the
    distribution has one."""
    nums = [number(v) for v in raw]
    finite = [v for v in nums if v is not None and math.isfinite(v)]
    if not finite:
        return [math.nan] * len(raw), []
    lo, hi = min(finite), max(finite)
    log = False
    if isinstance(dist, FloatDistribution | IntDistribution):
        lo, hi = min(lo, float(dist.low)), max(hi, float(dist.high))
        log = dist.log and lo > 0

    def tr(x: float) -> float:
        return math.log10(x) if log else x

    a, b = tr(lo), tr(hi)
    span = b - a
    vals = [
        ((tr(v) - a) / span if span > 0 else 0.5)
        if v is not None and math.isfinite(v) and (not log or v > 0)
        else math.nan
        for v in nums
    ]
    ticks = [(0.0, fmt(lo)), (1.0, fmt(hi))] if span > 0 else [(0.5, fmt(lo))]
    return vals, ticks


def _axis_values(name: str, trials: Sequence[TrialFacts]) -> _Axis:
    """Values of a parameter normalised to [0, 1] (NaN where absent) and tick labels."""
    dist = next((t.distributions[name] for t in trials if name in t.distributions), None)
    raw = [t.params.get(name) for t in trials]
    if isinstance(dist, CategoricalDistribution) or any(
        v is not None and not isinstance(number(v), float) for v in raw
    ):
        return _categorical_axis(raw, dist)
    return _numeric_axis(raw, dist)


def _parallel_names(done: Sequence[TrialFacts], param_order: Sequence[str]) -> list[str]:
    """The parameters on axes: the given order first, then the rest by name, at most
    :data:`MAX_PARALLEL_PARAMS`."""
    names = [p for p in param_order if any(p in t.params for t in done)]
    names += sorted({p for t in done for p in t.params} - set(names))
    return names[:MAX_PARALLEL_PARAMS]


def _draw_axes(ax: Axes, axes_vals: Sequence[_Axis], lo: float, hi: float) -> None:
    """The vertical axes with their tick labels; the last one is the objective's."""
    for x, (_, ticks) in enumerate(axes_vals):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, text in ticks:
            ax.text(x + 0.03, y, text, fontsize=7, va="center")
    n = len(axes_vals)
    ax.axvline(n, color="black", linewidth=0.8)
    ax.text(n + 0.03, 0.0, fmt(lo), fontsize=7, va="center")
    ax.text(n + 0.03, 1.0, fmt(hi), fontsize=7, va="center")


def plot_parallel(
    trials: Sequence[TrialFacts], param_order: Sequence[str], direction: str, label: str
) -> bytes:
    """One line per complete trial over normalised parameter axes, coloured by objective.

    Categorical parameters sit at evenly spaced positions; log-scaled ones on a log axis;
    a parameter a trial does not have (conditional spaces) leaves a gap in its line.
    """
    done = [t for t in trials if t.state == "complete" and t.has_finite_value]
    if not done:
        raise NothingToPlot("no complete trial with a finite value")
    names = _parallel_names(done, param_order)
    if not names:
        raise NothingToPlot("the trials have no parameters")
    # Best trials drawn last (on top).
    done.sort(key=lambda t: -sign(direction) * (t.value or 0.0))
    objective = [t.value or 0.0 for t in done]
    lo, hi = min(objective), max(objective)
    axes_vals = [_axis_values(n, done) for n in names]
    obj_norm = [((v - lo) / (hi - lo) if hi > lo else 0.5) for v in objective]
    cmap = colormaps["viridis_r" if direction == "minimize" else "viridis"]
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    longest = max(len(n) for n in [*names, label])
    fig = _new_figure(
        max(8.0, 1.2 * (len(names) + 1) + 2),
        5.5,
        left=0.05,
        right=0.98,
        bottom=min(0.4, 0.08 + 0.012 * longest),
    )
    ax = fig.add_subplot()
    xs = list(range(len(names) + 1))
    for i in range(len(done)):
        ys = [vals[i] for vals, _ in axes_vals] + [obj_norm[i]]
        ax.plot(xs, ys, color=cmap(norm(objective[i])), alpha=0.7, linewidth=1.2)
    _draw_axes(ax, axes_vals, lo, hi)
    ax.set_xticks(xs, [*names, label], rotation=30, ha="right")
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(names) + 0.5)
    ax.set_title("Parallel coordinates of the complete trials")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label)
    return _png(fig)


def plot_predictions(y_true: np.ndarray, y_pred: np.ndarray, metrics: Mapping[str, Any]) -> bytes:
    """Predicted against true values with the identity line; RMSE in the title."""
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    if not ok.any():
        raise NothingToPlot("no finite prediction")
    t, p = y_true[ok], y_pred[ok]
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    fig = _new_figure(6.0, 6.0, left=0.13, bottom=0.1, right=0.95, top=0.93)
    ax = fig.add_subplot()
    ax.scatter(t, p, s=12, alpha=0.6, color="tab:blue", edgecolors="none")
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", linewidth=1, label="y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"Predicted vs true (RMSE {fmt(metrics['rmse'])}, n={metrics['n']})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _png(fig)
