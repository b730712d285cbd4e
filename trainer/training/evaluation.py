"""Measuring a trial's model: its predictions for the validation and test rows, always in
float32 and in eval mode, and their regression metrics in the target's units."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainer.training.data import TrialData
from trainer.training.device_data import DeviceData
from trainer.training.metrics import regression_metrics

EVAL_BATCH_SIZE = 1024
"""Molecules per forward pass when predicting the validation and test sets."""


def evaluate(model: nn.Module, data: DeviceData, rows: np.ndarray) -> np.ndarray:
    """Standardised predictions [len(rows)] of ``model`` in eval mode, as float64 numpy.

    Always in float32 (no autocast, whatever ``amp`` says): these predictions give the
    pruning metric, the test metrics and the reported predictions.
    """
    model.eval()
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH_SIZE):
            parts.append(data.predict(model, rows[start : start + EVAL_BATCH_SIZE]).float())
    return torch.cat(parts).double().cpu().numpy()


def measure_validation(model: nn.Module, inputs: DeviceData, data: TrialData) -> dict[str, float]:
    """The regression metrics of ``model`` on the validation rows, in the target's units."""
    pred = evaluate(model, inputs, data.valid_rows) * data.y_std + data.y_mean
    return regression_metrics(data.targets[data.valid_rows], pred)


def measure_test(
    model: nn.Module, inputs: DeviceData, data: TrialData
) -> tuple[np.ndarray, dict[str, float]]:
    """``model``'s predictions [n_test] for the test rows, in the target's units, and their
    regression metrics; both empty when the split has no test rows."""
    test_metrics: dict[str, float] = {}
    test_pred = np.zeros(0)
    if len(data.test_rows) > 0:
        test_pred = evaluate(model, inputs, data.test_rows) * data.y_std + data.y_mean
        test_metrics = regression_metrics(data.targets[data.test_rows], test_pred)
    return test_pred, test_metrics
