"""Molecular graphs for the graph neural networks, and fast batching of them.

Atoms become nodes with one-hot features, bonds become two directed edges (one each way) with
bond features. RDKit does all the chemistry. Besides a ``torch_geometric.data.Data`` per
molecule, a data set's graphs are packed into a few flat tensors so a training batch is built by
index arithmetic instead of collating Python objects (``PackedGraphs.batch``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Data

from molhpo.contract.errors import InvalidArgument

ATOMIC_NUMBERS: tuple[int, ...] = (1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 35, 53)
"""H, B, C, N, O, F, Si, P, S, Cl, Br, I; any other element goes in an "other" bucket."""
DEGREES: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
FORMAL_CHARGES: tuple[int, ...] = (-2, -1, 0, 1, 2)
HYBRIDIZATIONS: tuple[Chem.HybridizationType, ...] = (
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2,
)
NUM_HS: tuple[int, ...] = (0, 1, 2, 3, 4)
BOND_TYPES: tuple[Chem.BondType, ...] = (
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)

NUM_ATOM_FEATURES = (
    sum(len(t) + 1 for t in (ATOMIC_NUMBERS, DEGREES, FORMAL_CHARGES, HYBRIDIZATIONS, NUM_HS))
    + 2  # aromatic, in ring
)
NUM_BOND_FEATURES = len(BOND_TYPES) + 1 + 2  # type (+ other), conjugated, in ring


def _one_hot(value: object, choices: tuple[object, ...]) -> list[float]:
    """One-hot of ``value`` over ``choices`` plus a final "other" slot."""
    out = [0.0] * (len(choices) + 1)
    out[choices.index(value) if value in choices else len(choices)] = 1.0
    return out


def atom_features(atom: Chem.Atom) -> list[float]:
    """Element, degree, formal charge, hybridisation, total H count (each one-hot with an
    "other" slot), aromaticity and ring membership: NUM_ATOM_FEATURES floats."""
    return (
        _one_hot(atom.GetAtomicNum(), ATOMIC_NUMBERS)
        + _one_hot(atom.GetDegree(), DEGREES)
        + _one_hot(atom.GetFormalCharge(), FORMAL_CHARGES)
        + _one_hot(atom.GetHybridization(), HYBRIDIZATIONS)
        + _one_hot(atom.GetTotalNumHs(), NUM_HS)
        + [float(atom.GetIsAromatic()), float(atom.IsInRing())]
    )


def bond_features(bond: Chem.Bond) -> list[float]:
    """Bond type (one-hot with "other"), conjugation and ring membership: NUM_BOND_FEATURES."""
    return [
        *_one_hot(bond.GetBondType(), BOND_TYPES),
        float(bond.GetIsConjugated()),
        float(bond.IsInRing()),
    ]


def mol_to_graph(mol: Chem.Mol) -> Data:
    """The graph of ``mol``: x [n_atoms, NUM_ATOM_FEATURES], edge_index [2, 2 * n_bonds],
    edge_attr [2 * n_bonds, NUM_BOND_FEATURES]; each bond appears in both directions."""
    x = torch.tensor([atom_features(a) for a in mol.GetAtoms()], dtype=torch.float32)
    x = x.reshape(mol.GetNumAtoms(), NUM_ATOM_FEATURES)
    sources: list[int] = []
    targets: list[int] = []
    attrs: list[list[float]] = []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feats = bond_features(bond)
        sources += [i, j]
        targets += [j, i]
        attrs += [feats, feats]
    edge_index = torch.tensor([sources, targets], dtype=torch.long).reshape(2, len(sources))
    edge_attr = torch.tensor(attrs, dtype=torch.float32).reshape(len(attrs), NUM_BOND_FEATURES)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr)


@dataclass(frozen=True)
class GraphBatch:
    """A batch of graphs as one disconnected graph.

    x [n_nodes, F], edge_index [2, n_edges] (indices into x), edge_attr [n_edges, B],
    batch [n_nodes] (graph of each node, 0..num_graphs-1), num_graphs: graphs in the batch.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    num_graphs: int


def segment_rows(
    ptr: torch.Tensor, ids: torch.Tensor, total: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows of segments ``ids`` of a packed tensor, one segment after another.

    ptr [n_segments + 1] (segment s owns rows ptr[s]:ptr[s+1]), ids [k] (segments wanted, in
    order), ``total`` = the number of rows they own (the caller knows it from a host copy of
    ``ptr``) -> rows [total] (concatenated ``arange(ptr[s], ptr[s+1])``), owner [total] (position
    in ``ids`` of each row's segment), first [k] (where each segment starts in ``rows``).

    Everything stays on the device of ``ptr``: ``output_size`` tells ``repeat_interleave`` the
    output length, so no value is read back and the host never waits for the device.
    """
    starts = ptr[ids]
    counts = ptr[ids + 1] - starts
    first = torch.cumsum(counts, 0) - counts
    owner = torch.repeat_interleave(counts, output_size=total)  # [0]*c0 + [1]*c1 + ...
    rows = torch.arange(total, device=ptr.device) + (starts - first)[owner]
    return rows, owner, first


def segment_total(ptr: np.ndarray, ids: np.ndarray) -> int:
    """Rows owned by segments ``ids`` of a packed tensor whose offsets are ``ptr`` (host)."""
    return int((ptr[ids + 1] - ptr[ids]).sum())


def ptr_on(ptr: np.ndarray, device: torch.device) -> torch.Tensor:
    """``ptr`` as an int64 tensor on ``device`` (no copy on the host)."""
    return torch.from_numpy(ptr).to(device)


@dataclass(frozen=True)
class PackedGraphs:
    """All graphs of a data set in flat tensors, for fast batching.

    x [total_nodes, F] and edge_attr [total_edges, B] are the graphs' rows one after another;
    edge_index [2, total_edges] holds node indices local to each graph (0-based); graph g owns
    node rows node_ptr[g]:node_ptr[g+1] and edge rows edge_ptr[g]:edge_ptr[g+1] (numpy int64,
    [n_graphs + 1]). ``ptr_on_device`` holds node_ptr and edge_ptr as tensors on the device of
    x, set by ``to`` (None: made from the numpy arrays at every ``batch``).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    node_ptr: np.ndarray
    edge_ptr: np.ndarray
    ptr_on_device: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_graphs(self) -> int:
        return len(self.node_ptr) - 1

    def to(self, device: torch.device | str) -> PackedGraphs:
        """The same graphs with their tensors (and offsets) on ``device``."""
        device = torch.device(device)
        return PackedGraphs(
            x=self.x.to(device),
            edge_index=self.edge_index.to(device),
            edge_attr=self.edge_attr.to(device),
            node_ptr=self.node_ptr,
            edge_ptr=self.edge_ptr,
            ptr_on_device=(ptr_on(self.node_ptr, device), ptr_on(self.edge_ptr, device)),
        )

    def batch(self, graph_ids: np.ndarray, on_device: torch.Tensor | None = None) -> GraphBatch:
        """Graphs ``graph_ids`` (in that order) as one GraphBatch, equal to what
        ``torch_geometric.data.Batch.from_data_list`` builds from the same Data objects.

        ``on_device``: the same ids already on the device of x (e.g. a slice of an epoch's
        order copied there once), so building the batch copies nothing from the host and never
        waits for the device; without it, ``graph_ids`` are copied there first.
        """
        ids = np.asarray(graph_ids, dtype=np.int64)
        device = self.x.device
        if self.ptr_on_device is None:
            node_ptr, edge_ptr = ptr_on(self.node_ptr, device), ptr_on(self.edge_ptr, device)
        else:
            node_ptr, edge_ptr = self.ptr_on_device
        ids_t = torch.from_numpy(ids).to(device) if on_device is None else on_device
        node_rows, batch, first_node = segment_rows(
            node_ptr, ids_t, segment_total(self.node_ptr, ids)
        )
        edge_rows, edge_graph, _ = segment_rows(edge_ptr, ids_t, segment_total(self.edge_ptr, ids))
        return GraphBatch(
            x=self.x[node_rows],
            edge_index=self.edge_index[:, edge_rows] + first_node[edge_graph],
            edge_attr=self.edge_attr[edge_rows],
            batch=batch,
            num_graphs=len(ids),
        )


@dataclass(frozen=True)
class GraphFeatures:
    """Graphs of a data set: one Data per molecule, plus the same graphs packed for batching."""

    graphs: tuple[Data, ...]
    packed: PackedGraphs

    @property
    def num_node_features(self) -> int:
        return NUM_ATOM_FEATURES

    @property
    def num_edge_features(self) -> int:
        return NUM_BOND_FEATURES


def compute_graphs(smiles: list[str]) -> GraphFeatures:
    """The molecular graph of every SMILES (all must parse; tables only keep parsable ones)."""
    graphs: list[Data] = []
    for smi in smiles:
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            raise InvalidArgument(
                f"RDKit cannot parse SMILES {smi!r}; drop it from the table before featurising"
            )
        graphs.append(mol_to_graph(mol))
    node_counts = np.array([g.num_nodes for g in graphs], dtype=np.int64)
    edge_counts = np.array([g.edge_index.shape[1] for g in graphs], dtype=np.int64)
    packed = PackedGraphs(
        x=torch.cat([g.x for g in graphs]) if graphs else torch.zeros(0, NUM_ATOM_FEATURES),
        edge_index=(
            torch.cat([g.edge_index for g in graphs], dim=1)
            if graphs
            else torch.zeros(2, 0, dtype=torch.long)
        ),
        edge_attr=(
            torch.cat([g.edge_attr for g in graphs])
            if graphs
            else torch.zeros(0, NUM_BOND_FEATURES)
        ),
        node_ptr=np.concatenate([[0], np.cumsum(node_counts)]).astype(np.int64),
        edge_ptr=np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64),
    )
    return GraphFeatures(graphs=tuple(graphs), packed=packed)
