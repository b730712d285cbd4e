"""What one trial is given (:class:`TrainConfig`, checked by :func:`check_config`) and what it
reports (:class:`EpochResult` after every epoch, :class:`TrainResult` at the end)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from molhpo.contract.catalogue import METRICS, check_pairing, get_dataset, get_model
from molhpo.contract.enums import Direction
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import DatasetRequest


@dataclass(frozen=True)
class TrainConfig:
    """Everything one trial needs; ``params`` may be partial (the catalogue fills defaults).

    ``device`` (an extension of the shared contract) is a torch device string such as "cpu" or
    "cuda:0"; the trainer process decides it (None: nobody handed one over, so the CPU; a
    trainer always does, and ``trainer.placement.Placement`` shows the difference).
    ``max_molecules`` > 0 (also an extension) keeps a random subset of that many molecules,
    drawn with ``split_seed``; 0 uses them all.
    """

    dataset: str
    model: str
    params: Mapping[str, object]
    max_epochs: int
    seed: int = 0
    split: str = "random"
    split_seed: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    objective_metric: str = "rmse"
    objective_direction: str = Direction.MINIMIZE
    device: str | None = None
    max_molecules: int = 0
    data: DatasetRequest | None = None
    """A user file, a QM9 property or an invalid-row limit; None: the bundled ``dataset``."""
    dataset_roots: tuple[str, ...] = ()
    """Folders user files must lie in (set by the trainer process, not by studies)."""


@dataclass(frozen=True)
class EpochResult:
    """What one epoch did; ``step`` is the 1-based epoch number (the resource used so far)."""

    step: int
    train_loss: float
    valid_metrics: dict[str, float]
    seconds: float
    samples: int


@dataclass(frozen=True)
class TrainResult:
    """The outcome of ``train``; metrics are in the target's units.

    ``stopped`` is True only when ``on_epoch`` answered False. Early stopping (``patience``)
    ends training with ``epochs_trained < max_epochs`` and ``stopped`` False.
    """

    epochs_trained: int
    stopped: bool
    best_step: int
    best_valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    seconds: float
    n_parameters: int
    test_predictions: tuple[float, ...] = ()
    """Predictions of the best epoch's model on the test rows (test-row order)."""
    test_targets: tuple[float, ...] = ()
    """The test rows' targets, in the same order."""
    resumed_from: int = 0
    """The epoch this run resumed after (0: it started from scratch)."""


def check_config(config: TrainConfig) -> None:
    """InvalidArgument for settings that break a rule, before any work is done."""
    if config.data is None or not config.data.path:
        get_dataset(config.dataset)
    get_model(config.model)
    check_pairing(
        config.model, "" if config.data is not None and config.data.path else config.dataset
    )
    if config.max_epochs < 1:
        raise InvalidArgument(f"max_epochs is {config.max_epochs}; it must be at least 1")
    if config.max_molecules < 0:
        raise InvalidArgument(
            f"max_molecules is {config.max_molecules}; it must be 0 (all) or a positive count"
        )
    direction = METRICS.get(config.objective_metric)
    if direction is None:
        raise InvalidArgument(
            f"unknown objective_metric '{config.objective_metric}'; choose one of: "
            f"{', '.join(sorted(METRICS))}"
        )
    if config.objective_direction != direction:
        raise InvalidArgument(
            f"objective_direction is '{config.objective_direction}' but "
            f"{config.objective_metric} is to be {direction}d; set it to '{direction}'"
        )


def resolve_device(name: str | None) -> torch.device:
    """The torch device ``name`` names (None: the CPU); InvalidArgument for a bad name or a
    GPU that is not there."""
    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidArgument(f"invalid device '{name}': {exc}; use e.g. cpu or cuda:0") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument(f"device '{name}' requested but CUDA is not available; use cpu")
    return device
