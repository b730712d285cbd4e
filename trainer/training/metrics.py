"""Regression metrics in pure numpy (no scikit-learn or scipy dependency)."""

from __future__ import annotations

import numpy as np

from molhpo.contract.errors import InvalidArgument


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` [n] with ties given their average rank (as scipy's
    ``rankdata(method="average")``), float64 [n]."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # start of each run of equal values in sorted order
    new_run = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    run_id = np.cumsum(new_run) - 1
    run_starts = np.flatnonzero(new_run)
    run_ends = np.append(run_starts[1:], len(values))  # exclusive
    average = (run_starts + run_ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = average[run_id]
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` [n]; 0.0 when either is constant (undefined)."""
    da = a - a.mean()
    db = b - b.mean()
    denominator = float(np.sqrt(np.sum(da**2) * np.sum(db**2)))
    if not denominator > 0.0:
        return 0.0
    return float(np.clip(np.sum(da * db) / denominator, -1.0, 1.0))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R^2, MAPE, Pearson and Spearman correlation of ``y_pred`` against ``y_true``
    (both shape [n], n >= 1).

    R^2 = 1 - SS_res / SS_tot. When the targets are constant (SS_tot = 0) R^2 is undefined;
    like scikit-learn's default it is then reported as 1.0 for a perfect fit and 0.0 otherwise,
    so the value is always a finite number when the predictions are.

    ``mape`` is the mean absolute percentage error, 100 * mean(|pred - true| / |true|), in
    percent. Targets equal to zero have no relative error, so they are skipped (FreeSolv has a
    few); when every target is zero MAPE is reported as 0.0.

    ``pearson`` is the linear correlation of predictions and targets, ``spearman`` the Pearson
    correlation of their ranks (ties get their average rank). Both are undefined when the
    predictions or the targets are constant (an untrained model can predict a constant); they
    are then reported as 0.0, "no correlation", so every value stays finite.
    """
    true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if true.shape != pred.shape:
        raise InvalidArgument(
            f"y_true has {true.size} values but y_pred has {pred.size}; pass one prediction "
            "per target"
        )
    if true.size == 0:
        raise InvalidArgument("cannot compute metrics of 0 predictions; pass at least one")
    error = pred - true
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    constant_fit = 1.0 if ss_res == 0.0 else 0.0
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0.0 else constant_fit
    nonzero = true != 0.0
    mape = (
        float(100.0 * np.mean(np.abs(error[nonzero]) / np.abs(true[nonzero])))
        if nonzero.any()
        else 0.0
    )
    finite = bool(np.all(np.isfinite(pred)))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": float(r2),
        "mape": mape,
        "pearson": _pearson(true, pred) if finite else float("nan"),
        "spearman": _pearson(_ranks(true), _ranks(pred)) if finite else float("nan"),
    }
