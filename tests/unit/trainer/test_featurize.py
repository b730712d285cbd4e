"""Featurisers: descriptor matrix, molecular graphs, batching and the shared cache."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch

from molhpo.contract.catalogue import MODELS
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import load_dataset
from molhpo.datasets.builtin import table_from_rows
from trainer import featurize as featurize_module
from trainer.featurize import (
    FEATURIZERS,
    DescriptorFeatures,
    GraphFeatures,
    featurize,
    standardize,
)
from trainer.featurize.descriptors import compute_descriptors, descriptor_names
from trainer.featurize.graphs import (
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    compute_graphs,
    mol_to_graph,
)


def test_every_catalogue_featurizer_exists() -> None:
    assert {family.featurizer for family in MODELS.values()} <= set(FEATURIZERS) | {"none"}


def test_graph_of_ethanol() -> None:
    graph = mol_to_graph(Chem.MolFromSmiles("CCO"))
    assert graph.x.shape == (3, NUM_ATOM_FEATURES)
    assert graph.edge_index.shape == (2, 4)  # two bonds, both directions
    assert graph.edge_attr.shape == (4, NUM_BOND_FEATURES)
    edges = {tuple(e) for e in graph.edge_index.t().tolist()}
    assert edges == {(0, 1), (1, 0), (1, 2), (2, 1)}
    # every one-hot group has exactly one hot slot: 5 groups + aromatic + ring flags
    assert torch.all(graph.x[:, :-2].sum(dim=1) == 5)
    assert graph.edge_attr[:, 0].tolist() == [1.0] * 4  # all single bonds


def test_graph_of_benzene_and_single_atom() -> None:
    benzene = mol_to_graph(Chem.MolFromSmiles("c1ccccc1"))
    assert benzene.x[:, -2:].tolist() == [[1.0, 1.0]] * 6  # aromatic, in ring
    methane = mol_to_graph(Chem.MolFromSmiles("C"))
    assert methane.x.shape == (1, NUM_ATOM_FEATURES)
    assert methane.edge_index.shape == (2, 0)
    assert methane.edge_attr.shape == (0, NUM_BOND_FEATURES)


def test_packed_batch_equals_pyg_collation() -> None:
    features = compute_graphs(["CCO", "C", "c1ccccc1O", "CC(=O)N", "Cl"])
    ids = np.array([3, 1, 2, 0, 1])
    ours = features.packed.batch(ids)
    ref = Batch.from_data_list([features.graphs[i] for i in ids])
    assert torch.equal(ours.x, ref.x)
    assert torch.equal(ours.edge_index, ref.edge_index)
    assert torch.equal(ours.edge_attr, ref.edge_attr)
    assert torch.equal(ours.batch, ref.batch)
    assert ours.num_graphs == 5


def test_descriptors_and_standardisation() -> None:
    features = compute_descriptors(["CCO", "c1ccccc1", "CC(=O)O", "CCCCCC"])
    assert features.values.shape == (4, len(descriptor_names()))
    assert features.values.dtype == np.float64
    assert features.names == descriptor_names()
    x = standardize(features.values, np.array([0, 1, 2]))
    assert x.dtype == np.float32
    assert x.shape == features.values.shape
    assert np.isfinite(x).all()


def test_standardize_constant_and_missing_columns() -> None:
    values = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [5.0, 5.0, np.inf], [7.0, 9.0, 4.0]])
    x = standardize(values, np.array([0, 1, 2]))
    # column 0: train mean 3, std sqrt(8/3)
    np.testing.assert_allclose(x[:, 0], (values[:, 0] - 3.0) / np.sqrt(8.0 / 3.0), rtol=1e-6)
    # column 1 is constant on the training rows: std 1, so train rows become 0
    assert x[:3, 1].tolist() == [0.0, 0.0, 0.0] and x[3, 1] == 4.0
    # column 2: only row 1 finite among training rows -> mean 2; NaN/inf become 0
    assert x[0, 2] == 0.0 and x[2, 2] == 0.0 and x[3, 2] == 2.0


def test_unknown_featurizer() -> None:
    table = table_from_rows("toy-unknown", "u", [("CCO", "1")])
    with pytest.raises(
        InvalidArgument, match="unknown featurizer 'ecfp'; choose one of: conformers_3d, graph"
    ):
        featurize(table, "ecfp")


def test_cache_returns_same_object() -> None:
    table = load_dataset("freesolv")
    first = featurize(table, "graph")
    assert isinstance(first, GraphFeatures)
    assert len(first.graphs) == len(table)
    assert featurize(table, "graph") is first
    descriptors = featurize(table, "rdkit_descriptors")
    assert isinstance(descriptors, DescriptorFeatures)
    assert descriptors.values.shape[0] == len(table)
    assert featurize(table, "rdkit_descriptors") is descriptors


def test_cache_computes_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def slow(smiles: list[str]) -> GraphFeatures:
        calls.append(1)
        time.sleep(0.2)
        return compute_graphs(smiles)

    monkeypatch.setitem(featurize_module.FEATURIZERS, "graph", slow)
    table = table_from_rows("toy-threads", "u", [("CCO", "1"), ("CC", "2")])
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(featurize(table, "graph"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 4 and all(r is results[0] for r in results)
