"""SchNet (Schütt, Kindermans, Sauceda, Chmiela, Tkatchenko & Müller, "SchNet: A
continuous-filter convolutional neural network for modeling quantum interactions", NeurIPS
2017) through ``torch_geometric.nn.models.SchNet``.

PyG builds SchNet's neighbour graph with ``radius_graph``, which needs torch-cluster; here the
graph comes from ``trainer.models.geometry.molecule_pairs`` instead (all atom pairs of a
molecule closer than ``cutoff``), so no extra package is needed. Unlike ``radius_graph`` there
is no cap on the number of neighbours per atom. The output layer starts at zero (every
prediction starts at the standardised mean); SchNet.reset_parameters would undo that.

``forward`` runs PyG's layers in PyG's order but passes the number of molecules to the readout
(PyG's own forward reads it back from the device in every batch) and takes the batch's pairs
from a ``PairTable`` when the caller has one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.models import SchNet as PygSchNet

from trainer.models.geometry import molecule_pairs


class _PairGraph(nn.Module):
    """SchNet's ``interaction_graph``: (pos, batch) -> (edge_index, edge_weight)."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos [n_atoms, 3], batch [n_atoms] -> edge_index [2, n_edges], distance [n_edges]."""
        return molecule_pairs(pos, batch, self.cutoff)


class SchNet(nn.Module):
    """SchNet regressor on (atomic numbers, positions) with a sum or mean readout."""

    def __init__(
        self,
        hidden_channels: int,
        num_filters: int,
        num_interactions: int,
        num_gaussians: int,
        cutoff: float,
        readout: str,
    ) -> None:
        super().__init__()
        self.net = PygSchNet(
            hidden_channels=hidden_channels,
            num_filters=num_filters,
            num_interactions=num_interactions,
            num_gaussians=num_gaussians,
            cutoff=cutoff,
            interaction_graph=_PairGraph(cutoff),
            readout=readout,
        )
        # as in the EGNN: start every prediction at the mean, so the sum readout of tens of
        # atoms does not begin with huge errors on standardised targets
        nn.init.zeros_(self.net.lin2.weight)

    @property
    def cutoff(self) -> float:
        """The interaction radius in Å (pairs farther apart are not connected)."""
        return float(self.net.cutoff)

    def forward(
        self,
        z: torch.Tensor,
        pos: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        pairs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z [n_atoms], pos [n_atoms, 3], batch [n_atoms], pairs [2, n_edges] (the batch's
        ``molecule_pairs`` at ``cutoff``; None: found here) -> predictions [num_graphs]."""
        net = self.net
        h = net.embedding(z)
        if pairs is None:
            edge_index, distance = molecule_pairs(pos, batch, self.cutoff)
        else:
            edge_index = pairs
            distance = (pos[pairs[0]] - pos[pairs[1]]).norm(dim=-1)
        expanded = net.distance_expansion(distance)
        for interaction in net.interactions:
            h = h + interaction(h, edge_index, distance, expanded)
        h = net.lin2(net.act(net.lin1(h)))
        out: torch.Tensor = net.readout(h, batch, dim=0, dim_size=num_graphs)
        return out.reshape(num_graphs)
