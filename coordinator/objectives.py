"""Objective values, constraints and Pareto fronts of finished trials: pure functions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import optuna

from coordinator.spec import ConstraintSpec, ObjectiveSpec
from molhpo.contract import attrs
from molhpo.contract.enums import Direction


def trial_metric(metric: str, user_attrs: Mapping[str, object]) -> float | None:
    """A trial's value of a metric: a validation metric, n_parameters or train_seconds."""
    if metric == "n_parameters":
        raw = user_attrs.get(attrs.TRIAL_N_PARAMETERS)
    elif metric == "train_seconds":
        raw = user_attrs.get(attrs.TRIAL_SECONDS)
    else:
        valid = user_attrs.get(attrs.TRIAL_VALID)
        raw = valid.get(metric) if isinstance(valid, Mapping) else None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    return None


def objective_values(
    objectives: Sequence[ObjectiveSpec], user_attrs: Mapping[str, object]
) -> list[float] | None:
    """The trial's value of every objective, or None when one is missing."""
    values = [trial_metric(o.metric, user_attrs) for o in objectives]
    if any(v is None for v in values):
        return None
    return [float(v) for v in values if v is not None]


def violations(
    constraints: Sequence[ConstraintSpec], user_attrs: Mapping[str, object]
) -> list[float]:
    """``metric - max`` for every constraint (Optuna's convention: <= 0 is feasible); a
    missing or non-finite metric counts as infinitely violated."""
    out = []
    for c in constraints:
        v = trial_metric(c.metric, user_attrs)
        out.append(v - c.max if v is not None and math.isfinite(v) else math.inf)
    return out


def constraints_func(
    constraints: Sequence[ConstraintSpec],
) -> Callable[[optuna.trial.FrozenTrial], Sequence[float]] | None:
    """The ``constraints_func`` Optuna's samplers call after each trial (None: unconstrained)."""
    if not constraints:
        return None
    frozen = tuple(constraints)

    def func(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
        return violations(frozen, trial.user_attrs)

    return func


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        sign = -1.0 if d == Direction.MAXIMIZE else 1.0
        if sign * x > sign * y:
            return False
        if sign * x < sign * y:
            better = True
    return better


def pareto_front(
    points: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str]
) -> list[int]:
    """Ids of the points no other point dominates, in input order."""
    return [
        i for i, p in points if not any(dominates(q, p, directions) for j, q in points if j != i)
    ]
