"""The CNN, GCN, GAT, AttentiveFP, EGNN and SchNet families: training, shapes, symmetries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molhpo.contract.errors import InvalidConfigError
from trainer.featurize.conformers import compute_conformers
from trainer.featurize.graphs import NUM_ATOM_FEATURES, NUM_BOND_FEATURES, compute_graphs
from trainer.featurize.smiles import compute_onehot_smiles
from trainer.models import build_model
from trainer.models.cnn import SmilesCNN
from trainer.models.egnn import EGNN
from trainer.models.geometry import molecule_pairs
from trainer.models.gnn import GAT
from trainer.training import EpochResult, TrainConfig, train

# One torch thread: tiny models train faster so, far faster on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL: dict[str, dict[str, object]] = {
    "cnn": {"filters": 32},
    "gcn": {"hidden_channels": 32, "num_layers": 2},
    "gat": {"hidden_channels": 32, "num_layers": 2},
    "attentivefp": {"hidden_channels": 32, "num_layers": 2},
    "egnn": {"hidden_channels": 32, "num_layers": 3},
    "schnet": {"hidden_channels": 32, "num_filters": 32, "num_interactions": 2},
}


@pytest.mark.parametrize("model", sorted(SMALL))
def test_family_trains_on_a_freesolv_slice(model: str) -> None:
    seen: list[EpochResult] = []
    config = TrainConfig(
        "freesolv", model, {**SMALL[model], "lr": 3e-3}, max_epochs=4, max_molecules=120
    )

    def record(e: EpochResult) -> bool:
        seen.append(e)
        return True

    result = train(config, record)
    assert [e.step for e in seen] == [1, 2, 3, 4]
    assert seen[-1].train_loss < seen[0].train_loss
    assert result.n_parameters > 0
    assert set(result.test_metrics) >= {"rmse", "mae", "r2"}


def _rotation(generator: torch.Generator) -> torch.Tensor:
    """A random proper rotation [3, 3] (float64): QR of a Gaussian matrix, det fixed to +1."""
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=generator))
    q = q * torch.sign(torch.diagonal(r))  # unique Haar-distributed factor
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("cutoff", [0.0, 2.0])
def test_egnn_is_invariant_and_its_coordinates_equivariant(cutoff: float) -> None:
    torch.manual_seed(0)
    model = EGNN(hidden_channels=16, num_layers=3, dropout=0.0, pooling="add", cutoff=cutoff)
    model = model.double().eval()
    with torch.no_grad():  # a non-zero head, so the invariance check is not trivially true
        for p in model.head.parameters():
            p.normal_()
    b = compute_conformers(["CCO", "c1ccccc1Cl", "C"]).packed.batch(np.arange(3))
    pos = b.pos.double()
    generator = torch.Generator().manual_seed(1)
    rotation = _rotation(generator)
    assert torch.det(rotation).item() == pytest.approx(1.0)
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64))
    shift = torch.randn(3, dtype=torch.float64, generator=generator) * 5.0
    moved = pos @ rotation.T + shift
    with torch.no_grad():
        out = model(b.z, pos, b.batch, b.num_graphs)
        out_moved = model(b.z, moved, b.batch, b.num_graphs)
        h, x = model.encode(b.z, pos, b.batch)
        h_moved, x_moved = model.encode(b.z, moved, b.batch)
    assert out.shape == (3,)
    assert out.abs().max() > 1e-3
    assert torch.allclose(out, out_moved, atol=1e-4)
    assert torch.allclose(h, h_moved, atol=1e-4)
    assert torch.allclose(x @ rotation.T + shift, x_moved, atol=1e-4)
    assert not torch.allclose(x, pos)  # coordinates were updated


def test_schnet_is_invariant_to_rotation_and_translation() -> None:
    torch.manual_seed(0)
    model = build_model("schnet", SMALL["schnet"], 1, 0).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # the output layer starts at zero; make it non-trivial
            if p.abs().sum() == 0:
                p.normal_()
    b = compute_conformers(["CCO", "CC(=O)N"]).packed.batch(np.arange(2))
    generator = torch.Generator().manual_seed(2)
    moved = b.pos.double() @ _rotation(generator).T + 3.0
    with torch.no_grad():
        out = model(b.z, b.pos.double(), b.batch, b.num_graphs)
        assert torch.allclose(out, model(b.z, moved, b.batch, b.num_graphs), atol=1e-4)
    assert out.abs().max() > 1e-6


def test_molecule_pairs_stay_within_molecules_and_cutoff() -> None:
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [0.0, 0, 0], [0.5, 0, 0]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    edge_index, distance = molecule_pairs(pos, batch)
    pairs = set(map(tuple, edge_index.t().tolist()))
    assert pairs == {(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1), (3, 4), (4, 3)}
    assert torch.allclose(distance, (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1))
    near, _ = molecule_pairs(pos, batch, cutoff=2.5)
    assert set(map(tuple, near.t().tolist())) == {(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)}


@pytest.mark.parametrize("model", ["gcn", "gat", "attentivefp"])
def test_graph_families_forward_shapes(model: str) -> None:
    net = build_model(model, SMALL[model], NUM_ATOM_FEATURES, NUM_BOND_FEATURES)
    b = compute_graphs(["CCO", "c1ccccc1", "C"]).packed.batch(np.arange(3))
    assert net(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs).shape == (3,)


def test_gat_needs_a_channel_per_head() -> None:
    with pytest.raises(InvalidConfigError, match="hidden_channels is 4 but heads is 8"):
        GAT(NUM_ATOM_FEATURES, hidden_channels=4, num_layers=1, heads=8, dropout=0.0, pooling="add")
    build_model("gat", {"hidden_channels": 16, "heads": 8}, NUM_ATOM_FEATURES, 0)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_cnn_ignores_padding(pooling: str) -> None:
    short = compute_onehot_smiles(["CCO", "CCO"])
    padded = compute_onehot_smiles(["CCO", "CCCCCCCCCCO"])  # same alphabet, longer matrices
    assert short.alphabet == padded.alphabet
    torch.manual_seed(0)
    model = SmilesCNN(len(short.alphabet), 8, 3, 2, pooling, 16, 0.0).eval()
    with torch.no_grad():
        a = model(short.one_hot())[0]
        b = model(padded.one_hot())[0]
    assert padded.max_len > short.max_len
    assert torch.allclose(a, b, atol=1e-6)
