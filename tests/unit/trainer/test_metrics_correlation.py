"""MAPE, Pearson and Spearman of ``regression_metrics`` against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from molhpo.contract.catalogue import METRICS
from trainer.training.metrics import _ranks, regression_metrics


def test_every_metric_has_a_direction() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0]))
    assert set(m) == set(METRICS)
    assert METRICS["mape"] == "minimize"
    assert METRICS["pearson"] == METRICS["spearman"] == "maximize"


def test_mape_in_percent_skips_zero_targets() -> None:
    # relative errors |1.5-1|/1 = 50 %, |2-2|/2 = 0 %, |3-4|/4 = 25 %; the zero target is skipped
    m = regression_metrics(np.array([1.0, 2.0, 4.0, 0.0]), np.array([1.5, 2.0, 3.0, 9.0]))
    assert m["mape"] == pytest.approx(25.0)
    assert regression_metrics(np.zeros(3), np.ones(3))["mape"] == 0.0  # nothing to measure
    # negative targets count by their magnitude: |-3 - -2| / 2 = 50 %
    assert regression_metrics(np.array([-2.0]), np.array([-3.0]))["mape"] == pytest.approx(50.0)


def test_pearson_hand_computed() -> None:
    # x = 1, 2, 3 (mean 2), y = 1, 3, 2 (mean 2): cov = (-1)(-1) + 0 + (1)(0) = 1,
    # var_x = 2, var_y = 1 + 1 + 0 = 2, r = 1 / sqrt(2 * 2) = 0.5
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    assert m["pearson"] == pytest.approx(0.5)
    x = np.array([0.3, -1.2, 2.5, 0.9, 4.1])
    y = 2.0 * x - 7.0
    assert regression_metrics(x, y)["pearson"] == pytest.approx(1.0)
    assert regression_metrics(x, -y)["pearson"] == pytest.approx(-1.0)
    assert regression_metrics(x, y)["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_spearman_is_pearson_of_ranks_with_average_ties() -> None:
    # monotone but nonlinear: ranks agree exactly
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert regression_metrics(x, np.exp(x))["spearman"] == pytest.approx(1.0)
    assert regression_metrics(x, np.exp(x))["pearson"] < 1.0
    # ties get their average rank: [10, 20, 20, 30] -> 1, 2.5, 2.5, 4
    assert _ranks(np.array([10.0, 20.0, 20.0, 30.0])).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert _ranks(np.array([3.0, 1.0, 2.0])).tolist() == [3.0, 1.0, 2.0]
    # true ranks 1, 2, 3, 4; pred [1, 3, 3, 2] -> ranks 1, 3.5, 3.5, 2; both means 2.5:
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-1.5, 1, 1, -0.5): cov = 2.25 - 0.5 + 0.5 - 0.75
    # = 1.5, var 5 and 2.25 + 1 + 1 + 0.25 = 4.5, rho = 1.5 / sqrt(22.5)
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 3.0, 2.0]))
    assert m["spearman"] == pytest.approx(1.5 / math.sqrt(22.5))


def test_correlations_of_constant_predictions_are_zero() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0]))
    assert m["pearson"] == 0.0
    assert m["spearman"] == 0.0
    assert all(math.isfinite(v) for v in m.values())
