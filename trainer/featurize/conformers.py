"""3D conformers (atomic numbers and coordinates) for the geometric models (EGNN, SchNet).

Each molecule gets its hydrogens and one conformer from RDKit's ETKDG (v3) distance-geometry
embedding with a fixed random seed, so features are reproducible, then a force-field
optimisation (MMFF94 when it has parameters for every atom, else UFF; skipped when neither
works). Embedding can fail for strained or unusual molecules; those fall back to RDKit's 2D
depiction coordinates with z = 0 and are counted in ``ConformerFeatures.n_fallback``, so a
trial can see how many molecules are flat instead of failing.

A data set that ships its own geometries (a table with a ``conformers`` attribute, e.g. QM9's
DFT-optimised structures) is used as is instead of being embedded (``conformers_from_table``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdDepictor, rdDistGeom, rdForceFieldHelpers

from molhpo.contract.errors import InvalidArgument
from trainer.featurize.graphs import ptr_on, segment_rows, segment_total

EMBED_SEED = 0xF00D
"""Random seed of every ETKDG embedding (features must not depend on the trial's seed)."""


class Conformer(Protocol):
    """One molecule's geometry as a data set may ship it: ``z`` [n_atoms] atomic numbers,
    ``pos`` [n_atoms, 3] coordinates in Ångström."""

    @property
    def z(self) -> np.ndarray: ...

    @property
    def pos(self) -> np.ndarray: ...


@dataclass(frozen=True)
class ConformerBatch:
    """A batch of molecules as one point cloud.

    z [n_atoms] (int64 atomic numbers), pos [n_atoms, 3] (float32, Å), batch [n_atoms] (molecule
    of each atom, 0..num_graphs-1), num_graphs: molecules in the batch.
    """

    z: torch.Tensor
    pos: torch.Tensor
    batch: torch.Tensor
    num_graphs: int


@dataclass(frozen=True)
class PackedConformers:
    """All conformers of a data set in flat tensors, for fast batching (like ``PackedGraphs``).

    z [total_atoms] (int64) and pos [total_atoms, 3] (float32) are the molecules' atoms one after
    another; molecule g owns rows node_ptr[g]:node_ptr[g+1] (numpy int64, [n_molecules + 1]).
    ``ptr_on_device`` is node_ptr as a tensor on the device of z, set by ``to`` (None: made from
    the numpy array at every ``batch``).
    """

    z: torch.Tensor
    pos: torch.Tensor
    node_ptr: np.ndarray
    ptr_on_device: torch.Tensor | None = None

    @property
    def num_graphs(self) -> int:
        return len(self.node_ptr) - 1

    def to(self, device: torch.device | str) -> PackedConformers:
        """The same conformers with their tensors (and offsets) on ``device``."""
        device = torch.device(device)
        return PackedConformers(
            z=self.z.to(device),
            pos=self.pos.to(device),
            node_ptr=self.node_ptr,
            ptr_on_device=ptr_on(self.node_ptr, device),
        )

    def batch(self, graph_ids: np.ndarray, on_device: torch.Tensor | None = None) -> ConformerBatch:
        """Molecules ``graph_ids`` (in that order) as one ConformerBatch; ``on_device``: the
        same ids already on the device of z (see ``PackedGraphs.batch``)."""
        ids = np.asarray(graph_ids, dtype=np.int64)
        device = self.z.device
        ptr = ptr_on(self.node_ptr, device) if self.ptr_on_device is None else self.ptr_on_device
        ids_t = torch.from_numpy(ids).to(device) if on_device is None else on_device
        rows, batch, _ = segment_rows(ptr, ids_t, segment_total(self.node_ptr, ids))
        return ConformerBatch(z=self.z[rows], pos=self.pos[rows], batch=batch, num_graphs=len(ids))


@dataclass(frozen=True)
class ConformerFeatures:
    """Conformers of a data set, packed for batching; ``n_fallback`` molecules have flat 2D
    coordinates (z = 0) because 3D embedding failed."""

    packed: PackedConformers
    n_fallback: int = 0

    @property
    def num_features(self) -> int:
        """Input width reported to model builders: 1 (models embed the atomic number)."""
        return 1


def _optimise(mol: Chem.Mol) -> None:
    """MMFF94 optimisation of ``mol``'s conformer, else UFF, else none (in place)."""
    try:
        if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
            rdForceFieldHelpers.MMFFOptimizeMolecule(mol, maxIters=500)
        elif rdForceFieldHelpers.UFFHasAllMoleculeParams(mol):
            rdForceFieldHelpers.UFFOptimizeMolecule(mol, maxIters=500)
    except (RuntimeError, ValueError):  # a failed optimisation keeps the embedded geometry
        pass


def embed(smiles: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Atomic numbers [n_atoms] (int64), coordinates [n_atoms, 3] (float32) and whether the 3D
    embedding worked, for one SMILES with explicit hydrogens."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InvalidArgument(
            f"RDKit cannot parse SMILES {smiles!r}; drop it from the table before featurising"
        )
    mol = Chem.AddHs(mol)
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = EMBED_SEED  # type: ignore[assignment]  # (wrong rdkit stub)
    params.numThreads = 1  # type: ignore[assignment]
    embedded = rdDistGeom.EmbedMolecule(mol, params) == 0
    if not embedded:
        params.useRandomCoords = True  # type: ignore[assignment]  # retry for hard cases
        embedded = rdDistGeom.EmbedMolecule(mol, params) == 0
    if embedded:
        _optimise(mol)
        pos = mol.GetConformer().GetPositions()
    else:
        rdDepictor.Compute2DCoords(mol)
        pos = mol.GetConformer().GetPositions()
        pos[:, 2] = 0.0
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return z, np.asarray(pos, dtype=np.float32).reshape(-1, 3), embedded


def _pack(zs: Sequence[np.ndarray], positions: Sequence[np.ndarray]) -> PackedConformers:
    counts = np.array([len(z) for z in zs], dtype=np.int64)
    return PackedConformers(
        z=torch.from_numpy(np.concatenate(zs).astype(np.int64))
        if zs
        else torch.zeros(0, dtype=torch.long),
        pos=torch.from_numpy(np.concatenate(positions).astype(np.float32).reshape(-1, 3))
        if positions
        else torch.zeros(0, 3),
        node_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )


def compute_conformers(smiles: list[str]) -> ConformerFeatures:
    """An embedded, force-field optimised conformer of every SMILES (see the module doc)."""
    zs: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    n_fallback = 0
    with rdBase.BlockLogs():
        for smi in smiles:
            z, pos, embedded = embed(smi)
            zs.append(z)
            positions.append(pos)
            n_fallback += not embedded
    return ConformerFeatures(packed=_pack(zs, positions), n_fallback=n_fallback)


def conformers_from_table(conformers: Sequence[Conformer]) -> ConformerFeatures:
    """The geometries a data set ships (one per molecule, in table order), packed."""
    zs = [np.asarray(c.z, dtype=np.int64).reshape(-1) for c in conformers]
    positions = [np.asarray(c.pos, dtype=np.float32).reshape(-1, 3) for c in conformers]
    for i, (z, pos) in enumerate(zip(zs, positions, strict=True)):
        if len(z) != len(pos) or len(z) == 0:
            raise InvalidArgument(
                f"conformer {i} has {len(z)} atomic numbers and {len(pos)} positions; each "
                "molecule needs one position per atom and at least one atom"
            )
    return ConformerFeatures(packed=_pack(zs, positions))
