"""Message-passing graph regressors on the molecular graph, each after its paper.

- ``GCN``: Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks",
  ICLR 2017: symmetric-normalised graph convolutions with self-loops, ReLU and dropout. Bond
  features are not used (the paper's propagation rule has none).
- ``GAT``: Veličković et al., "Graph Attention Networks", ICLR 2018: multi-head attention over
  neighbours, heads concatenated in every layer (width ``heads * (hidden_channels // heads)``),
  ELU between layers. No bond features. The paper's dropout on attention coefficients is left
  out (PyG draws it from torch's global generator, which would make concurrent trials
  irreproducible); ``dropout`` acts on the node features instead.
- ``AttentiveFPRegressor``: Xiong et al., "Pushing the Boundaries of Molecular Representation
  for Drug Discovery with the Graph Attention Mechanism", J. Med. Chem. 2020, through
  ``torch_geometric.nn.models.AttentiveFP`` with bond features. Its readout is the paper's own:
  a virtual super node attending over the atoms for ``num_timesteps`` GRU steps, so it has no
  ``pooling`` choice. Its dropout comes from torch's global generator (inside PyG).

GCN and GAT pool the last layer's node states with ``pooling`` and finish with the same dense
head as the GIN (Linear -> ReLU -> Dropout -> Linear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv
from torch_geometric.nn.models import AttentiveFP

from molhpo.errors import InvalidConfigError
from trainer.models.gin import POOLINGS
from trainer.models.mlp import SeededDropout


def _head(width: int, hidden_channels: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width, hidden_channels),
        nn.ReLU(),
        SeededDropout(dropout),
        nn.Linear(hidden_channels, 1),
    )


class GCN(nn.Module):
    """Graph convolutional network regressor (Kipf & Welling 2017)."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_layers: int,
        dropout: float,
        pooling: str,
    ) -> None:
        super().__init__()
        self.pool = POOLINGS[pooling]
        self.convs = nn.ModuleList()
        self.dropouts = nn.ModuleList()
        width = in_channels
        for _ in range(num_layers):
            self.convs.append(GCNConv(width, hidden_channels))
            self.dropouts.append(SeededDropout(dropout))
            width = hidden_channels
        self.head = _head(hidden_channels, hidden_channels, dropout)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """x [n_nodes, in_channels], edge_index [2, n_edges], edge_attr [n_edges, B] (unused),
        batch [n_nodes] -> predictions [num_graphs]."""
        h = x
        for conv, dropout in zip(self.convs, self.dropouts, strict=True):
            h = dropout(F.relu(conv(h, edge_index)))
        out: torch.Tensor = self.head(self.pool(h, batch, size=num_graphs)).squeeze(-1)
        return out


class GAT(nn.Module):
    """Graph attention network regressor (Veličković et al. 2018)."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_layers: int,
        heads: int,
        dropout: float,
        pooling: str,
    ) -> None:
        super().__init__()
        if hidden_channels < heads:
            raise InvalidConfigError(
                f"hidden_channels is {hidden_channels} but heads is {heads}; each head needs "
                "at least one channel, so make hidden_channels >= heads"
            )
        self.pool = POOLINGS[pooling]
        per_head = hidden_channels // heads
        self.convs = nn.ModuleList()
        self.dropouts = nn.ModuleList()
        width = in_channels
        for _ in range(num_layers):
            self.convs.append(GATConv(width, per_head, heads=heads, concat=True))
            self.dropouts.append(SeededDropout(dropout))
            width = per_head * heads
        self.head = _head(width, hidden_channels, dropout)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """x [n_nodes, in_channels], edge_index [2, n_edges], edge_attr [n_edges, B] (unused),
        batch [n_nodes] -> predictions [num_graphs]."""
        h = x
        for conv, dropout in zip(self.convs, self.dropouts, strict=True):
            h = dropout(F.elu(conv(h, edge_index)))
        out: torch.Tensor = self.head(self.pool(h, batch, size=num_graphs)).squeeze(-1)
        return out


class AttentiveFPRegressor(nn.Module):
    """Attentive FP (Xiong et al. 2020) with bond features and its super-node readout."""

    def __init__(
        self,
        in_channels: int,
        edge_channels: int,
        hidden_channels: int,
        num_layers: int,
        num_timesteps: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if edge_channels < 1:
            raise InvalidConfigError(
                f"attentivefp needs bond features but got edge_features={edge_channels}; "
                "use the graph featurizer"
            )
        self.net = AttentiveFP(
            in_channels=in_channels,
            hidden_channels=hidden_channels,
            out_channels=1,
            edge_dim=edge_channels,
            num_layers=num_layers,
            num_timesteps=num_timesteps,
            dropout=dropout,
        )

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """x [n_nodes, in_channels], edge_index [2, n_edges], edge_attr [n_edges, B],
        batch [n_nodes] -> predictions [num_graphs]."""
        out: torch.Tensor = self.net(x, edge_index, edge_attr, batch).squeeze(-1)
        return out
