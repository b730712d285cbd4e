"""Model registry and the models it builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from molhpo.contract.catalogue import MODELS
from molhpo.contract.errors import InvalidArgument
from trainer.featurize.graphs import NUM_ATOM_FEATURES, NUM_BOND_FEATURES, compute_graphs
from trainer.models import MODEL_BUILDERS, build_model
from trainer.models.gin import GIN, NodeBatchNorm
from trainer.models.mlp import MLP


def test_registry_keys_equal_catalogue_keys() -> None:
    # The synthetic family has no network to build (trainer.training.synthetic).
    assert set(MODEL_BUILDERS) == set(MODELS) - {"synthetic"}


def test_unknown_family_lists_choices() -> None:
    choices = "attentivefp, cnn, egnn, gat, gcn, gin, mlp, schnet"
    with pytest.raises(InvalidArgument, match=rf"unknown model 'rnn'; choose one of: {choices}"):
        build_model("rnn", {}, 10, 0)


def test_bad_hyperparameter_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="'num_layers'"):
        build_model("gin", {"num_layers": 0}, NUM_ATOM_FEATURES, NUM_BOND_FEATURES)


def test_mlp_layers_follow_num_extra_layers() -> None:
    model = build_model(
        "mlp",
        {"units": 16, "num_extra_layers": 2, "units_1": 8, "units_2": 12, "units_3": 1000},
        20,
        0,
    )
    assert isinstance(model, MLP)
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 8, 12, 1]  # units_3 is inactive
    slopes = [m.negative_slope for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == pytest.approx([0.1, 0.1, 0.1])
    assert model(torch.randn(5, 20)).shape == (5,)


@pytest.mark.parametrize("pooling", ["add", "mean", "max"])
def test_gin_forward_shapes(pooling: str) -> None:
    model = build_model(
        "gin",
        {"hidden_channels": 16, "num_layers": 2, "pooling": pooling},
        NUM_ATOM_FEATURES,
        NUM_BOND_FEATURES,
    )
    assert isinstance(model, GIN)
    graphs = compute_graphs(["CCO", "c1ccccc1", "C"])
    b = graphs.packed.batch(np.arange(3))
    out = model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
    assert out.shape == (3,)


def test_gin_trains_on_a_single_atom_batch() -> None:
    model = build_model("gin", {"hidden_channels": 8}, NUM_ATOM_FEATURES, NUM_BOND_FEATURES)
    model.train()
    b = compute_graphs(["C"]).packed.batch(np.array([0]))
    out = model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
    out.sum().backward()
    assert out.shape == (1,)


def test_node_batch_norm_single_row_uses_running_stats() -> None:
    norm = NodeBatchNorm(3)
    norm.train()
    assert norm.running_mean is not None
    before = norm.running_mean.clone()
    out = norm(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.allclose(out, torch.tensor([[1.0, 2.0, 3.0]]), atol=1e-4)  # mean 0, var 1
    assert torch.equal(norm.running_mean, before)
