"""How a trial's model learns: the optimiser, loss and learning-rate schedule its
hyperparameters choose (``catalogue.TRAINING_HYPERPARAMETERS``), and the :class:`Learner` that
holds them with the model on its device.

- ``optimizer``: adam (weight_decay as an L2 term) or adamw (decoupled weight decay).
- ``scheduler``: constant; cosine (CosineAnnealingLR stepped once per epoch, from lr down to
  ``final_lr_ratio * lr`` at epoch max_epochs); plateau (ReduceLROnPlateau on the validation
  objective, in its direction, with ``plateau_factor`` and ``plateau_patience``).
- ``loss``: mse, l1 or huber (delta 1), all on standardised targets.
- ``amp``: mixed precision for the hidden layers (``trainer.training.precision``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from molhpo.contract.catalogue import param_float, param_int
from molhpo.contract.enums import Direction
from trainer.placement import report_first_forward
from trainer.training.precision import MixedPrecision, autocast_dtype
from trainer.training.trial import TrainConfig


def make_optimizer(params: Mapping[str, object], model: nn.Module) -> torch.optim.Optimizer:
    lr = param_float(params, "lr")
    weight_decay = param_float(params, "weight_decay")
    if params["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def make_loss(name: object) -> nn.Module:
    if name == "l1":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss(delta=1.0)
    return nn.MSELoss()


class Schedule:
    """The learning-rate schedule of the recipe, stepped once per epoch (``end_of_epoch``)."""

    def __init__(
        self,
        params: Mapping[str, object],
        optimizer: torch.optim.Optimizer,
        max_epochs: int,
        direction: str,
    ) -> None:
        self.kind = str(params["scheduler"])
        self.cosine: torch.optim.lr_scheduler.CosineAnnealingLR | None = None
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        lr = param_float(params, "lr")
        if self.kind == "cosine":
            self.cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max_epochs, eta_min=param_float(params, "final_lr_ratio") * lr
            )
        elif self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min" if direction == Direction.MINIMIZE else "max",
                factor=param_float(params, "plateau_factor"),
                patience=param_int(params, "plateau_patience"),
                threshold=0.0,
            )

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (for resuming)."""
        if self.cosine is not None:
            return dict(self.cosine.state_dict())
        if self.plateau is not None:
            return dict(self.plateau.state_dict())
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        if self.cosine is not None and state:
            self.cosine.load_state_dict(state)
        elif self.plateau is not None and state:
            self.plateau.load_state_dict(state)

    def end_of_epoch(self, objective: float) -> None:
        """Advance the schedule after an epoch whose validation objective was ``objective``."""
        if self.cosine is not None:
            self.cosine.step()
        elif self.plateau is not None:
            self.plateau.step(objective)


@dataclass
class Learner:
    """A trial's model on its device with everything that updates it.

    ``autocast`` is the context of a training step's forward pass (``MixedPrecision.step``);
    ``scaler`` scales the loss for float16 autocast and does nothing otherwise; ``order_rng``
    draws the order of every epoch's batches.
    """

    model: nn.Module
    device: torch.device
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    autocast: Callable[[], AbstractContextManager[Any]]
    order_rng: np.random.Generator


def build_learner(
    model: nn.Module, config: TrainConfig, params: Mapping[str, object], device: torch.device
) -> Learner:
    """``model`` (just built from the trial's seed) moved to ``device``, with the optimiser,
    schedule, loss and mixed precision of the resolved hyperparameters ``params``, and the
    batch-order generator seeded with ``config.seed``."""
    model = model.to(device)
    report_first_forward(model, config.device)
    mixed = MixedPrecision(model, device.type, autocast_dtype(device) if params["amp"] else None)
    optimizer = make_optimizer(params, model)
    return Learner(
        model=model,
        device=device,
        optimizer=optimizer,
        schedule=Schedule(params, optimizer, config.max_epochs, config.objective_direction),
        loss_fn=make_loss(params["loss"]),
        # float16 autocast needs loss scaling against underflow; bfloat16 and float32 do not
        scaler=torch.amp.GradScaler("cuda", enabled=mixed.dtype == torch.float16),
        autocast=mixed.step,
        order_rng=np.random.default_rng(config.seed),
    )
