"""``amp`` runs only the hidden layers in reduced precision: readouts, heads, the output layer,
the loss and every evaluation stay float32.

No GPU is needed: ``MixedPrecision`` is device-agnostic, so these checks run it with CPU
autocast to bfloat16, which reduces precision the way CUDA autocast does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from molhpo.contract import catalogue
from trainer.featurize.conformers import compute_conformers
from trainer.featurize.graphs import compute_graphs
from trainer.featurize.smiles import compute_onehot_smiles
from trainer.models import build_model
from trainer.training import TrainConfig, train
from trainer.training.precision import MixedPrecision, autocast_dtype, mixed_precision_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMILES = ["CCO", "c1ccccc1Cl", "CC(=O)Nc1ccc(O)cc1", "C"]
SMALL: dict[str, dict[str, object]] = {
    "mlp": {"units": 32, "num_extra_layers": 2, "dropout": 0.0},
    "gin": {"hidden_channels": 32, "num_layers": 2},
    "gcn": {"hidden_channels": 32, "num_layers": 2},
    "gat": {"hidden_channels": 32, "num_layers": 2},
    "attentivefp": {"hidden_channels": 32, "num_layers": 2},
    "cnn": {"filters": 32},
    "egnn": {"hidden_channels": 32, "num_layers": 2},
    "schnet": {"hidden_channels": 32, "num_filters": 32, "num_interactions": 2},
}


def model_and_inputs(name: str) -> tuple[nn.Module, tuple[Any, ...]]:
    """A small model of family ``name`` (seeded) and the inputs of one batch of SMILES."""
    featurizer = catalogue.get_model(name).featurizer
    params = catalogue.resolve_params(name, SMALL[name])
    if featurizer == "rdkit_descriptors":
        inputs: tuple[Any, ...] = (torch.randn(len(SMILES), 24, generator=torch.Generator()),)
        in_features, edge_features = 24, 0
    elif featurizer == "graph":
        graphs = compute_graphs(SMILES)
        b = graphs.packed.batch(np.arange(len(SMILES)))
        inputs = (b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
        in_features, edge_features = graphs.num_node_features, graphs.num_edge_features
    elif featurizer == "onehot_smiles":
        tokens = compute_onehot_smiles(SMILES)
        inputs = (tokens.one_hot(),)
        in_features, edge_features = tokens.num_features, 0
    else:
        conformers = compute_conformers(SMILES)
        c = conformers.packed.batch(np.arange(len(SMILES)))
        inputs = (c.z, c.pos, c.batch, c.num_graphs)
        in_features, edge_features = conformers.num_features, 0
    torch.manual_seed(0)
    model = build_model(name, params, in_features, edge_features)
    with torch.no_grad():  # zero-initialised output layers would hide every difference
        for p in model.parameters():
            if not p.abs().sum() > 0:
                p.normal_(0.0, 0.1)
    return model, inputs


def seen_by_each_module(model: nn.Module, run: Any) -> dict[str, tuple[bool, set[torch.dtype]]]:
    """For each named module called during ``run()``: whether CPU autocast was on, and the
    dtypes of the floating-point tensors it was given."""
    seen: dict[str, tuple[bool, set[torch.dtype]]] = {}

    def record(name: str, args: tuple[Any, ...]) -> None:
        dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()}
        on, before = seen.get(name, (False, set()))
        seen[name] = (on or torch.is_autocast_enabled("cpu"), before | dtypes)

    handles = [
        module.register_forward_pre_hook(lambda _m, args, name=name: record(name, args))
        for name, module in model.named_modules()
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def inside(model: nn.Module, layers: list[nn.Module]) -> set[str]:
    """Names of the modules that are one of ``layers`` or lie within one."""
    ids = {id(layer) for layer in layers}
    names: set[str] = set()
    for name, module in model.named_modules():
        if id(module) in ids:
            names |= {name} | {f"{name}.{sub}" for sub, _ in module.named_modules() if sub}
    return names


@pytest.mark.parametrize("name", sorted(SMALL))
def test_amp_covers_the_hidden_layers_and_nothing_after_them(name: str) -> None:
    model, inputs = model_and_inputs(name)
    model.train()
    with torch.no_grad():
        full = model(*inputs)
    mixed = MixedPrecision(model, "cpu", torch.bfloat16)
    assert mixed.layers, f"{name}: amp would change nothing"
    hidden = inside(model, mixed.layers)
    outputs: list[torch.Tensor] = []

    def step() -> None:
        with torch.no_grad(), mixed.step():
            outputs.append(model(*inputs))

    seen = seen_by_each_module(model, step)
    # autocast is on in exactly the hidden layers: never in a readout, a head or the root
    assert {n for n, (on, _) in seen.items() if on} == hidden & seen.keys()
    # and whatever follows them (pooling feeds the head) is given float32 only
    after = {n: dtypes for n, (_, dtypes) in seen.items() if n not in hidden}
    assert all(dtypes <= {torch.float32} for dtypes in after.values()), after
    assert not torch.is_autocast_enabled("cpu")  # left as found
    out = outputs[0]
    assert out.dtype == torch.float32
    # the hidden layers did compute in bfloat16: close to the float32 result, not equal
    assert not torch.equal(out, full)
    torch.testing.assert_close(out, full, rtol=0.1, atol=0.05)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_evaluation_outside_a_training_step_is_float32_throughout(name: str) -> None:
    model, inputs = model_and_inputs(name)
    model.eval()
    with torch.no_grad():
        plain = model(*inputs)
    assert MixedPrecision(model, "cpu", torch.bfloat16).layers  # installed, not stepping
    dtypes: list[torch.dtype] = []
    handles = [
        m.register_forward_hook(
            lambda _m, _a, out: dtypes.append(out.dtype) if isinstance(out, torch.Tensor) else None
        )
        for m in model.modules()
    ]
    with torch.no_grad():
        evaluated = model(*inputs)
    for h in handles:
        h.remove()
    assert set(dtypes) <= {torch.float32, torch.int64}
    assert torch.equal(evaluated, plain)


def test_a_layer_that_raises_inside_a_step_leaves_autocast_off() -> None:
    model, inputs = model_and_inputs("mlp")
    mixed = MixedPrecision(model, "cpu", torch.bfloat16)

    def fail(_m: nn.Module, _a: Any) -> None:
        raise RuntimeError("injected")

    mixed.layers[-1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="injected"), mixed.step():
        model(*inputs)
    assert not torch.is_autocast_enabled("cpu")


def test_without_a_reduced_precision_nothing_is_installed() -> None:
    model, _ = model_and_inputs("gin")
    assert autocast_dtype(torch.device("cpu")) is None
    mixed = MixedPrecision(model, "cpu", None)
    assert mixed.layers == []
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert mixed_precision_layers(nn.Linear(3, 1)) == []  # unknown structure: none


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bfloat16_only_where_the_gpu_computes_it_natively() -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    native = torch.cuda.get_device_capability(device) >= (8, 0)
    assert autocast_dtype(device) == (torch.bfloat16 if native else torch.float16)


def test_amp_requested_on_the_cpu_trains_and_evaluates_in_float32() -> None:
    def run(amp: bool) -> tuple[dict[str, float], tuple[float, ...]]:
        config = TrainConfig(
            "freesolv", "mlp", {"units": 32, "amp": amp}, max_epochs=2, max_molecules=80
        )
        result = train(config, lambda _e: True)
        return result.test_metrics, result.test_predictions

    assert run(True) == run(False)
