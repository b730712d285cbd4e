"""Atom pairs of 3D point clouds, for the geometric models (EGNN, SchNet).

PyG's ``radius_graph`` needs the optional torch-cluster package, which the trainer does not
depend on. Molecules are small (tens of atoms), so every ordered pair of atoms of the same
molecule is enumerated with tensor arithmetic and, given a cutoff, filtered by distance.

The pairs of a molecule depend only on its input geometry and the cutoff, both fixed during a
trial, so training does not rebuild them batch after batch: ``pair_table`` finds every
molecule's pairs once per trial, and ``PairTable.batch`` gathers a batch's pairs by index
arithmetic on the device. Building them from scratch (``molecule_pairs``) needs a count, a
repeat and a distance filter whose output sizes depend on the data, and each of those makes
the host wait for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer.featurize.graphs import ptr_on, segment_rows, segment_total

PAIR_CHUNK = 1 << 22
"""Candidate pairs (atoms squared, summed over molecules) enumerated at once by ``pair_table``."""


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


@dataclass(frozen=True)
class PairTable:
    """The atom pairs of every molecule of a data set for one cutoff, on one device.

    ``index`` [2, total_pairs] (int32) holds (receiver, sender) atom indices local to each
    molecule, in ``molecule_pairs`` order; molecule g owns columns pair_ptr[g]:pair_ptr[g+1]
    (``pair_ptr`` numpy int64 [n_molecules + 1], ``pair_ptr_t`` the same on the device) and
    atoms node_ptr[g]:node_ptr[g+1] of its packed conformers (``node_ptr_t``, on the device).
    """

    cutoff: float
    index: torch.Tensor
    pair_ptr: np.ndarray
    pair_ptr_t: torch.Tensor
    node_ptr_t: torch.Tensor

    def batch(self, ids: np.ndarray, on_device: torch.Tensor) -> torch.Tensor:
        """Edge index [2, n_pairs] of molecules ``ids`` (``on_device``: the same ids on the
        table's device) in the atom numbering of ``PackedConformers.batch(ids)``; equal to
        ``molecule_pairs`` of that batch, built without waiting for the device."""
        rows, owner, _ = segment_rows(self.pair_ptr_t, on_device, segment_total(self.pair_ptr, ids))
        counts = self.node_ptr_t[on_device + 1] - self.node_ptr_t[on_device]
        first_atom = torch.cumsum(counts, 0) - counts
        return self.index[:, rows].long() + first_atom[owner]


def pair_table(pos: torch.Tensor, node_ptr: np.ndarray, cutoff: float) -> PairTable:
    """The pairs of every molecule of packed conformers (pos [total_atoms, 3]; molecule g owns
    rows node_ptr[g]:node_ptr[g+1]) for ``cutoff`` (0: all pairs), on the device of ``pos``.

    Molecules are taken in chunks of about PAIR_CHUNK candidate pairs, which bounds the memory
    used on the way. Runs once per trial and reads sizes back from the device.
    """
    device = pos.device
    counts = np.diff(node_ptr)
    parts: list[torch.Tensor] = []
    pair_counts: list[np.ndarray] = []
    start = 0
    squares = np.cumsum(np.concatenate([[0], counts**2]))
    while start < len(counts):
        # the largest stop with at most PAIR_CHUNK candidates (always at least one molecule)
        stop = int(np.searchsorted(squares, squares[start] + PAIR_CHUNK, side="right")) - 1
        stop = max(stop, start + 1)
        a, b = int(node_ptr[start]), int(node_ptr[stop])
        molecules = torch.repeat_interleave(
            torch.arange(stop - start, device=device),
            torch.from_numpy(counts[start:stop]).to(device),
        )
        edge_index, _ = molecule_pairs(pos[a:b], molecules, cutoff)
        owner = molecules[edge_index[0]]
        first = torch.from_numpy(node_ptr[start:stop] - a).to(device)
        parts.append((edge_index - first[owner]).to(torch.int32))
        pair_counts.append(torch.bincount(owner, minlength=stop - start).cpu().numpy())
        start = stop
    per_molecule = np.concatenate(pair_counts) if pair_counts else np.zeros(0, dtype=np.int64)
    pair_ptr = np.concatenate([[0], np.cumsum(per_molecule)]).astype(np.int64)
    index = torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.int32)
    return PairTable(
        cutoff=cutoff,
        index=index.to(device),
        pair_ptr=pair_ptr,
        pair_ptr_t=ptr_on(pair_ptr, device),
        node_ptr_t=ptr_on(np.ascontiguousarray(node_ptr, dtype=np.int64), device),
    )
