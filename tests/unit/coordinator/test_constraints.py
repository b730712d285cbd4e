"""Constraints reach the samplers that use them, as Optuna's ``constraints_func``."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest

from coordinator.objectives import constraints_func, violations
from coordinator.optimizer.samplers import SamplerContext, build_sampler
from coordinator.spec import ConstraintSpec, FloatDist, IntDist, ParamSpec
from molhpo.contract import attrs

CAP = 5_000
CONSTRAINTS = (ConstraintSpec("n_parameters", CAP), ConstraintSpec("r2", 0.5))
PARAMS = (
    ParamSpec("units", IntDist(16, 256, 16)),
    ParamSpec("lr", FloatDist(1e-4, 1e-2, log=True)),
)


def test_violations_are_metric_minus_max_and_missing_metrics_are_infeasible() -> None:
    user_attrs = {attrs.TRIAL_N_PARAMETERS: 7_000, attrs.TRIAL_VALID: {"r2": 0.25, "rmse": 1.0}}
    assert violations(CONSTRAINTS, user_attrs) == [2_000.0, -0.25]
    assert violations(CONSTRAINTS, {attrs.TRIAL_VALID: {"r2": math.nan}}) == [math.inf, math.inf]
    func = constraints_func(CONSTRAINTS)
    assert func is not None
    trial = optuna.trial.create_trial(value=1.0, user_attrs=user_attrs)
    assert list(func(trial)) == [2_000.0, -0.25]
    assert constraints_func(()) is None


def _n_parameters(units: int) -> int:
    return 200 * units + 1


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("tpe", {"n_startup_trials": 3}),
        ("gp", {"n_startup_trials": 3}),
        ("nsga2", {"population_size": 4}),
    ],
)
@pytest.mark.parametrize("seed_differs", [False, True])
def test_constraint_aware_samplers_call_the_studys_constraints(
    name: str, options: dict[str, object], seed_differs: bool
) -> None:
    calls: list[int] = []
    func = constraints_func(CONSTRAINTS)
    assert func is not None

    def counted(trial: optuna.trial.FrozenTrial) -> list[float]:
        calls.append(trial.number)
        return list(func(trial))

    # The coordinator passes the study seed in both places; a different seed must not drop
    # the constraints from the context.
    ctx = SamplerContext(seed=1 if seed_differs else 0, params=PARAMS, constraints_func=counted)
    sampler = build_sampler(name, options, 0, ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=sampler)
    for _ in range(7):
        trial = study.ask()
        units = trial.suggest_int("units", 16, 256, step=16)
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        # As the study runner: the trainer's result goes into user attrs before the tell.
        trial.set_user_attr(attrs.TRIAL_N_PARAMETERS, _n_parameters(units))
        trial.set_user_attr(attrs.TRIAL_VALID, {"r2": units / 256, "rmse": 2.0 - units / 256})
        study.tell(trial, 2.0 - units / 256)
    assert calls == list(range(7))
    for t in study.trials:
        expected = {
            "0": float(_n_parameters(t.params["units"]) - CAP),
            "1": t.params["units"] / 256 - 0.5,
        }
        # What Optuna stores for its own feasibility (and its best_trial) to read.
        assert t.constraints == pytest.approx(expected)
    feasible = [t for t in study.trials if all(v <= 0 for v in t.constraints.values())]
    if feasible:
        best = min(feasible, key=lambda t: t.value or 0.0)
        assert study.best_trial.number == best.number
