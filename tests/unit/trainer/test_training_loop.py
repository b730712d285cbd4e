"""train() on FreeSolv: learning, stopping, best-epoch bookkeeping and failure modes."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from molhpo.contract import catalogue
from molhpo.contract.errors import DivergedError, InvalidArgument
from trainer.training import EpochResult, TrainConfig, TrainResult, train

# One torch thread: tiny models train faster so, far faster on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = {
    "gin": {"hidden_channels": 32, "num_layers": 2},
    "mlp": {"units": 64},
}


def run(config: TrainConfig, stop_at: int | None = None) -> tuple[TrainResult, list[EpochResult]]:
    seen: list[EpochResult] = []

    def on_epoch(epoch: EpochResult) -> bool:
        seen.append(epoch)
        return stop_at is None or epoch.step < stop_at

    return train(config, on_epoch), seen


@pytest.mark.parametrize("model", ["gin", "mlp"])
def test_loss_falls_and_results_are_complete(model: str) -> None:
    result, epochs = run(TrainConfig("freesolv", model, SMALL[model], max_epochs=4))
    assert [e.step for e in epochs] == [1, 2, 3, 4]
    assert epochs[-1].train_loss < epochs[0].train_loss
    assert not result.stopped
    assert result.epochs_trained == 4
    assert 1 <= result.best_step <= 4
    best = epochs[result.best_step - 1]
    assert result.best_valid_metrics == best.valid_metrics
    assert result.best_valid_metrics["rmse"] == min(e.valid_metrics["rmse"] for e in epochs)
    assert set(result.test_metrics) == {"rmse", "mae", "r2", "mape", "pearson", "spearman"}
    assert result.n_parameters > 0
    assert all(e.samples == 514 and e.seconds > 0 for e in epochs)
    assert result.seconds >= sum(e.seconds for e in epochs)


@pytest.mark.parametrize("model", ["gin", "mlp"])
def test_on_epoch_false_stops_after_that_epoch(model: str) -> None:
    result, epochs = run(TrainConfig("freesolv", model, SMALL[model], max_epochs=5), stop_at=2)
    assert [e.step for e in epochs] == [1, 2]
    assert result.stopped
    assert result.epochs_trained == 2
    assert result.best_step in (1, 2)
    assert result.test_metrics


def test_same_seed_same_run_and_different_seed_differs() -> None:
    config = TrainConfig("freesolv", "mlp", SMALL["mlp"], max_epochs=2, seed=7)
    _, a = run(config)
    _, b = run(config)
    _, c = run(dataclasses.replace(config, seed=8))
    assert [e.train_loss for e in a] == [e.train_loss for e in b]
    assert [e.valid_metrics for e in a] == [e.valid_metrics for e in b]
    assert [e.train_loss for e in a] != [e.train_loss for e in c]


def test_concurrent_trials_are_reproducible() -> None:
    # trials run in threads of one process; dropout and batch order must not interfere
    config = TrainConfig("freesolv", "mlp", {**SMALL["mlp"], "dropout": 0.5}, max_epochs=2)
    _, alone = run(config)
    together: dict[int, list[EpochResult]] = {}

    def worker(i: int) -> None:
        together[i] = run(config)[1]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = [e.train_loss for e in alone]
    assert [e.train_loss for e in together[0]] == expected
    assert [e.train_loss for e in together[1]] == expected


def test_maximised_objective_and_no_test_set() -> None:
    config = TrainConfig(
        "freesolv",
        "mlp",
        SMALL["mlp"],
        max_epochs=3,
        objective_metric="r2",
        objective_direction="maximize",
        test_fraction=0.0,
    )
    result, epochs = run(config)
    assert result.best_valid_metrics["r2"] == max(e.valid_metrics["r2"] for e in epochs)
    assert result.test_metrics == {}
    assert epochs[0].samples == 578  # 642 - 64 validation molecules


def test_absurd_learning_rate_diverges(monkeypatch: pytest.MonkeyPatch) -> None:
    # lr is capped at 1 in the catalogue; widen the cap here to reach an lr that blows up
    widened = tuple(
        dataclasses.replace(hp, high=1e9) if hp.name == "lr" else hp
        for hp in catalogue.TRAINING_HYPERPARAMETERS
    )
    monkeypatch.setattr(catalogue, "TRAINING_HYPERPARAMETERS", widened)
    with pytest.raises(DivergedError, match=r"training loss became nan at epoch 1; lower lr") as e:
        run(TrainConfig("freesolv", "mlp", {"lr": 1e6}, max_epochs=3))
    assert e.value.failure_class == "diverged"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"dataset": "tox21"}, "unknown dataset 'tox21'"),
        ({"model": "rnn"}, "unknown model 'rnn'"),
        ({"max_epochs": 0}, "max_epochs is 0"),
        ({"objective_metric": "auc"}, "unknown objective_metric 'auc'"),
        ({"objective_direction": "maximize"}, "set it to 'minimize'"),
        ({"params": {"units": 2}}, "'units'"),
        ({"split": "scafold"}, "unknown split 'scafold'"),
        ({"valid_fraction": 0.0}, "leaves no validation molecules"),
        ({"device": "tpu"}, "invalid device 'tpu'"),
    ],
)
def test_bad_configs_raise_invalid_argument(changes: dict[str, Any], fragment: str) -> None:
    config = dataclasses.replace(TrainConfig("freesolv", "mlp", {}, max_epochs=1), **changes)
    with pytest.raises(InvalidArgument, match=fragment):
        run(config)
