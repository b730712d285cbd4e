"""Regression metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from molhpo.contract.errors import InvalidArgument
from trainer.training.metrics import regression_metrics


def test_hand_computed() -> None:
    # errors 0, 0, 0, 2: MSE 1, MAE 0.5; mean 2.5, SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5,
    # SS_res = 4, so R^2 = 1 - 4/5 = 0.2
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert {k: m[k] for k in ("rmse", "mae", "r2")} == pytest.approx(
        {"rmse": 1.0, "mae": 0.5, "r2": 0.2}
    )


def test_second_hand_computed_case() -> None:
    # errors -1, 1, 2: MSE (1 + 1 + 4) / 3 = 2, MAE 4/3; mean 0, SS_tot = 2, SS_res = 6 -> -2
    m = regression_metrics(np.array([-1.0, 0.0, 1.0]), np.array([-2.0, 1.0, 3.0]))
    assert m["rmse"] == pytest.approx(math.sqrt(2.0))
    assert m["mae"] == pytest.approx(4.0 / 3.0)
    assert m["r2"] == pytest.approx(-2.0)


def test_perfect_and_constant_targets() -> None:
    y = np.array([0.5, -1.0, 2.0])
    assert regression_metrics(y, y) == {
        "rmse": 0.0,
        "mae": 0.0,
        "r2": 1.0,
        "mape": 0.0,
        "pearson": 1.0,
        "spearman": 1.0,
    }
    flat = np.array([3.0, 3.0])
    assert regression_metrics(flat, flat)["r2"] == 1.0
    assert regression_metrics(flat, np.array([3.0, 4.0]))["r2"] == 0.0


def test_accepts_float32_and_column_vectors() -> None:
    m = regression_metrics(np.array([[1.0], [2.0]], dtype=np.float32), np.array([1.0, 3.0]))
    assert m["mae"] == pytest.approx(0.5)


def test_mismatched_or_empty_inputs_raise() -> None:
    with pytest.raises(InvalidArgument, match="y_true has 2 values but y_pred has 3"):
        regression_metrics(np.zeros(2), np.zeros(3))
    with pytest.raises(InvalidArgument, match="0 predictions"):
        regression_metrics(np.zeros(0), np.zeros(0))
