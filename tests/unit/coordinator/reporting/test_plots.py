"""Plots: PNG bytes when there is data, NothingToPlot with the reason when there is none."""

from __future__ import annotations

import numpy as np
import pytest
from reporting_studies import assert_png, molhpo_study, unfinished_study

from coordinator.reporting.analysis import Importance
from coordinator.reporting.facts import trial_facts
from coordinator.reporting.plots import (
    NothingToPlot,
    plot_history,
    plot_importance,
    plot_intermediate,
    plot_parallel,
    plot_predictions,
)


def test_every_plot_draws_a_png() -> None:
    trials = [trial_facts(t) for t in molhpo_study().trials]
    label = "validation RMSE"
    assert_png(plot_history(trials, "minimize", label))
    assert_png(plot_intermediate(trials, label))
    assert_png(plot_importance(Importance("fanova", {"lr": 0.7, "hidden": 0.3}, None)))
    assert_png(plot_parallel(trials, ["lr"], "minimize", label))
    y = np.linspace(0.0, 1.0, 20)
    assert_png(plot_predictions(y, y + 0.1, {"rmse": 0.1, "n": 20}))


def test_the_same_data_draws_the_same_bytes() -> None:
    trials = [trial_facts(t) for t in molhpo_study().trials]
    assert plot_history(trials, "minimize", "x") == plot_history(trials, "minimize", "x")


def test_without_data_the_reason_is_given() -> None:
    trials = [trial_facts(t) for t in unfinished_study().trials]
    with pytest.raises(NothingToPlot, match="no complete trial with a finite value"):
        plot_history(trials, "minimize", "objective")
    with pytest.raises(NothingToPlot, match="no complete trial with a finite value"):
        plot_parallel(trials, [], "minimize", "objective")
    with pytest.raises(NothingToPlot, match="no trial reported intermediate values"):
        plot_intermediate([], "objective")
    with pytest.raises(NothingToPlot, match="needs more trials"):
        plot_importance(Importance(None, {}, "needs more trials"))
    nan = np.array([np.nan])
    with pytest.raises(NothingToPlot, match="no finite prediction"):
        plot_predictions(nan, nan, {"rmse": None, "n": 0})
