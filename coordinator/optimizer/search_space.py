"""Sampling a study's search space on an Optuna trial (define-by-run).

Parameters are suggested in order; a conditional parameter is suggested only when its parent
took one of the listed values, so samplers see the same tree-shaped space a Python objective
would give them.
"""

from __future__ import annotations

import optuna

from coordinator.spec import CategoricalDist, FloatDist, IntDist, ParamSpec, Value


def suggest(trial: optuna.Trial, params: tuple[ParamSpec, ...]) -> dict[str, Value]:
    """Suggest every active parameter; returns name -> value for the active ones."""
    values: dict[str, Value] = {}
    for p in params:
        if p.condition is not None:
            parent_value = values.get(p.condition.parent)
            if parent_value is None or parent_value not in p.condition.values:
                continue
        d = p.distribution
        if isinstance(d, IntDist):
            values[p.name] = trial.suggest_int(p.name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, FloatDist):
            values[p.name] = trial.suggest_float(p.name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, CategoricalDist):
            choice = trial.suggest_categorical(p.name, list(d.choices))
            if choice is not None:
                values[p.name] = choice
    return values
