"""Atom pairs of 3D point clouds, for the geometric models (EGNN, SchNet).

PyG's ``radius_graph`` needs the optional torch-cluster package, which the trainer does not
depend on. Molecules are small (tens of atoms), so every ordered pair of atoms of the same
molecule is enumerated with tensor arithmetic and, given a cutoff, filtered by distance.
"""

from __future__ import annotations

import torch


def molecule_pairs(
    pos: torch.Tensor, batch: torch.Tensor, cutoff: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges between distinct atoms of the same molecule, and their lengths.

    pos [n_atoms, 3], batch [n_atoms] (molecule of each atom; each molecule's atoms contiguous,
    as ``PackedConformers.batch`` makes them) -> edge_index [2, n_edges] (both directions of
    every pair, self-pairs excluded), distance [n_edges]. ``cutoff`` > 0 keeps only pairs
    closer than ``cutoff``; 0 keeps all pairs (fully connected molecules).
    """
    n_atoms = batch.shape[0]
    device = batch.device
    counts = torch.bincount(batch)
    first = torch.cumsum(counts, 0) - counts  # first atom of each molecule
    per_atom = counts[batch]  # partners of each atom, itself included
    row = torch.repeat_interleave(torch.arange(n_atoms, device=device), per_atom)
    offsets = torch.cumsum(per_atom, 0) - per_atom
    within = torch.arange(row.shape[0], device=device) - torch.repeat_interleave(offsets, per_atom)
    col = first[batch[row]] + within
    keep = row != col
    row, col = row[keep], col[keep]
    distance = (pos[row] - pos[col]).norm(dim=-1)
    if cutoff > 0.0:
        near = distance < cutoff
        row, col, distance = row[near], col[near], distance[near]
    return torch.stack([row, col]), distance
