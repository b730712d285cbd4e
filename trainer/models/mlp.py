"""The dense network of Nguyen & Liu's hyperparameter-optimisation study for molecular
property prediction: fully connected layers, each followed by LeakyReLU and dropout, whose
number, widths, slopes and dropout rates are all tuned, on a vector of molecular descriptors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from molhpo.contract.catalogue import param_float, param_int
from molhpo.contract.errors import InvalidConfigError


class SeededDropout(nn.Module):
    """Dropout whose masks come from the layer's own random generator.

    ``nn.Dropout`` draws from torch's process-wide generator, so trials training at the same
    time in threads of one process would disturb each other's masks and no trial would be
    reproducible. This layer takes its seed from the global generator once, at construction
    (which the training loop does under a lock right after seeding), and then draws masks from
    a private ``torch.Generator`` on the input's device. Same scaling as ``nn.Dropout``:
    kept values are multiplied by 1 / (1 - p) during training; evaluation is the identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise InvalidConfigError(f"dropout is {p}; it must be in [0, 1), e.g. 0.1")
        self.p = p
        self.seed = int(torch.randint(0, 2**62, (1,)).item())
        self._generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [*] -> [*] (same shape)."""
        if not self.training or self.p == 0.0:
            return x
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device)
            self._generator.manual_seed(self.seed)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self._generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(frozen=True)
class DenseLayerSpec:
    """One hidden layer: ``units`` outputs, LeakyReLU ``negative_slope``, ``dropout`` rate."""

    units: int
    negative_slope: float
    dropout: float


def layer_specs(params: Mapping[str, object]) -> list[DenseLayerSpec]:
    """The hidden layers described by resolved ``mlp`` hyperparameters.

    The first layer uses ``units``/``negative_slope``/``dropout``; extra layer i (1-based, up to
    ``num_extra_layers``) uses ``units_{i}``/``negative_slope_{i}``/``dropout_{i}``. Parameters
    of layers beyond ``num_extra_layers`` are ignored (they are conditional).
    """

    def spec(suffix: str) -> DenseLayerSpec:
        return DenseLayerSpec(
            units=param_int(params, f"units{suffix}"),
            negative_slope=param_float(params, f"negative_slope{suffix}"),
            dropout=param_float(params, f"dropout{suffix}"),
        )

    extra = param_int(params, "num_extra_layers")
    return [spec("")] + [spec(f"_{i}") for i in range(1, extra + 1)]


class MLP(nn.Module):
    """Dense regression network: [Linear -> LeakyReLU -> Dropout] per hidden layer, then a
    Linear to one output."""

    def __init__(self, in_features: int, layers: Sequence[DenseLayerSpec]) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width = in_features
        for layer in layers:
            modules += [
                nn.Linear(width, layer.units),
                nn.LeakyReLU(layer.negative_slope),
                SeededDropout(layer.dropout),
            ]
            width = layer.units
        modules.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, in_features] -> predictions [batch]."""
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out
