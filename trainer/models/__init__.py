"""Model families (named after their papers) and the registry that builds them by name."""

from __future__ import annotations

from trainer.models.cnn import SmilesCNN
from trainer.models.egnn import EGNN
from trainer.models.gin import GIN
from trainer.models.gnn import GAT, GCN, AttentiveFPRegressor
from trainer.models.mlp import MLP
from trainer.models.registry import MODEL_BUILDERS, build_model
from trainer.models.schnet import SchNet

__all__ = [
    "EGNN",
    "GAT",
    "GCN",
    "GIN",
    "MLP",
    "MODEL_BUILDERS",
    "AttentiveFPRegressor",
    "SchNet",
    "SmilesCNN",
    "build_model",
]
