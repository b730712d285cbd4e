"""A finished (or running) study as a report on disk: Markdown, JSON and PNG plots.

:func:`build_report` reads everything from the :class:`optuna.Study` itself (its trials, their
user attributes, the request the coordinator kept with the study), so a report can be made for
any study in the store, long after the coordinator that ran it is gone, and for studies molhpo
did not make (every molhpo attribute is optional). The deciding parts (ranking, convergence
warnings, failure groups, the default-versus-best comparison) are pure functions over
:class:`TrialFacts`, so they are tested without a store; only :func:`build_report` writes files.

Plots are drawn on :class:`matplotlib.figure.Figure` objects with an explicit Agg canvas rather
than through ``pyplot``: no process-wide backend is selected, no figure is registered globally
(so none stays open), and reports can be built from the coordinator's threads.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from coordinator.objectives import pareto_front
from molhpo.errors import InvalidArgument

# Study system attributes the coordinator keeps (mirrors coordinator.study_runner.ATTR_REQUEST
# and coordinator.core.ATTR_DATASET; not imported, as those modules pull in redis).
ATTR_REQUEST = "molhpo:request"
ATTR_DATASET = "molhpo:dataset"
# The enqueued trial holding the model family's default configuration.
DEFAULT_MARK = "default"

# Files written into the output directory.
MARKDOWN_FILE = "report.md"
JSON_FILE = "report.json"
BEST_PARAMS_FILE = "best_params.json"
PLOT_FILES = {
    "history": "history.png",
    "intermediate": "intermediate.png",
    "importance": "importance.png",
    "parallel_coordinates": "parallel_coordinates.png",
    "predicted_vs_true": "predicted_vs_true.png",
}

# How many of the best trials get convergence checks.
TOP_TRIALS_CHECKED = 5
# Rows of the Markdown ranking table (report.json lists every complete trial).
MAX_TABLE_ROWS = 50
# Axes of the parallel-coordinates plot (the most important parameters first).
MAX_PARALLEL_PARAMS = 12
# Example reasons shown per failure class.
MAX_REASONS = 3

SCHEMA_VERSION = 1

PREMATURE = "premature convergence: best epoch is the first, learning rate likely too high"
UNDERTRAINED = "under-trained: best epoch is the last, train longer"

_STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
_STATE_COLOURS = {
    "complete": "tab:blue",
    "pruned": "tab:orange",
    "failed": "tab:red",
    "running": "tab:gray",
    "waiting": "tab:gray",
}
_UPPER_METRICS = {"rmse", "mae", "mse", "r2"}


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote: the paths and the facts of ``report.json``."""

    markdown: Path
    json: Path
    plots: dict[str, Path]
    summary: dict[str, Any]
    # best_params.json: a parameter dict (single objective) or the Pareto front's parameters
    # (multi-objective); None when no trial completed.
    best_params: Path | None = None


@dataclass(frozen=True)
class TrialFacts:
    """One trial as the report sees it: Optuna's fields plus molhpo's user attributes.

    Missing attributes (studies molhpo did not make, trials that never reported) are None or
    empty; ``best_step`` and ``epochs_trained`` fall back to the intermediate values.
    """

    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    epochs_trained: int | None
    best_step: int | None
    seconds: float | None
    n_parameters: int | None
    feasible: bool
    enqueued: str | None
    failure_class: str | None
    failure_reason: str | None
    trainer_id: str | None
    started: dt.datetime | None
    ended: dt.datetime | None
    intermediate: dict[int, float]

    @property
    def value(self) -> float | None:
        """The first objective's value (the objective of a single-objective study)."""
        return self.values[0] if self.values else None

    @property
    def has_finite_value(self) -> bool:
        """Whether every objective value is a finite number."""
        return bool(self.values) and all(math.isfinite(v) for v in self.values or ())

    @property
    def train_seconds(self) -> float | None:
        """Training time: the trainer's ``seconds``, else the trial's duration in the store."""
        if self.seconds is not None:
            return self.seconds
        if self.started is not None and self.ended is not None:
            return (self.ended - self.started).total_seconds()
        return None


# ---- reading trials ------------------------------------------------------------------------


def _number(raw: object) -> float | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    return None


def _int(raw: object) -> int | None:
    v = _number(raw)
    return int(v) if v is not None and math.isfinite(v) else None


def _metrics(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for k, v in raw.items():
        f = _number(v)
        if f is not None:
            out[str(k)] = f
    return out


def _text(raw: object) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def _best_step_of(intermediate: Mapping[int, float], direction: str) -> int | None:
    """The step of the best finite intermediate value (earliest on ties)."""
    finite = [(s, v) for s, v in sorted(intermediate.items()) if math.isfinite(v)]
    if not finite:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(finite, key=lambda sv: (sign * sv[1], sv[0]))[0]


def _is_feasible(t: FrozenTrial) -> bool:
    if t.user_attrs.get("feasible") is False:
        return False
    constraints: object = getattr(t, "constraints", None)
    if isinstance(constraints, Mapping):
        cvals: list[object] = list(constraints.values())
    else:
        legacy = t.system_attrs.get("constraints")
        cvals = list(legacy) if isinstance(legacy, list | tuple) else []
    return all(not (isinstance(c, int | float) and c > 0) for c in cvals)


def trial_facts(t: FrozenTrial, direction: str = "minimize") -> TrialFacts:
    """A stored trial as :class:`TrialFacts`; ``direction`` is the first objective's."""
    ua = t.user_attrs
    intermediate = {int(s): float(v) for s, v in t.intermediate_values.items()}
    epochs = _int(ua.get("epochs_trained"))
    if epochs is None and intermediate:
        epochs = max(intermediate)
    best_step = _int(ua.get("best_step"))
    if not best_step:  # 0 means "no epoch was better than nothing": not reported
        best_step = _best_step_of(intermediate, direction)
    values = tuple(float(v) for v in t.values) if t.values is not None else None
    return TrialFacts(
        number=t.number,
        state=_STATE_NAMES.get(t.state, t.state.name.lower()),
        values=values,
        params=dict(t.params),
        distributions=dict(t.distributions),
        valid_metrics=_metrics(ua.get("valid_metrics")),
        test_metrics=_metrics(ua.get("test_metrics")),
        epochs_trained=epochs,
        best_step=best_step,
        seconds=_number(ua.get("seconds")),
        n_parameters=_int(ua.get("n_parameters")),
        feasible=_is_feasible(t),
        enqueued=_text(ua.get("enqueued")),
        failure_class=_text(ua.get("failure_class")),
        failure_reason=_text(ua.get("failure_reason")),
        trainer_id=_text(ua.get("trainer_id")),
        started=t.datetime_start,
        ended=t.datetime_complete,
        intermediate=intermediate,
    )


# ---- the study's setup -----------------------------------------------------------------------


def _direction_name(raw: object, fallback: str) -> str:
    if raw in ("DIRECTION_MAXIMIZE", 2):
        return "maximize"
    if raw in ("DIRECTION_MINIMIZE", 1):
        return "minimize"
    return fallback


def study_setup(
    system_attrs: Mapping[str, Any],
    user_attrs: Mapping[str, Any],
    directions: Sequence[str],
) -> dict[str, Any]:
    """What was tuned, from the request JSON the coordinator stored (if any).

    Falls back to the study's user attributes ``model``, ``dataset`` and ``metric`` and to the
    study's directions; fields nobody recorded are None. A request that is not valid JSON is
    reported in ``request_error`` rather than raised: the report is still useful without it.
    """
    req: dict[str, Any] = {}
    request_error = None
    raw = system_attrs.get(ATTR_REQUEST)
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError as err:
            request_error = f"{ATTR_REQUEST} is not valid JSON: {err}"
        else:
            if isinstance(parsed, dict):
                req = parsed
            else:
                request_error = f"{ATTR_REQUEST} is not a JSON object"
    elif isinstance(raw, dict):
        req = raw

    def sub(key: str) -> dict[str, Any]:
        v = req.get(key)
        return v if isinstance(v, dict) else {}

    objs_raw = req.get("objectives")
    objs = [o for o in objs_raw if isinstance(o, dict)] if isinstance(objs_raw, list) else []
    if not objs and req:
        objs = [sub("objective")]
    objectives = []
    for i, d in enumerate(directions):
        o = objs[i] if i < len(objs) else {}
        metric = o.get("metric") or None
        if metric is None and req:
            metric = "rmse" if i == 0 else None  # the proto's default objective
        if metric is None and i == 0 and len(directions) == 1:
            metric = _text(user_attrs.get("metric"))
        objectives.append(
            {
                "metric": metric or ("objective" if len(directions) == 1 else f"objective {i}"),
                "direction": _direction_name(o.get("direction"), d),
            }
        )
    dataset = sub("dataset")
    budget = sub("budget")
    constraints = [
        {"metric": c.get("metric"), "max": c.get("max", 0.0)}
        for c in req.get("constraints", [])
        if isinstance(c, dict)
    ]
    summary = system_attrs.get(ATTR_DATASET)
    return {
        "name": req.get("name"),
        "description": req.get("description") or None,
        "model": req.get("model") or _text(user_attrs.get("model")),
        "dataset": dataset.get("name") or dataset.get("path") or _text(user_attrs.get("dataset")),
        "split": dataset.get("split") or ("random" if req else None),
        "target": dataset.get("target") or None,
        "sampler": sub("sampler").get("name") or ("tpe" if req else None),
        "sampler_options": sub("sampler").get("options") or {},
        "pruner": (
            "none (multi-objective)"
            if len(directions) > 1
            else sub("pruner").get("name") or ("hyperband" if req else None)
        ),
        "pruner_options": sub("pruner").get("options") or {},
        "objectives": objectives,
        "constraints": constraints,
        "n_trials": _int(budget.get("n_trials")),
        "max_epochs": _int(budget.get("max_epochs")),
        "timeout_seconds": _number(budget.get("timeout_seconds")),
        "fixed_params": sub("fixed_params"),
        "dataset_summary": summary if isinstance(summary, dict) else None,
        "request_error": request_error,
    }


# ---- decisions over trials -------------------------------------------------------------------


def _sign(direction: str) -> float:
    return -1.0 if direction == "maximize" else 1.0


def rank_single(trials: Sequence[TrialFacts], direction: str) -> list[TrialFacts]:
    """Complete trials, best first: feasible before infeasible, non-finite values last, then by
    value in the study's direction, then by number (so ties keep Optuna's choice of best)."""
    complete = [t for t in trials if t.state == "complete" and t.values]
    sign = _sign(direction)
    return sorted(
        complete,
        key=lambda t: (
            not t.feasible,
            not t.has_finite_value,
            sign * t.value if t.has_finite_value and t.value is not None else 0.0,
            t.number,
        ),
    )


def rank_pareto(trials: Sequence[TrialFacts], directions: Sequence[str]) -> list[TrialFacts]:
    """The Pareto front of the feasible complete trials with finite values, ordered by the first
    objective (ties by number)."""
    eligible = [
        t
        for t in trials
        if t.state == "complete" and t.feasible and t.has_finite_value and t.values
    ]
    eligible = [t for t in eligible if t.values is not None and len(t.values) == len(directions)]
    by_number = {t.number: t for t in eligible}
    front = pareto_front([(t.number, t.values or ()) for t in eligible], list(directions))
    sign = _sign(directions[0])
    return sorted((by_number[n] for n in front), key=lambda t: (sign * (t.value or 0.0), t.number))


def best_trial(ranking: Sequence[TrialFacts]) -> TrialFacts | None:
    """The best single-objective trial: the first feasible one with a finite value."""
    for t in ranking:
        if t.feasible and t.has_finite_value:
            return t
    return None


def epoch_budget(max_epochs: int | None, trials: Sequence[TrialFacts]) -> int | None:
    """Epochs a trial may train: the request's budget, else the most any trial trained."""
    if max_epochs:
        return max_epochs
    trained = [t.epochs_trained for t in trials if t.epochs_trained]
    return max(trained) if trained else None


def convergence_warnings(
    top: Sequence[TrialFacts], budget: int | None, rank_of: Mapping[int, int] | None = None
) -> list[dict[str, Any]]:
    """Warnings about how the best trials converged.

    Best epoch 1 (of more than one trained): the validation metric was never better than after
    the first epoch, which usually means a learning rate so high the model jumps around its
    optimum. Best epoch == epochs trained == the epoch budget: the metric still improved at the
    very end, so more epochs would likely help.
    """
    out = []
    for t in top:
        if t.best_step is None or t.epochs_trained is None:
            continue
        base = {
            "number": t.number,
            "rank": (rank_of or {}).get(t.number),
            "best_step": t.best_step,
            "epochs_trained": t.epochs_trained,
        }
        if t.best_step == 1 and t.epochs_trained > 1:
            out.append({**base, "kind": "premature", "message": PREMATURE})
        elif (
            t.state == "complete"
            and budget is not None
            and budget > 1
            and t.epochs_trained >= budget
            and t.best_step == t.epochs_trained
        ):
            out.append({**base, "kind": "under_trained", "message": UNDERTRAINED})
    return out


def failure_groups(trials: Sequence[TrialFacts]) -> list[dict[str, Any]]:
    """Failed trials grouped by ``failure_class`` (most frequent first), with example reasons."""
    groups: dict[str, list[TrialFacts]] = {}
    for t in trials:
        if t.state == "failed":
            groups.setdefault(t.failure_class or "unknown", []).append(t)
    out = []
    for cls, ts in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        reasons = Counter(t.failure_reason for t in ts if t.failure_reason)
        out.append(
            {
                "failure_class": cls,
                "count": len(ts),
                "trials": [t.number for t in ts],
                "reasons": [{"reason": r, "count": n} for r, n in reasons.most_common(MAX_REASONS)],
            }
        )
    return out


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


def default_trial(trials: Sequence[TrialFacts]) -> TrialFacts | None:
    """The trial enqueued with the model family's default configuration (the first one)."""
    marked = [t for t in trials if t.enqueued == DEFAULT_MARK]
    return min(marked, key=lambda t: t.number) if marked else None


def compare_default(
    default: TrialFacts | None, best: TrialFacts | None, metric: str, direction: str
) -> dict[str, Any] | None:
    """The default configuration's result against the best trial's, with a sentence.

    None when either is missing or the default has no finite value (pruned, failed, running).
    """
    if default is None or best is None or not default.has_finite_value:
        return None
    a, b = default.value, best.value
    if a is None or b is None:
        return None
    label = metric_label(metric)
    c, d = default.test_metrics.get(metric), best.test_metrics.get(metric)
    has_test = c is not None and d is not None
    if default.number == best.number:
        sentence = (
            f"the default configuration (trial {default.number}) is the best trial: "
            f"validation {label} {_fmt(a)}"
            + (f", test {_fmt(c)}" if has_test else "")
            + "; tuning did not improve on it"
        )
        improved = False
    else:
        improved = _sign(direction) * b < _sign(direction) * a
        if improved:
            verb = "cut" if direction == "minimize" else "raised"
            sentence = f"tuning {verb} validation {label} from {_fmt(a)} to {_fmt(b)}"
        else:
            sentence = (
                f"tuning did not beat the default configuration: validation {label} "
                f"{_fmt(a)} (default) against {_fmt(b)} (best feasible)"
            )
        if has_test:
            sentence += f", test from {_fmt(c)} to {_fmt(d)}"
        sentence += f" (default: trial {default.number}; best: trial {best.number})"
    rel = (b - a) / abs(a) if a != 0 and math.isfinite(a) and math.isfinite(b) else None
    return {
        "metric": metric,
        "default_trial": default.number,
        "best_trial": best.number,
        "valid_default": a,
        "valid_best": b,
        "valid_relative_change": rel,
        "test_default": c,
        "test_best": d,
        "improved": improved,
        "sentence": sentence,
    }


@dataclass(frozen=True)
class Importance:
    """Parameter importances (most important first), or why there are none."""

    evaluator: str | None
    values: dict[str, float]
    reason: str | None
    notes: tuple[str, ...] = ()


def param_importances(study: optuna.Study, n_complete: int) -> Importance:
    """Sensitivity of the first objective to each parameter.

    fANOVA first (needs scikit-learn; fails on some conditional spaces), PED-ANOVA when that
    fails; both failing gives the reasons instead of an exception, since a report without
    importances is still a report.
    """
    if n_complete < 2:
        return Importance(
            None, {}, f"needs at least 2 complete trials with finite values (have {n_complete})"
        )
    directions = study.directions
    multi = len(directions) > 1
    # PED-ANOVA takes a target as "lower is better"; fANOVA does not care about the sign.
    sign = -1.0 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    target: Callable[[FrozenTrial], float] | None = (
        (lambda t: sign * float(t.values[0])) if multi else None
    )
    attempts: list[tuple[str, Callable[[], optuna.importance.BaseImportanceEvaluator]]] = [
        ("fanova", lambda: optuna.importance.FanovaImportanceEvaluator(seed=0)),
        ("ped_anova", optuna.importance.PedAnovaImportanceEvaluator),
    ]
    errors = []
    for name, make in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = optuna.importance.get_param_importances(
                    study, evaluator=make(), target=target
                )
        except ImportError as err:  # fANOVA's random forest needs scikit-learn
            errors.append(f"{name}: unavailable ({_first_line(str(err.__cause__ or err))})")
            continue
        except Exception as err:  # evaluators raise anything from ValueError to RuntimeError
            errors.append(f"{name}: {type(err).__name__}: {_first_line(str(err))}")
            continue
        clean = {k: float(v) for k, v in result.items() if math.isfinite(float(v))}
        if not clean:
            errors.append(f"{name}: no parameter is shared by the complete trials")
            continue
        ordered = dict(sorted(clean.items(), key=lambda kv: (-kv[1], kv[0])))
        return Importance(name, ordered, None, tuple(errors))
    return Importance(None, {}, "; ".join(errors), tuple(errors))


# ---- formatting ------------------------------------------------------------------------------

_EVALUATOR_NAMES = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _fmt(x: object) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        if math.isfinite(x) and x.is_integer() and 1e4 <= abs(x) < 1e15:
            return f"{x:.0f}"  # parameter counts, seconds: not 2e+04
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()))


def _metrics_text(m: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(m.items())) or "—"


def _distribution_text(d: BaseDistribution) -> str:
    if isinstance(d, CategoricalDistribution):
        return "one of " + ", ".join(_fmt(c) for c in d.choices)
    if isinstance(d, FloatDistribution | IntDistribution):
        kind = "int" if isinstance(d, IntDistribution) else "float"
        extra = " (log)" if d.log else (f" step {_fmt(d.step)}" if d.step not in (None, 1) else "")
        return f"{kind} {_fmt(d.low)} .. {_fmt(d.high)}{extra}"
    return type(d).__name__


def _jsonable(x: Any) -> Any:
    """Strict-JSON form: non-finite floats become null, tuples lists, keys strings."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool | str) or x is None:
        return x
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dt.datetime):
        return x.isoformat()
    if isinstance(x, Path):
        return str(x)
    return str(x)


def _trial_json(t: TrialFacts, directions: Sequence[str]) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state,
        "value": t.value if len(directions) == 1 else None,
        "values": list(t.values) if t.values else None,
        "feasible": t.feasible,
        "params": t.params,
        "valid_metrics": t.valid_metrics,
        "test_metrics": t.test_metrics,
        "epochs_trained": t.epochs_trained,
        "best_step": t.best_step,
        "seconds": t.train_seconds,
        "n_parameters": t.n_parameters,
        "enqueued": t.enqueued,
        "trainer_id": t.trainer_id,
        "failure_class": t.failure_class,
        "failure_reason": t.failure_reason,
        "started": t.started,
        "ended": t.ended,
    }


# ---- plots -----------------------------------------------------------------------------------


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


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png")
    fig.clear()


def plot_history(
    trials: Sequence[TrialFacts], direction: str, ylabel: str, path: Path
) -> str | None:
    """Objective per trial number with the best-so-far line; the reason when there is no data."""
    pts = sorted(
        (t.number, t.value)
        for t in trials
        if t.state == "complete" and t.value is not None and math.isfinite(t.value)
    )
    if not pts:
        return "no complete trial with a finite value"
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
    _save(fig, path)
    return None


def plot_intermediate(trials: Sequence[TrialFacts], ylabel: str, path: Path) -> str | None:
    """Objective per epoch for every trial, coloured by state."""
    curves = []
    for t in trials:
        pts = sorted((s, v) for s, v in t.intermediate.items() if math.isfinite(v))
        if pts:
            curves.append((t, pts))
    if not curves:
        return "no trial reported intermediate values"
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
    _save(fig, path)
    return None


def plot_importance(importance: Importance, path: Path) -> str | None:
    """Horizontal bars, most important parameter on top."""
    if not importance.values:
        return importance.reason or "no importances"
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
    name = _EVALUATOR_NAMES.get(str(importance.evaluator), str(importance.evaluator))
    ax.set_title(f"Parameter importance ({name})")
    _save(fig, path)
    return None


def _axis_values(
    name: str, trials: Sequence[TrialFacts]
) -> tuple[list[float], list[tuple[float, str]]]:
    """Values of a parameter normalised to [0, 1] (NaN where absent) and tick labels."""
    dist = next((t.distributions[name] for t in trials if name in t.distributions), None)
    raw = [t.params.get(name) for t in trials]
    if isinstance(dist, CategoricalDistribution) or any(
        v is not None and not isinstance(_number(v), float) for v in raw
    ):
        choices: list[Any] = list(dist.choices) if isinstance(dist, CategoricalDistribution) else []
        for v in raw:
            if v is not None and v not in choices:
                choices.append(v)
        n = len(choices)
        pos = {i: (i / (n - 1) if n > 1 else 0.5) for i in range(n)}
        vals = [pos[choices.index(v)] if v is not None else math.nan for v in raw]
        return vals, [(pos[i], _fmt(c)) for i, c in enumerate(choices)]
    nums = [_number(v) for v in raw]
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
    ticks = [(0.0, _fmt(lo)), (1.0, _fmt(hi))] if span > 0 else [(0.5, _fmt(lo))]
    return vals, ticks


def plot_parallel(
    trials: Sequence[TrialFacts],
    param_order: Sequence[str],
    direction: str,
    label: str,
    path: Path,
) -> str | None:
    """One line per complete trial over normalised parameter axes, coloured by objective.

    Categorical parameters sit at evenly spaced positions; log-scaled ones on a log axis;
    a parameter a trial does not have (conditional spaces) leaves a gap in its line.
    """
    done = [t for t in trials if t.state == "complete" and t.has_finite_value]
    if not done:
        return "no complete trial with a finite value"
    names = [p for p in param_order if any(p in t.params for t in done)]
    names += sorted({p for t in done for p in t.params} - set(names))
    names = names[:MAX_PARALLEL_PARAMS]
    if not names:
        return "the trials have no parameters"
    # Best trials drawn last (on top).
    sign = _sign(direction)
    done.sort(key=lambda t: -sign * (t.value or 0.0))
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
    for x, (_, ticks) in enumerate(axes_vals):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, text in ticks:
            ax.text(x + 0.03, y, text, fontsize=7, va="center")
    ax.axvline(len(names), color="black", linewidth=0.8)
    ax.text(len(names) + 0.03, 0.0, _fmt(lo), fontsize=7, va="center")
    ax.text(len(names) + 0.03, 1.0, _fmt(hi), fontsize=7, va="center")
    ax.set_xticks(xs, [*names, label], rotation=30, ha="right")
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(names) + 0.5)
    ax.set_title("Parallel coordinates of the complete trials")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label)
    _save(fig, path)
    return None


def prediction_arrays(
    predictions: Mapping[str, Sequence[float]],
) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` and ``y_pred`` as float arrays; InvalidArgument when they do not fit."""
    missing = [k for k in ("y_true", "y_pred") if k not in predictions]
    if missing:
        raise InvalidArgument(
            f"predictions: missing {', '.join(missing)}; give y_true and y_pred "
            f"(have: {', '.join(sorted(predictions)) or 'nothing'})"
        )
    try:
        y_true = np.asarray(predictions["y_true"], dtype=float).ravel()
        y_pred = np.asarray(predictions["y_pred"], dtype=float).ravel()
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"predictions: y_true and y_pred must be numbers ({err})") from err
    if y_true.shape != y_pred.shape:
        raise InvalidArgument(
            f"predictions: y_true has {y_true.size} values but y_pred has {y_pred.size}; "
            "give one prediction per molecule"
        )
    return y_true, y_pred


def prediction_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | int | None]:
    """RMSE, MAE and R2 over the pairs where both values are finite."""
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok], y_pred[ok]
    n = int(ok.sum())
    if n == 0:
        return {"n": 0, "n_dropped": int(y_true.size), "rmse": None, "mae": None, "r2": None}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return {
        "n": n,
        "n_dropped": int(y_true.size - n),
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else None,
    }


def plot_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, metrics: Mapping[str, Any], path: Path
) -> str | None:
    """Predicted against true values with the identity line; RMSE in the title."""
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    if not ok.any():
        return "no finite prediction"
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
    ax.set_title(f"Predicted vs true (RMSE {_fmt(metrics['rmse'])}, n={metrics['n']})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    _save(fig, path)
    return None


# ---- the report ------------------------------------------------------------------------------


def build_report(
    study: optuna.Study,
    out_dir: Path,
    *,
    predictions: Mapping[str, Sequence[float]] | None = None,
) -> Report:
    """Write ``report.md``, ``report.json``, ``best_params.json`` and PNG plots into ``out_dir``.

    ``predictions`` (keys ``y_true`` and ``y_pred``, e.g. the best model on the test set) adds
    ``predicted_vs_true.png``; malformed predictions raise InvalidArgument before anything is
    written. Plots without data are skipped and listed in ``summary["plots_skipped"]``.
    """
    pred_arrays = prediction_arrays(predictions) if predictions is not None else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    directions = [d.name.lower() for d in study.directions]
    multi = len(directions) > 1
    # Study.system_attrs is gone from Optuna's public API; the storage still answers.
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    setup = study_setup(system_attrs, study.user_attrs, directions)
    objectives = setup["objectives"]
    metric = str(objectives[0]["metric"])
    label = objective_label(metric)
    trials = [trial_facts(t, directions[0]) for t in study.get_trials(deepcopy=False)]

    counts = Counter(t.state for t in trials)
    count_json = {
        s: counts.get(s, 0) for s in ("complete", "pruned", "failed", "running", "waiting")
    }
    count_json["total"] = len(trials)
    epochs_total = sum(t.epochs_trained or 0 for t in trials)
    # None, not 0, when no trial recorded its training time (studies molhpo did not make)
    recorded = [t.seconds for t in trials if t.seconds is not None]
    trainer_seconds = sum(recorded) if recorded else None
    starts = [t.started for t in trials if t.started is not None]
    ends = [t.ended for t in trials if t.ended is not None]
    first_start = min(starts) if starts else None
    last_end = max(ends) if ends else None
    wall = (
        (last_end - first_start).total_seconds()
        if first_start is not None and last_end is not None
        else None
    )

    ranking = rank_pareto(trials, directions) if multi else rank_single(trials, directions[0])
    rank_of = {t.number: i + 1 for i, t in enumerate(ranking)}
    best = None if multi else best_trial(ranking)
    default = default_trial(trials)
    comparison = None if multi else compare_default(default, best, metric, directions[0])
    budget = epoch_budget(setup["max_epochs"], trials)
    warnings_ = convergence_warnings(ranking[:TOP_TRIALS_CHECKED], budget, rank_of)
    failures = failure_groups(trials)
    n_finite = sum(1 for t in trials if t.state == "complete" and t.has_finite_value)
    importance = param_importances(study, n_finite)

    # best_params.json
    best_params_path: Path | None = out_dir / BEST_PARAMS_FILE
    best_params: Any
    if multi:
        best_params = {
            "pareto_front": [
                {"number": t.number, "values": list(t.values or ()), "params": t.params}
                for t in ranking
            ]
        }
    else:
        best_params = dict(best.params) if best is not None else None
    if best_params is None or (multi and not ranking):
        best_params_path = None
        stale = out_dir / BEST_PARAMS_FILE
        stale.unlink(missing_ok=True)
    else:
        _write_json(out_dir / BEST_PARAMS_FILE, best_params)

    # plots
    plots: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    pred_metrics = prediction_metrics(*pred_arrays) if pred_arrays is not None else None

    def draw(name: str, fn: Callable[[Path], str | None]) -> None:
        path = out_dir / PLOT_FILES[name]
        path.unlink(missing_ok=True)  # no stale plot from an earlier report
        try:
            reason = fn(path)
        except Exception as err:  # one broken plot must not cost the whole report
            reason = f"plot failed: {type(err).__name__}: {err}"
            path.unlink(missing_ok=True)
        if reason is None:
            plots[name] = path
        else:
            skipped[name] = reason

    draw("history", lambda p: plot_history(trials, directions[0], label, p))
    draw("intermediate", lambda p: plot_intermediate(trials, label, p))
    draw("importance", lambda p: plot_importance(importance, p))
    draw(
        "parallel_coordinates",
        lambda p: plot_parallel(trials, list(importance.values), directions[0], label, p),
    )
    if pred_arrays is not None and pred_metrics is not None:
        y_true, y_pred = pred_arrays
        draw("predicted_vs_true", lambda p: plot_predictions(y_true, y_pred, pred_metrics, p))
    else:
        (out_dir / PLOT_FILES["predicted_vs_true"]).unlink(missing_ok=True)
        skipped["predicted_vs_true"] = "no predictions given"

    space: dict[str, str] = {}
    for t in trials:
        for name, d in t.distributions.items():
            space.setdefault(name, _distribution_text(d))

    summary: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "study": study.study_name,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "multi_objective": multi,
        "directions": directions,
        "objectives": objectives,
        "setup": setup,
        "search_space": dict(sorted(space.items())),
        "counts": count_json,
        "epochs_trained": epochs_total,
        "trainer_seconds": trainer_seconds,
        "wall_seconds": wall,
        "first_trial_start": first_start,
        "last_trial_end": last_end,
        "epoch_budget": budget,
        "ranking_kind": "pareto_front" if multi else "objective",
        "ranking": [{"rank": rank_of[t.number], **_trial_json(t, directions)} for t in ranking],
        "best": _trial_json(best, directions) if best is not None else None,
        "best_params": best_params,
        "default": _trial_json(default, directions) if default is not None else None,
        "default_on_pareto_front": (
            default.number in rank_of if multi and default is not None else None
        ),
        "default_vs_best": comparison,
        "importance": {
            "evaluator": importance.evaluator,
            "target": metric,
            "values": importance.values,
            "reason": importance.reason,
            "notes": list(importance.notes),
        },
        "convergence_warnings": warnings_,
        "failures": failures,
        "predictions": pred_metrics,
        "plots": {k: p.name for k, p in plots.items()},
        "plots_skipped": skipped,
        "files": {
            "markdown": MARKDOWN_FILE,
            "json": JSON_FILE,
            "best_params": best_params_path.name if best_params_path else None,
        },
        "trials": [_trial_json(t, directions) for t in trials],
    }
    summary = _jsonable(summary)

    md_path = out_dir / MARKDOWN_FILE
    md_path.write_text(render_markdown(summary), encoding="utf-8")
    json_path = out_dir / JSON_FILE
    _write_json(json_path, summary)
    return Report(
        markdown=md_path,
        json=json_path,
        plots=plots,
        summary=summary,
        best_params=best_params_path,
    )


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(
        json.dumps(_jsonable(obj), indent=2, allow_nan=False, sort_keys=False) + "\n",
        encoding="utf-8",
    )


def render_markdown(s: Mapping[str, Any]) -> str:
    """The Markdown report for a summary as :func:`build_report` makes it (JSON-ready)."""
    setup = s["setup"]
    objectives = s["objectives"]
    multi = s["multi_objective"]
    metrics = [str(o["metric"]) for o in objectives]
    labels = [metric_label(m) for m in metrics]
    lines: list[str] = [f"# Study report: {s['study']}", ""]
    if setup.get("description"):
        lines += [str(setup["description"]), ""]
    lines += [f"Generated {s['generated_at']}.", ""]

    # what was tuned
    lines += ["## What was tuned", "", "| | |", "|---|---|"]
    dataset = setup.get("dataset")
    if dataset and setup.get("target"):
        dataset = f"{dataset} (target {setup['target']})"
    if dataset and setup.get("split"):
        dataset = f"{dataset}, {setup['split']} split"
    ds = setup.get("dataset_summary")
    if dataset and isinstance(ds, dict) and ds.get("n_molecules"):
        dataset = f"{dataset}, {ds['n_molecules']} molecules"
        dropped = {k: v for k, v in (ds.get("invalid_counts") or {}).items() if v}
        if dropped:
            words = {
                "unparsable_smiles": "unparsable SMILES",
                "missing_target": "missing target",
                "non_numeric_target": "non-numeric target",
            }
            dataset += (
                " (rows dropped: "
                + ", ".join(f"{n} {words.get(k, k)}" for k, n in dropped.items())
                + ")"
            )
    objective_text = "; ".join(
        f"{o['direction']} {objective_label(str(o['metric']))}" for o in objectives
    )
    rows = [
        ("model", setup.get("model")),
        ("data set", dataset),
        ("objective" if not multi else "objectives", objective_text),
        ("sampler", setup.get("sampler")),
        ("pruner", setup.get("pruner")),
    ]
    if setup.get("constraints"):
        rows.append(
            (
                "constraints",
                "; ".join(f"{c['metric']} <= {_fmt(c['max'])}" for c in setup["constraints"]),
            )
        )
    budget_bits = []
    if setup.get("n_trials"):
        budget_bits.append(f"{setup['n_trials']} trials")
    if s.get("epoch_budget"):
        budget_bits.append(f"up to {s['epoch_budget']} epochs per trial")
    if setup.get("timeout_seconds"):
        budget_bits.append(f"timeout {_duration(setup['timeout_seconds'])}")
    rows.append(("budget", ", ".join(budget_bits) or None))
    space = s.get("search_space") or {}
    if space:
        rows.append(("search space", "; ".join(f"{k}: {v}" for k, v in space.items())))
    for key, value in rows:
        lines.append(f"| {key} | {_cell(_fmt(value) if value else 'not recorded')} |")
    if setup.get("request_error"):
        lines += ["", f"Note: {setup['request_error']}"]
    lines.append("")

    # counts and effort
    c = s["counts"]
    lines += [
        "## Trials",
        "",
        f"- {c['total']} trials: {c['complete']} complete, {c['pruned']} pruned, "
        f"{c['failed']} failed, {c['running']} running"
        + (f", {c['waiting']} waiting" if c.get("waiting") else ""),
        f"- {s['epochs_trained']} epochs trained in total; "
        + (
            f"{_fmt(s['trainer_seconds'])} trainer-seconds ({_duration(s['trainer_seconds'])})"
            if s["trainer_seconds"] is not None
            else "trainer-seconds not recorded"
        ),
        f"- wall time {_duration(s['wall_seconds'])}"
        + (
            f" (first trial started {s['first_trial_start']}, last ended {s['last_trial_end']})"
            if s.get("first_trial_start") and s.get("last_trial_end")
            else ""
        ),
        "",
    ]

    ranking = s["ranking"]
    if not ranking:
        lines += [
            "## Result",
            "",
            "**No trial completed**, so there is no ranking, no best configuration and no "
            "parameter importance yet.",
            "",
        ]
    else:
        # best / Pareto front
        if multi:
            lines += [
                "## Pareto front",
                "",
                f"{len(ranking)} trials are Pareto-optimal over "
                + ", ".join(
                    f"{lab} ({o['direction']})" for lab, o in zip(labels, objectives, strict=True)
                )
                + "; no single trial is best.",
                "",
            ]
            if s.get("default") is not None:
                d = s["default"]
                on = s.get("default_on_pareto_front")
                vals = ", ".join(_fmt(v) for v in d.get("values") or []) or d["state"]
                lines += [
                    f"Default configuration (trial {d['number']}): {vals}; "
                    + ("on the Pareto front." if on else "not on the Pareto front."),
                    "",
                ]
        else:
            b = s["best"]
            lines += ["## Result", ""]
            if b is not None:
                test = b["test_metrics"].get(objectives[0]["metric"])
                lines.append(
                    f"Best trial: **{b['number']}**, {objective_label(metrics[0])} "
                    f"**{_fmt(b['value'])}**"
                    + (f", test {labels[0]} {_fmt(test)}" if test is not None else "")
                    + "."
                )
            else:
                lines.append("No feasible complete trial: there is no best configuration.")
            cmp_ = s.get("default_vs_best")
            if cmp_ is not None:
                text = str(cmp_["sentence"])
                lines += ["", text[0].upper() + text[1:] + "."]
            elif s.get("default") is not None:
                d = s["default"]
                lines += [
                    "",
                    f"The default configuration (trial {d['number']}) did not complete "
                    f"({d['state']}), so there is nothing to compare the best trial with.",
                ]
            lines.append("")

        # ranking table
        title = "Ranking (Pareto front)" if multi else "Ranking"
        value_heads = [f"{lab} (valid)" if lab.isupper() else lab for lab in labels]
        extra_n = "n_parameters" not in metrics
        heads = ["rank", "trial", *value_heads, "test", "epochs", "time"]
        heads += ["n_parameters"] if extra_n else []
        lines += [
            f"## {title}",
            "",
            "| " + " | ".join([*heads, "params"]) + " |",
            "|" + "---|" * (len(heads) + 1),
        ]
        for r in ranking[:MAX_TABLE_ROWS]:
            vals = r.get("values") or []
            mark = "" if r["feasible"] else " (infeasible)"
            tag = " (default)" if r.get("enqueued") == DEFAULT_MARK else ""
            epochs = _fmt(r["epochs_trained"])
            if r.get("best_step") is not None and r.get("epochs_trained") is not None:
                epochs = f"{r['best_step']} of {r['epochs_trained']}"
            cells = [
                str(r["rank"]),
                f"{r['number']}{tag}{mark}",
                *[_fmt(v) for v in vals],
                _metrics_text(r["test_metrics"]),
                epochs,
                _duration(r["seconds"]),
                *([_fmt(r["n_parameters"])] if extra_n else []),
                _params_text(r["params"]),
            ]
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
        if len(ranking) > MAX_TABLE_ROWS:
            lines.append(f"\n{len(ranking) - MAX_TABLE_ROWS} more in {JSON_FILE}.")
        lines += ["", "Epochs: best epoch of epochs trained; time: training time per trial.", ""]

        # best params
        lines += ["## Best parameters", ""]
        if s.get("best_params") is not None:
            lines += [
                f"Also in `{BEST_PARAMS_FILE}`"
                + (" (parameters of every Pareto-optimal trial)." if multi else "."),
                "",
                "```json",
                json.dumps(s["best_params"], indent=2),
                "```",
                "",
            ]
        else:
            lines += ["None (no feasible complete trial).", ""]

    # importance
    imp = s["importance"]
    lines += ["## Parameter importance", ""]
    if imp["values"]:
        evaluator = _EVALUATOR_NAMES.get(imp["evaluator"], str(imp["evaluator"]))
        lines += [
            f"Sensitivity of {objective_label(metrics[0])} to each parameter ({evaluator}, "
            "normalised to sum to 1; most important first):",
            "",
            "| rank | parameter | importance |",
            "|---|---|---|",
        ]
        for i, (name, v) in enumerate(imp["values"].items(), 1):
            lines.append(f"| {i} | {_cell(name)} | {v:.3f} |")
        if imp.get("notes"):
            lines += ["", "Evaluators that did not work: " + _cell("; ".join(imp["notes"]))]
    else:
        lines.append(f"Not available: {imp['reason']}.")
    lines.append("")

    # convergence warnings
    lines += ["## Convergence warnings", ""]
    if s["convergence_warnings"]:
        for w in s["convergence_warnings"]:
            where = f" (rank {w['rank']})" if w.get("rank") else ""
            lines.append(
                f"- trial {w['number']}{where}: {w['message']} "
                f"(best epoch {w['best_step']} of {w['epochs_trained']})"
            )
    elif ranking:
        lines.append(f"None for the top {min(len(ranking), TOP_TRIALS_CHECKED)} trials.")
    else:
        lines.append("None (no complete trial to check).")
    lines.append("")

    # failures
    lines += ["## Failed trials", ""]
    if s["failures"]:
        lines += ["| failure class | count | trials | reasons |", "|---|---|---|---|"]
        for g in s["failures"]:
            reasons = "; ".join(
                f"{r['reason']}" + (f" (x{r['count']})" if r["count"] > 1 else "")
                for r in g["reasons"]
            )
            lines.append(
                f"| {_cell(g['failure_class'])} | {g['count']} | "
                f"{', '.join(map(str, g['trials']))} | {_cell(reasons or '—')} |"
            )
    else:
        lines.append("None.")
    lines.append("")

    # predictions
    if s.get("predictions"):
        p = s["predictions"]
        lines += [
            "## Predictions",
            "",
            f"{p['n']} predictions: RMSE {_fmt(p['rmse'])}, MAE {_fmt(p['mae'])}, "
            f"R2 {_fmt(p['r2'])}"
            + (f" ({p['n_dropped']} non-finite pairs left out)" if p["n_dropped"] else "")
            + ".",
            "",
        ]

    # plots
    lines += ["## Plots", ""]
    for name, file in s["plots"].items():
        lines += [f"![{name}]({file})", ""]
    if s["plots_skipped"]:
        lines.append("Skipped:")
        lines.append("")
        for name, reason in s["plots_skipped"].items():
            lines.append(f"- {PLOT_FILES.get(name, name)}: {_cell(str(reason))}")
        lines.append("")
    return "\n".join(lines)
