"""A trial's inputs on its device, behind one ``predict(model, rows, on_device)`` for every
input kind (descriptors, graphs, one-hot SMILES, 3D conformers).

The features are the shared device copies of ``trainer.featurize.on_device`` (one per content
and device for all slots of a trainer), and a batch is gathered from them on the device, so the
host queues batch after batch without waiting for the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from trainer.featurize import (
    ConformerFeatures,
    DescriptorFeatures,
    GraphFeatures,
    SmilesFeatures,
    on_device,
    standardization,
)
from trainer.models.geometry import PairTable, pair_table
from trainer.training.data import TrialData


class PredictFn(Protocol):
    def __call__(
        self, model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predictions [len(rows)] of ``model`` for molecules ``rows``; ``on_device``: the same
        row numbers already on the device (else they are copied there)."""


def _nothing_to_prepare(model: nn.Module) -> None:
    return None


@dataclass
class DeviceData:
    """A trial's inputs on its device, behind one ``predict(model, rows, on_device)`` for every
    input kind.

    ``y`` [n] holds the standardised targets of every molecule (float32, on the device).
    ``prepare(model)`` builds, before the first batch, what batches of this model need beyond
    the features (the pair table of a geometric model); ``predict`` would otherwise build it
    on first use.

    The features themselves are the shared device copies of ``trainer.featurize.on_device``
    (one per content and device for all slots), and a batch is gathered from them on the
    device: given the rows there, ``predict`` copies nothing from the host and reads nothing
    back, so the host queues batch after batch without waiting for the device.
    """

    predict: PredictFn
    y: torch.Tensor
    in_features: int
    edge_features: int
    prepare: Callable[[nn.Module], None] = _nothing_to_prepare


def to_device(data: TrialData, device: torch.device) -> DeviceData:
    """The inputs of ``data`` on ``device``: its standardised targets and its features, of
    whichever kind they are."""
    y = torch.tensor((data.targets - data.y_mean) / data.y_std, dtype=torch.float32, device=device)
    features = data.features
    if isinstance(features, DescriptorFeatures):
        return descriptor_data(features, data.train_rows, y, device)
    if isinstance(features, SmilesFeatures):
        return smiles_data(features, y, device)
    if isinstance(features, ConformerFeatures):
        return conformer_data(features, y, device)
    return graph_data(features, y, device)


def host_to_device(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """``values`` as a tensor on ``device``. On CUDA through pinned memory with a non-blocking
    copy, so the host does not wait for the device (the pinned buffer is kept until the copy
    is done by torch's caching host allocator)."""
    host = torch.from_numpy(np.ascontiguousarray(values))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _rows_on(
    rows: np.ndarray, on_device: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    return host_to_device(rows, device) if on_device is None else on_device


def descriptor_data(
    features: DescriptorFeatures, train_rows: np.ndarray, y: torch.Tensor, device: torch.device
) -> DeviceData:
    # The raw descriptors (float64) are shared; each batch is standardised with this trial's
    # training statistics as ``standardize`` does, in float64, then cast to float32.
    raw = on_device(
        features,
        device,
        "values",
        lambda: torch.tensor(features.values, dtype=torch.float64, device=device),
    )
    mean, std = (
        host_to_device(v.astype(np.float64), device)
        for v in standardization(features.values, train_rows)
    )

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = (raw[_rows_on(rows, on_device, device)] - mean) / std
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).float()
        out: torch.Tensor = model(x)
        return out

    return DeviceData(predict=predict, y=y, in_features=features.num_features, edge_features=0)


def graph_data(features: GraphFeatures, y: torch.Tensor, device: torch.device) -> DeviceData:
    packed = on_device(features, device, "packed", lambda: features.packed.to(device))

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        b = packed.batch(rows, _rows_on(rows, on_device, device))
        out: torch.Tensor = model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
        return out

    return DeviceData(
        predict=predict,
        y=y,
        in_features=features.num_node_features,
        edge_features=features.num_edge_features,
    )


def smiles_data(features: SmilesFeatures, y: torch.Tensor, device: torch.device) -> DeviceData:
    tokens = on_device(features, device, "tokens", lambda: features.to(device))

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        out: torch.Tensor = model(tokens.one_hot(_rows_on(rows, on_device, device)))
        return out

    return DeviceData(predict=predict, y=y, in_features=features.num_features, edge_features=0)


def conformer_data(
    features: ConformerFeatures, y: torch.Tensor, device: torch.device
) -> DeviceData:
    packed = on_device(features, device, "packed", lambda: features.packed.to(device))
    tables: dict[float, PairTable] = {}  # this trial's pair graphs, by cutoff

    def pairs_of(model: nn.Module) -> PairTable | None:
        cutoff = getattr(model, "cutoff", None)
        if cutoff is None:
            return None
        if cutoff not in tables:
            tables[cutoff] = pair_table(packed.pos, packed.node_ptr, float(cutoff))
        return tables[cutoff]

    def prepare(model: nn.Module) -> None:
        pairs_of(model)

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        ids = _rows_on(rows, on_device, device)
        b = packed.batch(rows, ids)
        table = pairs_of(model)
        pairs = None if table is None else table.batch(rows, ids)
        out: torch.Tensor = model(b.z, b.pos, b.batch, b.num_graphs, pairs)
        return out

    return DeviceData(
        predict=predict, y=y, in_features=features.num_features, edge_features=0, prepare=prepare
    )
