"""Batches built on the device: packed graphs and conformers, pair tables, shared device copies,
and the model forwards rewritten to pass sizes instead of reading them back."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.nn import GATConv, GCNConv

from molhpo.datasets import load_table
from molhpo.datasets.request import DatasetRequest
from trainer import featurize
from trainer.featurize.conformers import compute_conformers
from trainer.featurize.graphs import (
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    PackedGraphs,
    compute_graphs,
    segment_rows,
)
from trainer.models import geometry, gnn
from trainer.models.egnn import EGNN
from trainer.models.geometry import molecule_pairs, pair_table
from trainer.models.gnn import GAT, GCN, AttentiveFPRegressor
from trainer.models.schnet import SchNet
from trainer.training import device_data
from trainer.training.streams import StreamPool, own_stream

SMILES = ["CCO", "c1ccccc1Cl", "C", "CC(=O)N", "[Na+].[Cl-]", "O"]


def test_segment_rows_concatenates_the_segments_in_order() -> None:
    ptr = torch.tensor([0, 2, 2, 5, 6])
    rows, owner, first = segment_rows(ptr, torch.tensor([2, 0, 1, 3]), total=6)
    assert rows.tolist() == [2, 3, 4, 0, 1, 5]
    assert owner.tolist() == [0, 0, 0, 1, 1, 3]
    assert first.tolist() == [0, 3, 5, 5]


@pytest.mark.parametrize("ids", [[5, 0, 3], [2], [4, 1, 2, 0, 5, 3]])
def test_graph_batches_from_ids_on_the_device_equal_pyg(ids: list[int]) -> None:
    features = compute_graphs(SMILES)
    packed = features.packed.to("cpu")
    rows = np.array(ids)
    ours = packed.batch(rows, torch.from_numpy(rows))
    ref = Batch.from_data_list([features.graphs[i] for i in ids])
    assert torch.equal(ours.x, ref.x)
    assert torch.equal(ours.edge_index, ref.edge_index)
    assert torch.equal(ours.edge_attr, ref.edge_attr)
    assert torch.equal(ours.batch, ref.batch)
    assert ours.num_graphs == len(ids)


@pytest.mark.parametrize("cutoff", [0.0, 1.2, 2.5])
@pytest.mark.parametrize("chunk", [4, 1 << 22])
def test_pair_table_batches_equal_molecule_pairs(
    cutoff: float, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(geometry, "PAIR_CHUNK", chunk)  # 4: one molecule per chunk
    packed = compute_conformers(SMILES).packed.to("cpu")
    table = pair_table(packed.pos, packed.node_ptr, cutoff)
    for ids in ([2, 0, 4], [0, 1, 2, 3, 4, 5], [1], [2], [5, 3]):
        rows = np.array(ids)
        b = packed.batch(rows, torch.from_numpy(rows))
        expected, _ = molecule_pairs(b.pos, b.batch, cutoff)
        assert torch.equal(table.batch(rows, torch.from_numpy(rows)), expected)


def _graph_batch() -> tuple[torch.Tensor, ...]:
    b = compute_graphs(SMILES).packed.batch(np.arange(len(SMILES)))
    return b.x, b.edge_index, b.edge_attr, b.batch


@pytest.mark.parametrize("family", ["gcn", "gat"])
def test_self_loops_appended_by_us_equal_pygs_own(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model: GCN | GAT
    if family == "gcn":
        model = GCN(NUM_ATOM_FEATURES, 16, 2, 0.0, "mean")
    else:
        model = GAT(NUM_ATOM_FEATURES, 16, 2, 4, 0.0, "add")
    model.eval()
    x, edge_index, edge_attr, batch = _graph_batch()
    ours = model(x, edge_index, edge_attr, batch, len(SMILES))
    reference = copy.deepcopy(model)
    for conv in reference.convs:
        assert isinstance(conv, GCNConv | GATConv)
        conv.add_self_loops = True  # PyG's layers add the loops themselves
    monkeypatch.setattr(gnn, "with_self_loops", lambda e, n: e)
    assert torch.equal(ours, reference(x, edge_index, edge_attr, batch, len(SMILES)))


def test_attentivefp_forward_equals_pygs() -> None:
    torch.manual_seed(0)
    model = AttentiveFPRegressor(NUM_ATOM_FEATURES, NUM_BOND_FEATURES, 16, 3, 2, 0.0).eval()
    x, edge_index, edge_attr, batch = _graph_batch()
    ours = model(x, edge_index, edge_attr, batch, len(SMILES))
    assert torch.equal(ours, model.net(x, edge_index, edge_attr, batch).squeeze(-1))


def test_schnet_and_egnn_with_a_pair_table_equal_their_own_pairs() -> None:
    torch.manual_seed(0)
    packed = compute_conformers(SMILES).packed.to("cpu")
    rows = np.array([3, 1, 0, 5, 2])
    ids = torch.from_numpy(rows)
    b = packed.batch(rows, ids)
    schnet = SchNet(16, 16, 2, 20, 2.5, "add")
    torch.nn.init.normal_(schnet.net.lin2.weight)  # not the zero start: outputs differ
    schnet.eval()
    pyg = schnet.net(b.z, b.pos, b.batch).reshape(len(rows))
    assert torch.equal(schnet(b.z, b.pos, b.batch, len(rows)), pyg)
    with_table = pair_table(packed.pos, packed.node_ptr, schnet.cutoff).batch(rows, ids)
    assert torch.equal(schnet(b.z, b.pos, b.batch, len(rows), with_table), pyg)
    egnn = EGNN(16, 2, 0.0, "add", cutoff=0.0)
    last = egnn.head[2]
    assert isinstance(last, torch.nn.Linear)
    torch.nn.init.normal_(last.weight)
    egnn.eval()
    all_pairs = pair_table(packed.pos, packed.node_ptr, 0.0).batch(rows, ids)
    assert torch.equal(
        egnn(b.z, b.pos, b.batch, len(rows), all_pairs), egnn(b.z, b.pos, b.batch, len(rows))
    )


def test_device_copies_are_made_once_per_content_and_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    featurize.clear_cache()
    table = load_table(DatasetRequest(name="freesolv"), ())
    features = featurize.featurize(table, "graph")
    # two trials' data on one device: one copy between them
    copies: list[str] = []
    to = PackedGraphs.to

    def counted_to(self: PackedGraphs, device: torch.device | str) -> PackedGraphs:
        copies.append(str(device))
        return to(self, device)

    monkeypatch.setattr(PackedGraphs, "to", counted_to)
    for _ in range(2):
        device_data.graph_data(features, torch.zeros(len(table)), torch.device("cpu"))  # type: ignore[arg-type]
    assert copies == ["cpu"]
    built: list[int] = []

    def build() -> object:
        built.append(1)
        return features.packed.to("cpu")  # type: ignore[union-attr]

    first = featurize.on_device(features, torch.device("cpu"), "probe", build)
    again = featurize.on_device(features, torch.device("cpu"), "probe", build)
    assert first is again and len(built) == 1
    # features that did not come from featurize() are not shared
    loose = compute_graphs(["CCO"])
    featurize.on_device(loose, torch.device("cpu"), "probe", build)
    featurize.on_device(loose, torch.device("cpu"), "probe", build)
    assert len(built) == 3
    featurize.clear_cache()
    featurize.on_device(features, torch.device("cpu"), "probe", build)
    assert len(built) == 4  # clearing the cache forgets the device copies


def test_descriptor_batches_equal_the_standardised_matrix() -> None:
    featurize.clear_cache()
    table = load_table(DatasetRequest(name="freesolv"), ())
    features = featurize.featurize(table, "rdkit_descriptors")
    assert isinstance(features, featurize.DescriptorFeatures)
    train_rows = np.arange(0, len(table), 2)
    expected = torch.from_numpy(featurize.standardize(features.values, train_rows))
    data = device_data.descriptor_data(features, train_rows, torch.zeros(1), torch.device("cpu"))
    rows = np.array([5, 1, 400, 3])
    assert torch.equal(data.predict(lambda x: x, rows), expected[rows])  # type: ignore[arg-type]


def test_own_stream_is_a_no_op_off_cuda() -> None:
    with own_stream("cpu") as stream:
        assert stream is None
    with own_stream(None) as stream:
        assert stream is None
    with own_stream("not a device") as stream:
        assert stream is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_own_stream_gives_each_thread_its_own_cuda_stream() -> None:
    import threading

    seen: list[int] = []

    def trial() -> None:
        with own_stream("cuda") as stream:
            assert stream is not None
            assert torch.cuda.current_stream() == stream
            seen.append(stream.cuda_stream)

    threads = [threading.Thread(target=trial) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 2
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


def test_device_copies_no_trial_uses_are_freed_beyond_the_recent_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    featurize.clear_cache()
    monkeypatch.setattr(featurize, "KEEP_ON_DEVICE", 1)
    table = load_table(DatasetRequest(name="freesolv"), ())
    features = featurize.featurize(table, "graph")
    built: list[str] = []

    def build(part: str) -> object:
        built.append(part)
        return features.packed.to("cpu")  # type: ignore[union-attr]

    cpu = torch.device("cpu")
    held = featurize.on_device(features, cpu, "held", lambda: build("held"))
    featurize.on_device(features, cpu, "a", lambda: build("a"))  # the one recent copy now
    featurize.on_device(features, cpu, "b", lambda: build("b"))  # "a" is no longer recent
    gc.collect()
    assert featurize.on_device(features, cpu, "held", lambda: build("held")) is held
    featurize.on_device(features, cpu, "a", lambda: build("a"))
    assert built == ["held", "a", "b", "a"]  # "a" was freed and made again; "held" was not
    featurize.clear_cache()


def test_the_stream_pool_lends_one_stream_per_concurrent_trial() -> None:
    made: list[str] = []

    def create(device: torch.device) -> str:
        made.append(f"{device}#{len(made)}")
        return made[-1]

    pool = StreamPool(create)
    cuda0, cuda1 = torch.device("cuda:0"), torch.device("cuda:1")
    a, b = pool.take(cuda0), pool.take(cuda0)  # two slots at once: two streams
    assert a != b
    pool.give_back(cuda0, a)
    assert pool.take(cuda0) == a  # the slot's next trial gets its stream back
    assert pool.take(cuda1) == "cuda:1#2"  # streams belong to a device
    pool.give_back(cuda0, b)
    assert pool.take(cuda0) == b
    assert len(made) == 3


def test_every_tensor_of_a_device_copy_is_found_for_stream_recording() -> None:
    from trainer.featurize import _tensors
    from trainer.featurize.smiles import compute_onehot_smiles

    graphs = compute_graphs(SMILES).packed.to("cpu")
    conformers = compute_conformers(SMILES).packed.to("cpu")
    tokens = compute_onehot_smiles(SMILES).to("cpu")
    assert {id(t) for t in _tensors(graphs)} == {
        id(graphs.x),
        id(graphs.edge_index),
        id(graphs.edge_attr),
        *(id(p) for p in graphs.ptr_on_device or ()),
    }
    assert len(_tensors(conformers)) == 3 and _tensors(tokens) == [tokens.tokens]
