"""What the study store says about a study: its setup, its trials, their effort and ranking.

Everything here is read from an :class:`optuna.Study` (the trials, their user attributes, the
request the coordinator kept with the study), so it works for any study in the store, long
after the coordinator that ran it is gone, and for studies molhpo did not make: every molhpo
attribute is optional. The ranking functions are pure, over :class:`TrialFacts`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from coordinator.objectives import pareto_front
from coordinator.reporting.text import distribution_text
from molhpo.contract import attrs

DEFAULT_MARK = "default"
"""The ``enqueued`` mark of the trial holding the model family's default configuration."""

STATES = ("complete", "pruned", "failed", "running", "waiting")
"""Trial states as a report names them, in the order it counts them."""

_STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


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


def number(raw: object) -> float | None:
    """``raw`` as a float when it is a number (not a bool), else None."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    return None


def _int(raw: object) -> int | None:
    v = number(raw)
    return int(v) if v is not None and math.isfinite(v) else None


def _metrics(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for k, v in raw.items():
        f = number(v)
        if f is not None:
            out[str(k)] = f
    return out


def _text(raw: object) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def sign(direction: str) -> float:
    """-1 for maximize, 1 for minimize: ``sign * value`` is smaller for better values."""
    return -1.0 if direction == "maximize" else 1.0


def _best_step_of(intermediate: Mapping[int, float], direction: str) -> int | None:
    """The step of the best finite intermediate value (earliest on ties)."""
    finite = [(s, v) for s, v in sorted(intermediate.items()) if math.isfinite(v)]
    if not finite:
        return None
    return min(finite, key=lambda sv: (sign(direction) * sv[1], sv[0]))[0]


def _is_feasible(t: FrozenTrial) -> bool:
    if t.user_attrs.get(attrs.TRIAL_FEASIBLE) is False:
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
        valid_metrics=_metrics(ua.get(attrs.TRIAL_VALID)),
        test_metrics=_metrics(ua.get("test_metrics")),
        epochs_trained=epochs,
        best_step=best_step,
        seconds=number(ua.get(attrs.TRIAL_SECONDS)),
        n_parameters=_int(ua.get(attrs.TRIAL_N_PARAMETERS)),
        feasible=_is_feasible(t),
        enqueued=_text(ua.get("enqueued")),
        failure_class=_text(ua.get(attrs.TRIAL_FAILURE_CLASS)),
        failure_reason=_text(ua.get(attrs.TRIAL_FAILURE_REASON)),
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


def _stored_request(raw: object) -> tuple[dict[str, Any], str | None]:
    """The request the coordinator stored (a JSON object), and why it could not be read."""
    if isinstance(raw, dict):
        return raw, None
    if not isinstance(raw, str):
        return {}, None
    try:
        parsed = json.loads(raw)
    except ValueError as err:
        return {}, f"{attrs.STUDY_REQUEST} is not valid JSON: {err}"
    if not isinstance(parsed, dict):
        return {}, f"{attrs.STUDY_REQUEST} is not a JSON object"
    return parsed, None


def _section(req: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = req.get(key)
    return v if isinstance(v, dict) else {}


def _objectives(
    req: Mapping[str, Any], user_attrs: Mapping[str, Any], directions: Sequence[str]
) -> list[dict[str, Any]]:
    """Each objective's metric and direction; the request's, else the study's own."""
    objs_raw = req.get("objectives")
    objs = [o for o in objs_raw if isinstance(o, dict)] if isinstance(objs_raw, list) else []
    if not objs and req:
        objs = [_section(req, "objective")]
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
    return objectives


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
    req, request_error = _stored_request(system_attrs.get(attrs.STUDY_REQUEST))
    dataset = _section(req, "dataset")
    budget = _section(req, "budget")
    sampler = _section(req, "sampler")
    pruner = _section(req, "pruner")
    constraints = [
        {"metric": c.get("metric"), "max": c.get("max", 0.0)}
        for c in req.get("constraints", [])
        if isinstance(c, dict)
    ]
    summary = system_attrs.get(attrs.STUDY_DATASET)
    return {
        "name": req.get("name"),
        "description": req.get("description") or None,
        "model": req.get("model") or _text(user_attrs.get("model")),
        "dataset": dataset.get("name") or dataset.get("path") or _text(user_attrs.get("dataset")),
        "split": dataset.get("split") or ("random" if req else None),
        "target": dataset.get("target") or None,
        "sampler": sampler.get("name") or ("tpe" if req else None),
        "sampler_options": sampler.get("options") or {},
        "pruner": (
            "none (multi-objective)"
            if len(directions) > 1
            else pruner.get("name") or ("hyperband" if req else None)
        ),
        "pruner_options": pruner.get("options") or {},
        "objectives": _objectives(req, user_attrs, directions),
        "constraints": constraints,
        "n_trials": _int(budget.get("n_trials")),
        "max_epochs": _int(budget.get("max_epochs")),
        "timeout_seconds": number(budget.get("timeout_seconds")),
        "fixed_params": _section(req, "fixed_params"),
        "dataset_summary": summary if isinstance(summary, dict) else None,
        "request_error": request_error,
    }


def search_space(trials: Sequence[TrialFacts]) -> dict[str, str]:
    """Every parameter any trial sampled, in words, sorted by name (the first trial's range)."""
    space: dict[str, str] = {}
    for t in trials:
        for name, d in t.distributions.items():
            space.setdefault(name, distribution_text(d))
    return dict(sorted(space.items()))


# ---- effort ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effort:
    """How many trials ended how, and what they cost."""

    counts: dict[str, int]
    """Trials per state (:data:`STATES`) and ``total``."""
    epochs_trained: int
    trainer_seconds: float | None
    """None, not 0, when no trial recorded its training time (studies molhpo did not make)."""
    first_start: dt.datetime | None
    last_end: dt.datetime | None

    @property
    def wall_seconds(self) -> float | None:
        """From the first trial's start to the last trial's end."""
        if self.first_start is None or self.last_end is None:
            return None
        return (self.last_end - self.first_start).total_seconds()


def study_effort(trials: Sequence[TrialFacts]) -> Effort:
    """The trials counted by state, their epochs, training seconds and time span."""
    by_state = Counter(t.state for t in trials)
    counts = {s: by_state.get(s, 0) for s in STATES}
    counts["total"] = len(trials)
    recorded = [t.seconds for t in trials if t.seconds is not None]
    starts = [t.started for t in trials if t.started is not None]
    ends = [t.ended for t in trials if t.ended is not None]
    return Effort(
        counts=counts,
        epochs_trained=sum(t.epochs_trained or 0 for t in trials),
        trainer_seconds=sum(recorded) if recorded else None,
        first_start=min(starts) if starts else None,
        last_end=max(ends) if ends else None,
    )


def epoch_budget(max_epochs: int | None, trials: Sequence[TrialFacts]) -> int | None:
    """Epochs a trial may train: the request's budget, else the most any trial trained."""
    if max_epochs:
        return max_epochs
    trained = [t.epochs_trained for t in trials if t.epochs_trained]
    return max(trained) if trained else None


# ---- ranking ---------------------------------------------------------------------------------


def rank_single(trials: Sequence[TrialFacts], direction: str) -> list[TrialFacts]:
    """Complete trials, best first: feasible before infeasible, non-finite values last, then by
    value in the study's direction, then by number (so ties keep Optuna's choice of best)."""
    complete = [t for t in trials if t.state == "complete" and t.values]
    s = sign(direction)
    return sorted(
        complete,
        key=lambda t: (
            not t.feasible,
            not t.has_finite_value,
            s * t.value if t.has_finite_value and t.value is not None else 0.0,
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
    s = sign(directions[0])
    return sorted((by_number[n] for n in front), key=lambda t: (s * (t.value or 0.0), t.number))


def best_trial(ranking: Sequence[TrialFacts]) -> TrialFacts | None:
    """The best single-objective trial: the first feasible one with a finite value."""
    for t in ranking:
        if t.feasible and t.has_finite_value:
            return t
    return None


def default_trial(trials: Sequence[TrialFacts]) -> TrialFacts | None:
    """The trial enqueued with the model family's default configuration (the first one)."""
    marked = [t for t in trials if t.enqueued == DEFAULT_MARK]
    return min(marked, key=lambda t: t.number) if marked else None
