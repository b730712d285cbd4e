"""The epochs of one trial: batches, validation, best epoch, checkpoints, resume states, and
the answer of ``on_epoch`` that decides whether to go on."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from molhpo.contract.catalogue import param_float, param_int
from molhpo.contract.enums import Direction
from molhpo.contract.errors import DivergedError
from trainer.checkpoint import (
    CheckpointSink,
    ResumePoint,
    ResumeStore,
    checkpoint_inputs,
    checkpoint_payload,
    data_request_dict,
    resume_state,
)
from trainer.training.data import TrialData
from trainer.training.device_data import DeviceData, host_to_device
from trainer.training.evaluation import measure_validation
from trainer.training.recipe import Learner
from trainer.training.trial import EpochResult, TrainConfig


def is_better(value: float, best: float | None, direction: str) -> bool:
    """Whether objective ``value`` beats ``best`` in ``direction`` (anything beats None)."""
    if best is None:
        return True
    return value < best if direction == Direction.MINIMIZE else value > best


def train_step(
    model: nn.Module,
    data: DeviceData,
    rows: np.ndarray,
    rows_on_device: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    autocast: Callable[[], AbstractContextManager[Any]],
    grad_clip: float,
) -> torch.Tensor:
    """One optimisation step on molecules ``rows`` (``rows_on_device``: the same on the
    device); returns the batch's summed loss (a 0-d tensor on the device, never read here).

    Nothing in it makes the host wait for the device (``trainer.training.sync_guard`` checks
    this for every family), except the float16 gradient scaler's overflow check, used only on
    GPUs without native bfloat16.
    """
    with autocast():
        pred = data.predict(model, rows, rows_on_device)
    loss = loss_fn(pred.float(), data.y[rows_on_device])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach() * len(rows)


def train_epoch(
    learner: Learner,
    inputs: DeviceData,
    train_rows: np.ndarray,
    batch_size: int,
    grad_clip: float,
) -> tuple[float, int]:
    """One pass over ``train_rows`` in the order ``learner.order_rng`` draws, in batches of
    ``batch_size``; returns the mean training loss (on standardised targets) and the number of
    molecules it saw."""
    model = learner.model
    model.train()
    order = learner.order_rng.permutation(train_rows)
    # One copy of the epoch's order to the device; batches slice it there.
    order_on_device = host_to_device(order, learner.device)
    inputs.prepare(model)
    total = torch.zeros((), device=learner.device)
    for start in range(0, len(order), batch_size):
        end = start + batch_size
        total += train_step(
            model,
            inputs,
            order[start:end],
            order_on_device[start:end],
            learner.loss_fn,
            learner.optimizer,
            learner.scaler,
            learner.autocast,
            grad_clip,
        )
    train_loss = float(total.item()) / len(order)  # the epoch's one wait for the device
    return train_loss, len(order)


@dataclass
class Progress:
    """How far a trial got: its best validation epoch so far and how its epochs ended."""

    best_step: int = 0
    best_value: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    """The best epoch's weights."""
    epochs_trained: int = 0
    stopped: bool = False
    """True only when ``on_epoch`` answered False (early stopping leaves it False)."""
    resumed_from: int = 0
    """The epoch this run resumed after (0: it started from scratch)."""

    @classmethod
    def resumed_at(cls, point: ResumePoint) -> Progress:
        """The progress a trial had when it saved the resume state ``point`` came from."""
        return cls(
            best_step=point.best_step,
            best_value=point.best_value,
            best_metrics=point.best_metrics,
            best_state=point.best_state,
            epochs_trained=point.epoch,
            resumed_from=point.epoch,
        )

    def record(
        self,
        step: int,
        value: float,
        metrics: Mapping[str, float],
        model: nn.Module,
        direction: str,
    ) -> None:
        """Count epoch ``step`` as done, and keep it (its metrics and a copy of ``model``'s
        weights) when its objective ``value`` is the best so far in ``direction``."""
        self.epochs_trained = step
        if is_better(value, self.best_value, direction):
            self.best_step, self.best_value, self.best_metrics = step, value, dict(metrics)
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_epochs(
    config: TrainConfig,
    params: Mapping[str, object],
    data: TrialData,
    inputs: DeviceData,
    learner: Learner,
    progress: Progress,
    on_epoch: Callable[[EpochResult], bool],
    checkpoints: CheckpointSink | None,
    resume: ResumeStore | None,
) -> None:
    """Train the epochs after ``progress.resumed_from`` up to ``config.max_epochs``, keeping
    ``progress`` up to date; each one is measured on the validation rows and reported through
    ``on_epoch``. Ends early when ``on_epoch`` answers False or after ``patience`` epochs
    without improvement. Good epochs go to ``checkpoints``, and every ``resume.every`` epochs
    (and when stopped) the resume state goes to ``resume``.

    Raises DivergedError when the training loss or the validation predictions stop being
    finite.
    """
    lr = param_float(params, "lr")
    batch_size = param_int(params, "batch_size")
    patience = param_int(params, "patience")
    grad_clip = param_float(params, "grad_clip")
    for step in range(progress.resumed_from + 1, config.max_epochs + 1):
        epoch_started = time.perf_counter()
        train_loss, samples = train_epoch(learner, inputs, data.train_rows, batch_size, grad_clip)
        _check_loss(train_loss, step, lr)
        metrics = measure_validation(learner.model, inputs, data)
        _check_metrics(metrics, step, lr)
        value = metrics[config.objective_metric]
        progress.record(step, value, metrics, learner.model, config.objective_direction)
        if checkpoints is not None and checkpoints.wants(value):
            checkpoints.save(
                step, value, _checkpoint(config, params, data, inputs, metrics, learner)
            )
        learner.schedule.end_of_epoch(value)
        result = EpochResult(
            step=step,
            train_loss=train_loss,
            valid_metrics=metrics,
            seconds=time.perf_counter() - epoch_started,
            samples=samples,
        )
        go_on = on_epoch(result)
        # Saved every few epochs, and when stopped (a drained trainer's trial resumes here).
        if (
            resume is not None
            and step < config.max_epochs
            and (not go_on or step % max(resume.every, 1) == 0)
        ):
            resume.save(_resume_state(config, step, learner, progress))
        if not go_on:
            progress.stopped = True
            break
        if patience > 0 and step - progress.best_step >= patience:
            break  # early stopping: no validation improvement for `patience` epochs


def _check_loss(train_loss: float, step: int, lr: float) -> None:
    if not math.isfinite(train_loss):
        raise DivergedError(
            f"training loss became {train_loss} at epoch {step}; lower lr (now {lr:g}) "
            "or use a smaller model"
        )


def _check_metrics(metrics: Mapping[str, float], step: int, lr: float) -> None:
    if not all(math.isfinite(v) for v in metrics.values()):
        raise DivergedError(
            f"validation predictions became non-finite at epoch {step} (metrics "
            f"{metrics}); lower lr (now {lr:g}) or use a smaller model"
        )


def _checkpoint(
    config: TrainConfig,
    params: Mapping[str, object],
    data: TrialData,
    inputs: DeviceData,
    metrics: Mapping[str, float],
    learner: Learner,
) -> dict[str, Any]:
    """The checkpoint of the learner's model after an epoch that measured ``metrics``."""
    return checkpoint_payload(
        model_name=config.model,
        params=params,
        in_features=inputs.in_features,
        edge_features=inputs.edge_features,
        model=learner.model,
        y_mean=data.y_mean,
        y_std=data.y_std,
        metric=config.objective_metric,
        valid_metrics=metrics,
        dataset=config.dataset,
        split=[config.split, config.split_seed, config.valid_fraction, config.test_fraction],
        # what trainer.predict needs to featurise new SMILES like these
        inputs=checkpoint_inputs(data.featurizer, data.features, data.train_rows, data.table),
        data_request=data_request_dict(data.request),
        max_molecules=config.max_molecules,
    )


def _resume_state(
    config: TrainConfig, step: int, learner: Learner, progress: Progress
) -> dict[str, Any]:
    """The resume state of the trial after epoch ``step``."""
    return resume_state(
        model_name=config.model,
        epoch=step,
        model=learner.model,
        optimizer=learner.optimizer,
        schedule=learner.schedule,
        order_rng=learner.order_rng,
        best_step=progress.best_step,
        best_value=progress.best_value,
        best_metrics=progress.best_metrics,
        best_state=progress.best_state,
    )
