"""The training recipe: optimiser, schedules, early stopping, clipping, losses, AMP, subsets."""

from __future__ import annotations

import pytest
import torch

from molhpo.contract.catalogue import TRAINING_HYPERPARAMETERS, resolve_params
from molhpo.contract.errors import InvalidArgument
from trainer.training import EpochResult, TrainConfig, TrainResult, evaluation, train
from trainer.training.recipe import Schedule, make_loss, make_optimizer

# One torch thread: tiny models train faster so, far faster on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SLICE = 120
"""Molecules of FreeSolv these tests train on (fast, still real data)."""


def run(params: dict[str, object], max_epochs: int = 3) -> tuple[TrainResult, list[EpochResult]]:
    seen: list[EpochResult] = []

    def on_epoch(epoch: EpochResult) -> bool:
        seen.append(epoch)
        return True

    config = TrainConfig(
        "freesolv", "mlp", {"units": 32, **params}, max_epochs=max_epochs, max_molecules=SLICE
    )
    return train(config, on_epoch), seen


def losses(params: dict[str, object]) -> list[float]:
    return [e.train_loss for e in run(params)[1]]


def test_defaults_keep_the_old_recipe() -> None:
    defaults = {hp.name: hp.default for hp in TRAINING_HYPERPARAMETERS}
    assert defaults["optimizer"] == "adam"
    assert defaults["scheduler"] == "constant"
    assert defaults["patience"] == 0
    assert defaults["grad_clip"] == 0.0
    assert defaults["loss"] == "mse"
    assert defaults["amp"] is True
    params = resolve_params("mlp", {})
    model = torch.nn.Linear(2, 1)
    assert type(make_optimizer(params, model)) is torch.optim.Adam
    assert isinstance(make_loss(params["loss"]), torch.nn.MSELoss)


def test_max_molecules_trains_on_a_slice() -> None:
    _, epochs = run({}, max_epochs=1)
    assert epochs[0].samples == 96  # 120 - 12 validation - 12 test molecules
    with pytest.raises(InvalidArgument, match="max_molecules is -1"):
        train(TrainConfig("freesolv", "mlp", {}, max_epochs=1, max_molecules=-1), lambda e: True)


def test_adamw_is_used_and_differs_from_adam_with_weight_decay() -> None:
    params = resolve_params("mlp", {"optimizer": "adamw", "weight_decay": 0.1})
    assert type(make_optimizer(params, torch.nn.Linear(2, 1))) is torch.optim.AdamW
    adam = losses({"weight_decay": 0.1})
    adamw = losses({"weight_decay": 0.1, "optimizer": "adamw"})
    assert adamw[0] != adam[0] or adamw[1:] != adam[1:]
    assert adamw[-1] < adamw[0]


def _lrs(params: dict[str, object], objectives: list[float], max_epochs: int) -> list[float]:
    """Learning rate after each epoch when the validation objective goes ``objectives``."""
    resolved = resolve_params("mlp", params)
    optimizer = make_optimizer(resolved, torch.nn.Linear(2, 1))
    schedule = Schedule(resolved, optimizer, max_epochs, "minimize")
    rates = []
    optimizer.step()  # (no gradients: leaves the weights alone; silences torch's order warning)
    for value in objectives:
        schedule.end_of_epoch(value)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_cosine_anneals_to_final_lr_ratio_at_max_epochs() -> None:
    rates = _lrs({"scheduler": "cosine", "lr": 0.01, "final_lr_ratio": 0.1}, [1.0] * 4, 4)
    # eta_min + (lr - eta_min) * (1 + cos(pi * t / T)) / 2 with eta_min = 0.001, T = 4
    expected = [
        0.001 + 0.009 * (1 + torch.cos(torch.tensor(t * torch.pi / 4)).item()) / 2
        for t in range(1, 5)
    ]
    assert rates == pytest.approx(expected)
    assert rates[-1] == pytest.approx(0.001)


def test_plateau_halves_lr_after_patience_epochs_without_improvement() -> None:
    params = {"scheduler": "plateau", "lr": 0.01, "plateau_patience": 2}
    rates = _lrs(params, [1.0, 0.9, 0.9, 0.9, 0.9], 10)
    # best 0.9 at epoch 2; epochs 3 and 4 are the patience, epoch 5 is the third bad one
    assert rates == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005])
    assert _lrs({"scheduler": "constant", "lr": 0.01}, [1.0, 2.0, 3.0], 3) == [0.01] * 3


def test_schedules_run_in_train() -> None:
    assert len(losses({"scheduler": "cosine"})) == 3
    assert len(losses({"scheduler": "plateau", "plateau_patience": 0})) == 3


def test_patience_stops_early_without_setting_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # validation metrics that never change: epoch 1 stays the best, and after `patience` more
    # epochs without improvement training ends
    flat = {"rmse": 1.0, "mae": 1.0, "r2": 0.0, "mape": 1.0, "pearson": 0.0, "spearman": 0.0}
    monkeypatch.setattr(evaluation, "regression_metrics", lambda y_true, y_pred: dict(flat))
    result, epochs = run({"patience": 3}, max_epochs=50)
    assert [e.step for e in epochs] == [1, 2, 3, 4]
    assert result.epochs_trained == 4
    assert result.best_step == 1
    assert not result.stopped
    # without patience the same run goes on to max_epochs
    result, _ = run({"patience": 0}, max_epochs=6)
    assert result.epochs_trained == 6


def test_grad_clip_changes_the_updates() -> None:
    plain = losses({})
    clipped = losses({"grad_clip": 1e-3})
    assert clipped[0] != plain[0]
    assert losses({"grad_clip": 1e6}) == plain  # a clip never reached changes nothing


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_other_losses_train(loss: str) -> None:
    values = losses({"loss": loss})
    assert values != losses({})
    assert values[-1] < values[0]


def test_loss_functions() -> None:
    pred, target = torch.tensor([0.0, 3.0]), torch.tensor([0.0, 0.0])
    assert make_loss("l1")(pred, target).item() == pytest.approx(1.5)
    assert make_loss("mse")(pred, target).item() == pytest.approx(4.5)
    assert make_loss("huber")(pred, target).item() == pytest.approx((3.0 - 0.5) / 2)


def test_amp_is_a_no_op_on_cpu() -> None:
    assert losses({"amp": True}) == losses({"amp": False})


@pytest.mark.parametrize("metric", ["mape", "pearson", "spearman"])
def test_new_metrics_can_be_the_objective(metric: str) -> None:
    direction = "minimize" if metric == "mape" else "maximize"
    config = TrainConfig(
        "freesolv",
        "mlp",
        {"units": 32},
        max_epochs=3,
        max_molecules=SLICE,
        objective_metric=metric,
        objective_direction=direction,
    )
    seen: list[EpochResult] = []

    def record(e: EpochResult) -> bool:
        seen.append(e)
        return True

    result = train(config, record)
    pick = min if direction == "minimize" else max
    assert result.best_valid_metrics[metric] == pick(e.valid_metrics[metric] for e in seen)
