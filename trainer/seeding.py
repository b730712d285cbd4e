"""Torch's global random generator, shared by the trials and predictors of one process.

Building a model initialises its weights from torch's global generator (``SeededDropout``
layers take their seeds from it too). Trials train in threads of one process and the generator
is global, so every model in a trainer is built under :data:`seed_lock`: a trial seeds the
generators and builds its model without another thread drawing in between, and a predictor
builds its model without moving a generator that a trial has just seeded.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from trainer.models import build_model

seed_lock = threading.Lock()
"""Held while a model is built (and, for a trial, while the global generators are seeded)."""


def build_seeded(
    model: str, params: Mapping[str, object], in_features: int, edge_features: int, seed: int
) -> nn.Module:
    """Model ``model`` built right after Python's, numpy's and torch's global generators were
    seeded with ``seed``: the same initial weights for the same seed, whatever other threads
    of the process do."""
    with seed_lock:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        return build_model(model, params, in_features, edge_features)


def build_to_load(
    model: str, params: Mapping[str, object], in_features: int, edge_features: int
) -> nn.Module:
    """Model ``model`` built for weights that will be loaded into it: its initialisation draws
    from torch's generator, which is put back as it was, so a prediction service does not
    disturb the reproducibility of the trials beside it."""
    with seed_lock, torch.random.fork_rng(devices=[]):
        return build_model(model, params, in_features, edge_features)
