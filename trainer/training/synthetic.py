"""The synthetic model family: analytic learning curves with a set time per epoch.

A synthetic trial trains nothing. Its validation error after epoch ``t`` is

    value(t) = floor + (start - floor) * exp(-rate * t) + noise * N(0, 1)

where the floor grows with the distance of the hyperparameters from an optimum (lr 1e-3,
width 128, depth 3, dropout 0.2) and the rate grows with the learning rate, so fast learners
lead early and can end worse: curves cross, as real ones do, and samplers and pruners have
something to learn (the shape of Li et al. 2018, Hyperband, and 2020, ASHA). The noise is
seeded by the trial's seed, its hyperparameters and the epoch, so a curve is reproducible.
Each epoch sleeps ``epoch_seconds``: the trainer slot is busy, no CPU is used, so one process
with many slots stands in for many trainers and the control plane is measured alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping

import numpy as np

from molhpo.contract.catalogue import param_float, param_int, resolve_params
from molhpo.contract.enums import Direction

START = 3.0
"""Every curve's value before the first epoch."""
BEST_FLOOR = 0.5
"""The floor of the optimal hyperparameters."""


def curve_floor(params: Mapping[str, object]) -> float:
    """The value a trial's curve tends to: BEST_FLOOR plus a bowl around the optimum."""
    lr = param_float(params, "lr")
    width = param_int(params, "width")
    depth = param_int(params, "depth")
    dropout = param_float(params, "dropout")
    return (
        BEST_FLOOR
        + 0.25 * (math.log10(lr) + 3.0) ** 2
        + 0.02 * (math.log2(width) - 7.0) ** 2
        + 0.03 * (depth - 3) ** 2
        + 2.0 * (dropout - 0.2) ** 2
    )


def curve_rate(params: Mapping[str, object]) -> float:
    """Per-epoch convergence rate: faster with a larger learning rate, slower when deep."""
    lr = param_float(params, "lr")
    depth = param_int(params, "depth")
    return 0.3 * min(lr / 1e-2, 1.0) ** 0.5 / (1.0 + 0.1 * depth) + 0.005


def curve_value(params: Mapping[str, object], step: int, noise: float, seed: int) -> float:
    """The curve's value after epoch ``step`` (1-based), noise included."""
    floor = curve_floor(params)
    clean = floor + (START - floor) * math.exp(-curve_rate(params) * step)
    return clean + noise * _normal(params, step, seed)


def _normal(params: Mapping[str, object], step: int, seed: int) -> float:
    key = json.dumps(
        {k: params[k] for k in ("lr", "width", "depth", "dropout")}, sort_keys=True, default=str
    )
    digest = hashlib.blake2b(f"{seed}|{key}|{step}".encode(), digest_size=8).digest()
    return float(np.random.default_rng(int.from_bytes(digest, "little")).standard_normal())


def metrics_for(value: float) -> dict[str, float]:
    """Every regression metric, derived from the curve's value (read as an RMSE on targets
    of unit variance), so any metric can be a synthetic study's objective."""
    r2 = 1.0 - value**2 / START**2
    corr = math.sqrt(max(r2, 0.0))
    return {
        "rmse": value,
        "mae": 0.8 * value,
        "r2": r2,
        "mape": 100.0 * value / START,
        "pearson": corr,
        "spearman": corr,
    }


def train_synthetic(
    model_params: Mapping[str, object],
    max_epochs: int,
    seed: int,
    metric: str,
    direction: str,
    on_epoch: Callable[[int, float, dict[str, float], float], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, bool, int, dict[str, float], dict[str, float]]:
    """Run a synthetic trial's epochs.

    Args:
        model_params: the trial's hyperparameters (partial; defaults filled in).
        max_epochs: epochs to run unless ``on_epoch`` stops it.
        seed: the trial's seed (the noise's).
        metric, direction: what "best epoch" means.
        on_epoch: called with (step, train_loss, valid_metrics, seconds); False stops.
        sleep: how an epoch spends its time.

    Returns:
        (epochs_trained, stopped, best_step, best_valid_metrics, test_metrics).
    """
    params = resolve_params("synthetic", model_params)
    epoch_s = param_float(params, "epoch_seconds")
    noise = param_float(params, "noise")
    best_step, best, best_metrics = 0, math.nan, {}
    step, stopped = 0, False
    for step in range(1, max_epochs + 1):
        t0 = time.perf_counter()
        if epoch_s > 0:
            sleep(epoch_s)
        value = curve_value(params, step, noise, seed)
        valid = metrics_for(value)
        score = valid[metric]
        better = score < best if direction == Direction.MINIMIZE else score > best
        if best_step == 0 or better:
            best_step, best, best_metrics = step, score, valid
        if not on_epoch(step, 0.9 * value, valid, time.perf_counter() - t0):
            stopped = True
            break
    # The test set is another draw around the best epoch's clean value.
    test_value = curve_value(params, best_step, noise, seed + 1)
    return step, stopped, best_step, best_metrics, metrics_for(test_value)
