"""Training of one trial (``train``) and the regression metrics it reports."""

from __future__ import annotations

from trainer.training.loop import EpochResult, TrainConfig, TrainResult, train
from trainer.training.metrics import regression_metrics

__all__ = ["EpochResult", "TrainConfig", "TrainResult", "regression_metrics", "train"]
