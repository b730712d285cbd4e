"""Final evaluation and race tables from finished trials: pure functions over FrozenTrials."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna

from molhpo.contract import attrs
from molhpo.contract.enums import Direction


@dataclass(frozen=True)
class ConfigResult:
    """One configuration retrained with several seeds."""

    config: str
    params: Mapping[str, object]
    n_runs: int
    test_mean: Mapping[str, float]
    test_std: Mapping[str, float]
    valid_mean: Mapping[str, float]


@dataclass(frozen=True)
class Evaluation:
    """The final evaluation of a study."""

    configs: list[ConfigResult]
    ensemble_rmse_mean: float | None
    ensemble_rmse_std: float | None
    ensemble_members: list[str] = field(default_factory=list)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def evaluate_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> Evaluation:
    """Test metrics per configuration (mean and std over seeds) and the ensemble of the ranked
    configurations (average of their test predictions, per seed index)."""
    done = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and attrs.EVAL_CONFIG in t.user_attrs
    ]
    by_config: dict[str, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for t in done:
        by_config[str(t.user_attrs[attrs.EVAL_CONFIG])].append(t)
    results = [
        _config_result(config, runs)
        for config, runs in sorted(by_config.items(), key=lambda kv: _config_order(kv[0]))
    ]
    ranked = sorted({c for c in by_config if c.startswith("rank-")}, key=_config_order)
    rmses = _ensemble_rmses(done, ranked)
    if len(ranked) > 1 and rmses:
        mean, std = _mean_std(rmses)
        return Evaluation(results, mean, std, ranked)
    return Evaluation(results, None, None, ranked)


def _config_result(config: str, runs: Sequence[optuna.trial.FrozenTrial]) -> ConfigResult:
    """One configuration's metrics over its runs (seeds)."""
    tests: dict[str, list[float]] = defaultdict(list)
    valids: dict[str, list[float]] = defaultdict(list)
    for t in runs:
        for k, v in dict(t.user_attrs.get("test_metrics", {})).items():
            tests[k].append(float(v))
        for k, v in dict(t.user_attrs.get(attrs.TRIAL_VALID, {})).items():
            valids[k].append(float(v))
    stats = {k: _mean_std(v) for k, v in tests.items()}
    return ConfigResult(
        config=config,
        params=dict(runs[0].params),
        n_runs=len(runs),
        test_mean={k: m for k, (m, _) in stats.items()},
        test_std={k: s for k, (_, s) in stats.items()},
        valid_mean={k: statistics.fmean(v) for k, v in valids.items()},
    )


def _ensemble_rmses(done: Sequence[optuna.trial.FrozenTrial], ranked: Sequence[str]) -> list[float]:
    """The test RMSE of the ranked configurations' averaged predictions, one per seed index
    at which every member finished."""
    by_seed: dict[int, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for t in done:
        if t.user_attrs[attrs.EVAL_CONFIG] in ranked and attrs.TEST_PREDICTIONS in t.user_attrs:
            by_seed[int(t.user_attrs.get(attrs.EVAL_SEED_INDEX, 0))].append(t)
    rmses = []
    for members in by_seed.values():
        if len(members) != len(ranked):
            continue  # a member of this seed failed: no complete ensemble
        preds = np.mean(
            [np.asarray(t.user_attrs[attrs.TEST_PREDICTIONS], float) for t in members], 0
        )
        truth = np.asarray(members[0].user_attrs[attrs.TEST_TARGETS], float)
        rmses.append(float(np.sqrt(np.mean((preds - truth) ** 2))))
    return rmses


def _config_order(config: str) -> tuple[int, int]:
    if config.startswith("rank-"):
        return (0, int(config.removeprefix("rank-")))
    return (1, 0)


@dataclass(frozen=True)
class RaceRow:
    """One set-up of a race."""

    label: str
    study: str
    wall_seconds: float
    trainer_seconds: float
    epochs: int
    best_value: float | None
    best_test: Mapping[str, float]
    seconds_to_target: float
    epochs_to_target: int


def race_row(
    label: str,
    study: str,
    trials: Sequence[optuna.trial.FrozenTrial],
    direction: str,
    target: float | None,
) -> RaceRow:
    """What the methodology's tables report for one set-up."""
    finished = [t for t in trials if t.datetime_complete is not None]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    wall = 0.0
    if finished and starts:
        wall = (
            max(t.datetime_complete for t in finished if t.datetime_complete) - min(starts)
        ).total_seconds()
    sign = -1.0 if direction == Direction.MAXIMIZE else 1.0
    complete = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.value is not None
        and math.isfinite(t.value)
    ]
    best = min(complete, key=lambda t: sign * float(t.value or 0.0)) if complete else None
    to_s, to_epochs = -1.0, -1
    if target is not None and starts:
        epochs = 0
        for t in sorted(finished, key=lambda t: t.datetime_complete):  # type: ignore[arg-type,return-value]
            epochs += int(t.user_attrs.get("epochs_trained", 0) or 0)
            if (
                t.state == optuna.trial.TrialState.COMPLETE
                and t.value is not None
                and sign * t.value <= sign * target
            ):
                to_s = (t.datetime_complete - min(starts)).total_seconds()  # type: ignore[operator]
                to_epochs = epochs
                break
    return RaceRow(
        label=label,
        study=study,
        wall_seconds=wall,
        trainer_seconds=sum(
            float(t.user_attrs.get(attrs.TRIAL_SECONDS, 0.0) or 0.0) for t in trials
        ),
        epochs=sum(int(t.user_attrs.get("epochs_trained", 0) or 0) for t in trials),
        best_value=None if best is None else float(best.value or 0.0),
        best_test=dict(best.user_attrs.get("test_metrics", {})) if best else {},
        seconds_to_target=to_s,
        epochs_to_target=to_epochs,
    )
