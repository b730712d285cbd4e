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

The self-loops both papers add are appended here (``with_self_loops``), not by PyG's layers:
PyG first drops existing loops with a boolean mask, whose output size the host must read back
from the device in every layer of every batch. Molecular graphs have no loops, so appending
one per node gives the same edges in the same order. Likewise Attentive FP's forward passes
the number of molecules to its first readout instead of letting PyG read it back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, global_add_pool
from torch_geometric.nn.models import AttentiveFP

from molhpo.contract.errors import InvalidConfigError
from trainer.models.gin import POOLINGS
from trainer.models.mlp import SeededDropout


def with_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """edge_index [2, n_edges] of a graph without self-loops -> [2, n_edges + num_nodes], the
    same edges followed by one loop (i, i) per node, as PyG's ``add_self_loops`` orders them."""
    loops = torch.arange(num_nodes, device=edge_index.device).unsqueeze(0).expand(2, -1)
    return torch.cat([edge_index, loops], dim=1)


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
            self.convs.append(GCNConv(width, hidden_channels, add_self_loops=False))
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
        edge_index = with_self_loops(edge_index, x.shape[0])
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
            self.convs.append(
                GATConv(width, per_head, heads=heads, concat=True, add_self_loops=False)
            )
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
        edge_index = with_self_loops(edge_index, x.shape[0])
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
        batch [n_nodes] -> predictions [num_graphs].

        ``AttentiveFP.forward`` step by step, with ``num_graphs`` given to the first readout.
        """
        net, p, training = self.net, self.net.dropout, self.training
        x = F.leaky_relu_(net.lin1(x))
        h = F.elu_(net.gate_conv(x, edge_index, edge_attr))
        h = F.dropout(h, p=p, training=training)
        x = net.gru(h, x).relu_()
        for conv, gru in zip(net.atom_convs, net.atom_grus, strict=True):
            h = F.dropout(F.elu(conv(x, edge_index)), p=p, training=training)
            x = gru(h, x).relu()
        # the molecule level: a super node per molecule attends over its atoms
        atom_to_molecule = torch.stack([torch.arange(batch.shape[0], device=batch.device), batch])
        out = global_add_pool(x, batch, size=num_graphs).relu_()
        for _ in range(net.num_timesteps):
            h = F.elu_(net.mol_conv((x, out), atom_to_molecule))
            h = F.dropout(h, p=p, training=training)
            out = net.mol_gru(h, out).relu_()
        out = F.dropout(out, p=p, training=training)
        pred: torch.Tensor = net.lin2(out).squeeze(-1)
        return pred
