"""Graph Isomorphism Network (Xu, Hu, Leskovec & Jegelka, "How Powerful are Graph Neural
Networks?", ICLR 2019) for graph-level regression.

As in the paper: GIN-0 layers (epsilon fixed at 0) whose update is a two-layer MLP with batch
normalisation, and a graph readout that pools the node representations of every layer (the
input features included) and concatenates them. A small dense head (Linear -> ReLU -> Dropout ->
Linear) maps the readout to one prediction. GIN has no edge features, so bond features are not
used by this family.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GINConv, global_add_pool, global_max_pool, global_mean_pool

from trainer.models.mlp import SeededDropout

PoolFn = Callable[..., torch.Tensor]

POOLINGS: dict[str, PoolFn] = {
    "add": global_add_pool,
    "mean": global_mean_pool,
    "max": global_max_pool,
}
"""Graph readouts by name; "add" is the paper's sum readout."""


class NodeBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that accepts a training batch of a single row.

    A batch holding one single-atom molecule (methane with batch_size 1) has one node, and
    BatchNorm1d refuses to compute statistics of one value. For that case this layer normalises
    with its running statistics instead, as in evaluation, and leaves them unchanged.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """input [n_nodes, num_features] -> [n_nodes, num_features]."""
        if self.training and input.shape[0] == 1:
            return F.batch_norm(
                input,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                momentum=0.0,
                eps=self.eps,
            )
        return super().forward(input)


class GIN(nn.Module):
    """GIN-0 graph regressor with the paper's all-layer concatenated readout."""

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
        self.norms = nn.ModuleList()
        width = in_channels
        for _ in range(num_layers):
            update = nn.Sequential(
                nn.Linear(width, hidden_channels),
                NodeBatchNorm(hidden_channels),
                nn.ReLU(),
                nn.Linear(hidden_channels, hidden_channels),
            )
            self.convs.append(GINConv(update, eps=0.0, train_eps=False))
            self.norms.append(NodeBatchNorm(hidden_channels))
            width = hidden_channels
        readout = in_channels + num_layers * hidden_channels
        self.head = nn.Sequential(
            nn.Linear(readout, hidden_channels),
            nn.ReLU(),
            SeededDropout(dropout),
            nn.Linear(hidden_channels, 1),
        )

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """Predictions for a batch of graphs.

        x [n_nodes, in_channels], edge_index [2, n_edges], edge_attr [n_edges, B] (unused: GIN
        has no edge features), batch [n_nodes] (graph of each node) -> [num_graphs].
        """
        pooled = [self.pool(x, batch, size=num_graphs)]
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.relu(norm(conv(h, edge_index)))
            pooled.append(self.pool(h, batch, size=num_graphs))
        out: torch.Tensor = self.head(torch.cat(pooled, dim=-1)).squeeze(-1)
        return out
