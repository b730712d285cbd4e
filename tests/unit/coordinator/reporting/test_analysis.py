"""Conclusions from the trials: convergence, default against best, importance, predictions."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from reporting_studies import molhpo_study

from coordinator.reporting.analysis import (
    compare_default,
    convergence_warnings,
    failure_groups,
    param_importances,
    prediction_arrays,
    prediction_metrics,
)
from coordinator.reporting.facts import trial_facts
from molhpo.contract.errors import InvalidArgument


def test_convergence_rules() -> None:
    def facts(best_step: int, epochs: int, state: TrialState = TrialState.COMPLETE) -> Any:
        t = create_trial(
            state=state,
            value=1.0 if state == TrialState.COMPLETE else None,
            user_attrs={"best_step": best_step, "epochs_trained": epochs},
        )
        return trial_facts(t)

    # best epoch last but early-stopped short of the budget: no warning
    assert convergence_warnings([facts(8, 8)], budget=30) == []
    # last epoch of the full budget: under-trained
    assert [w["kind"] for w in convergence_warnings([facts(30, 30)], budget=30)] == [
        "under_trained"
    ]
    # first epoch: premature; a one-epoch trial says nothing
    assert [w["kind"] for w in convergence_warnings([facts(1, 9)], budget=30)] == ["premature"]
    assert convergence_warnings([facts(1, 1)], budget=1) == []
    # middle: fine
    assert convergence_warnings([facts(12, 30)], budget=30) == []


def test_default_comparison_for_maximised_metric_and_default_best() -> None:
    def facts(value: float, r2_test: float, enqueued: str | None = None) -> Any:
        attrs: dict[str, Any] = {"test_metrics": {"r2": r2_test}}
        if enqueued:
            attrs["enqueued"] = enqueued
        return trial_facts(create_trial(value=value, user_attrs=attrs), "maximize")

    d, b = facts(0.7, 0.65, "default"), dataclasses.replace(facts(0.8, 0.78), number=5)
    cmp_ = compare_default(d, b, "r2", "maximize")
    assert cmp_ is not None
    assert cmp_["sentence"].startswith("tuning raised validation R2 from 0.7 to 0.8, test from")
    same = compare_default(d, d, "r2", "maximize")
    assert same is not None and same["improved"] is False
    assert "is the best trial" in same["sentence"]
    worse = compare_default(b, d, "r2", "maximize")
    assert worse is not None and worse["improved"] is False
    assert worse["sentence"].startswith("tuning did not beat the default configuration")


def test_failures_are_grouped_most_frequent_first() -> None:
    trials = [trial_facts(t) for t in molhpo_study().trials]
    groups = failure_groups(trials)
    assert [g["failure_class"] for g in groups] == ["diverged", "trainer_lost"]
    assert groups[1]["reasons"] == [{"reason": "trainer b stopped sending heartbeats", "count": 1}]


def test_importance_ranks_the_driving_parameter_first() -> None:
    rng = random.Random(3)
    study = optuna.create_study(direction="minimize")
    dists = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "pool": CategoricalDistribution(["mean", "sum"]),
    }
    for _ in range(24):
        lr = 10 ** rng.uniform(-4, -1)
        p = {"lr": lr, "dropout": rng.uniform(0.0, 0.5), "pool": rng.choice(["mean", "sum"])}
        value = 0.5 + (math.log10(lr) + 2.5) ** 2 + 0.01 * rng.random()
        study.add_trial(create_trial(value=value, params=p, distributions=dists))
    imp = param_importances(study, 24)
    assert next(iter(imp.values)) == "lr", imp
    assert sum(imp.values.values()) == pytest.approx(1.0)
    assert param_importances(study, 1).reason == (
        "needs at least 2 complete trials with finite values (have 1)"
    )


def test_prediction_metrics_skip_non_finite_pairs() -> None:
    y_true, y_pred = prediction_arrays({"y_true": [1.0, 2.0, 3.0], "y_pred": [1.5, 2.5, math.nan]})
    m = prediction_metrics(y_true, y_pred)
    assert m["n"] == 2 and m["n_dropped"] == 1
    assert m["rmse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.5)
    none = prediction_metrics(np.array([math.nan]), np.array([1.0]))
    assert none["n"] == 0 and none["rmse"] is None


def test_malformed_predictions_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="y_pred"):
        prediction_arrays({"y_true": [1.0]})
    with pytest.raises(InvalidArgument, match="one prediction per molecule"):
        prediction_arrays({"y_true": [1.0, 2.0], "y_pred": [1.0]})
    words: dict[str, Any] = {"y_true": ["a"], "y_pred": [1.0]}
    with pytest.raises(InvalidArgument, match="must be numbers"):
        prediction_arrays(words)
