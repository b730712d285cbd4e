"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling, "E(n) Equivariant
Graph Neural Networks", ICML 2021, arXiv:2102.09844) for molecular property regression.

Each Equivariant Graph Convolutional Layer (EGCL) updates node features h and coordinates x
with the paper's equations (3)-(6):

    m_ij   = phi_e(h_i, h_j, ||x_i - x_j||^2)
    x_i   <- x_i + C * sum_{j != i} (x_i - x_j) * phi_x(m_ij)
    m_i    = sum_{j != i} m_ij
    h_i   <- h_i + phi_h(h_i, m_i)            (residual form, as in the authors' code)

with C = 1 / (number of neighbours of i), the mean the authors use. Edges connect every pair of
atoms of a molecule, or only pairs closer than ``cutoff`` in the input geometry (the graph is
fixed for all layers). h starts as an embedding of the atomic number. Since h only sees
distances, the prediction (a pool of the final h, then an MLP) is invariant to rotations,
reflections and translations of the input, and the updated coordinates are equivariant.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import global_add_pool, global_mean_pool

from trainer.models.geometry import molecule_pairs
from trainer.models.mlp import SeededDropout

MAX_ATOMIC_NUMBER = 100
"""Atomic numbers at or above this share the last embedding row."""


class EGCL(nn.Module):
    """One Equivariant Graph Convolutional Layer (paper section 3)."""

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        self.phi_e = nn.Sequential(
            nn.Linear(2 * hidden_channels + 1, hidden_channels),
            nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels),
            nn.SiLU(),
        )
        last = nn.Linear(hidden_channels, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)  # small first steps, as the authors do
        self.phi_x = nn.Sequential(nn.Linear(hidden_channels, hidden_channels), nn.SiLU(), last)
        self.phi_h = nn.Sequential(
            nn.Linear(2 * hidden_channels, hidden_channels),
            nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels),
        )

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [n_atoms, hidden], x [n_atoms, 3], edge_index [2, n_edges] (row i receives from
        column j) -> (h [n_atoms, hidden], x [n_atoms, 3])."""
        i, j = edge_index[0], edge_index[1]
        diff = x[i] - x[j]  # [n_edges, 3]
        squared = (diff**2).sum(dim=-1, keepdim=True)  # [n_edges, 1]
        m = self.phi_e(torch.cat([h[i], h[j], squared], dim=-1))  # [n_edges, hidden]
        weight = self.phi_x(m)  # [n_edges, 1]
        degree = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        degree.index_add_(0, i, torch.ones_like(weight, dtype=x.dtype))
        shift = torch.zeros_like(x).index_add_(0, i, (diff * weight).to(x.dtype))
        x = x + shift / degree.clamp(min=1.0)
        # Messages are averaged, not summed as in the paper: with every atom connected, sums
        # grow with molecule size and training diverged on the larger solubility molecules.
        m_i = torch.zeros_like(h).index_add_(0, i, m.to(h.dtype)) / degree.clamp(min=1.0).to(
            h.dtype
        )
        h = h + self.phi_h(torch.cat([h, m_i], dim=-1))
        return h, x


class EGNN(nn.Module):
    """Atom embedding, ``num_layers`` EGCLs, invariant sum/mean readout and an MLP head."""

    def __init__(
        self,
        hidden_channels: int,
        num_layers: int,
        dropout: float,
        pooling: str,
        cutoff: float,
    ) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.pool = global_add_pool if pooling == "add" else global_mean_pool
        self.embedding = nn.Embedding(MAX_ATOMIC_NUMBER, hidden_channels)
        self.layers = nn.ModuleList(EGCL(hidden_channels) for _ in range(num_layers))
        self.dropout = SeededDropout(dropout)
        out_layer = nn.Linear(hidden_channels, 1)
        # the sum readout of tens of atoms starts large; a zero last layer starts every
        # prediction at the (standardised) mean, which keeps the first epochs stable
        nn.init.zeros_(out_layer.weight)
        self.head = nn.Sequential(nn.Linear(hidden_channels, hidden_channels), nn.SiLU(), out_layer)

    def encode(
        self,
        z: torch.Tensor,
        pos: torch.Tensor,
        batch: torch.Tensor,
        pairs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final node features (invariant) and coordinates (equivariant).

        z [n_atoms] atomic numbers, pos [n_atoms, 3], batch [n_atoms], pairs [2, n_edges] (the
        batch's ``molecule_pairs`` at ``self.cutoff``, e.g. from a ``PairTable``; None: found
        here) -> (h [n_atoms, hidden], x [n_atoms, 3]).
        """
        edge_index = molecule_pairs(pos, batch, self.cutoff)[0] if pairs is None else pairs
        h = self.embedding(z.clamp(max=MAX_ATOMIC_NUMBER - 1))
        x = pos
        for layer in self.layers:
            h, x = layer(h, x, edge_index)
            h = self.dropout(h)
        return h, x

    def forward(
        self,
        z: torch.Tensor,
        pos: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        pairs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z [n_atoms], pos [n_atoms, 3], batch [n_atoms], pairs [2, n_edges] or None (see
        ``encode``) -> predictions [num_graphs]."""
        h, _ = self.encode(z, pos, batch, pairs)
        out: torch.Tensor = self.head(self.pool(h, batch, size=num_graphs)).squeeze(-1)
        return out
