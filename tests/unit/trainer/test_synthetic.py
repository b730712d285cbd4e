"""The synthetic family: reproducible curves shaped by the hyperparameters, a set epoch time,
and the same train() contract as a real model."""

from __future__ import annotations

import time

import pytest

from molhpo.contract.catalogue import check_pairing
from molhpo.contract.errors import InvalidArgument
from trainer.training.loop import EpochResult, TrainConfig, train
from trainer.training.synthetic import BEST_FLOOR, START, curve_floor, curve_value

OPTIMUM = {"lr": 1e-3, "width": 128, "depth": 3, "dropout": 0.2}


def config(**params: object) -> TrainConfig:
    return TrainConfig(
        dataset="synthetic",
        model="synthetic",
        params={"epoch_seconds": 0.0, **params},
        max_epochs=20,
        seed=7,
    )


def test_the_optimum_has_the_lowest_floor() -> None:
    assert curve_floor(OPTIMUM) == pytest.approx(BEST_FLOOR)
    for change in ({"lr": 1e-2}, {"width": 16}, {"depth": 8}, {"dropout": 0.6}):
        assert curve_floor({**OPTIMUM, **change}) > BEST_FLOOR + 0.01


def test_curves_are_seeded_and_cross() -> None:
    assert curve_value(OPTIMUM, 5, 0.1, 1) == curve_value(OPTIMUM, 5, 0.1, 1)
    assert curve_value(OPTIMUM, 5, 0.1, 1) != curve_value(OPTIMUM, 5, 0.1, 2)
    fast = {**OPTIMUM, "lr": 3e-2}  # converges sooner to a worse floor
    assert curve_value(fast, 2, 0.0, 0) < curve_value(OPTIMUM, 2, 0.0, 0)
    assert curve_value(fast, 200, 0.0, 0) > curve_value(OPTIMUM, 200, 0.0, 0)
    assert curve_value(OPTIMUM, 0, 0.0, 0) == pytest.approx(START)


def test_train_reports_every_epoch_and_the_best() -> None:
    seen: list[EpochResult] = []

    def on_epoch(ep: EpochResult) -> bool:
        seen.append(ep)
        return True

    result = train(config(noise=0.05), on_epoch)
    assert [ep.step for ep in seen] == list(range(1, 21))
    assert result.epochs_trained == 20 and not result.stopped
    best = min(seen, key=lambda ep: ep.valid_metrics["rmse"])
    assert result.best_step == best.step
    assert result.best_valid_metrics == best.valid_metrics
    assert set(result.test_metrics) == set(best.valid_metrics)


def test_on_epoch_false_stops_at_once() -> None:
    result = train(config(), lambda ep: ep.step < 3)
    assert result.epochs_trained == 3 and result.stopped


def test_each_epoch_takes_its_set_time() -> None:
    t0 = time.perf_counter()
    train(config(epoch_seconds=0.05), lambda ep: ep.step < 4)
    assert time.perf_counter() - t0 >= 4 * 0.05


def test_synthetic_goes_only_with_its_data_set() -> None:
    check_pairing("synthetic", "synthetic")
    check_pairing("gin", "freesolv")
    with pytest.raises(InvalidArgument, match=r"set dataset\.name to 'synthetic'"):
        check_pairing("synthetic", "freesolv")
    with pytest.raises(InvalidArgument, match="use model 'synthetic'"):
        check_pairing("gin", "synthetic")
    with pytest.raises(InvalidArgument, match=r"set dataset\.name to 'synthetic'"):
        train(TrainConfig(dataset="freesolv", model="synthetic", params={}, max_epochs=1), bool)
