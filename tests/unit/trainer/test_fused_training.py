"""Fused training (GPU packing): K stacked MLPs give the weights of K separate runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from molhpo.contract.errors import InvalidArgument
from trainer.models.mlp import MLP, DenseLayerSpec
from trainer.training.fused import fuse_models, train_fused, train_separately

FEATURES = 64
LRS = [1e-3, 3e-3, 1e-2, 3e-4]
WEIGHT_DECAYS = [0.0, 1e-4, 1e-2, 0.1]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
"""Max abs weight difference allowed between fused and separate runs (seen: ~1e-7 in float32,
~1e-15 in float64). Batched and single matrix products round differently, and Adam can amplify
that over long runs in float32 (see bench/gpu_packing.py), so the runs here are short."""


# One torch thread: tiny models train faster so, far faster on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """200 rows of descriptor-sized random inputs [200, 64] and a learnable target [200]."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, FEATURES, generator=g)
    y = x[:, :3].sum(dim=1) + 0.1 * torch.randn(200, generator=g)
    return x, y


def mlps(k: int, units: tuple[int, ...] = (32, 16), slope: float = 0.1) -> list[nn.Module]:
    """K MLPs of one architecture with different initial weights (seeds 0..K-1)."""
    models: list[nn.Module] = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(MLP(FEATURES, [DenseLayerSpec(u, slope, 0.0) for u in units]))
    return models


def max_difference(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> float:
    assert len(a) == len(b)
    assert all(sa.keys() == sb.keys() for sa, sb in zip(a, b, strict=True))
    return max(
        float((sa[key] - sb[key]).abs().max()) for sa, sb in zip(a, b, strict=True) for key in sa
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("seed", [0, [0, 1, 2, 3]], ids=["shared-order", "order-per-model"])
def test_fused_equals_separate(optimizer: str, seed: int | list[int], dtype: torch.dtype) -> None:
    x, y = (t.to(dtype) for t in data())
    models = [m.to(dtype) for m in mlps(4)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    args = (models, x, y, LRS, WEIGHT_DECAYS)
    fused = train_fused(*args, epochs=3, batch_size=32, seed=seed, optimizer=optimizer)
    separate = train_separately(*args, epochs=3, batch_size=32, seed=seed, optimizer=optimizer)

    assert max_difference(fused, separate) <= TOLERANCE[dtype]
    # not vacuous: every model moved well beyond the tolerance, each in its own way
    assert all(max_difference([f], [b]) > 1e-3 for f, b in zip(fused, before, strict=True))
    assert max_difference(fused[:1], fused[1:2]) > 1e-3
    # the inputs are left as they were
    assert max_difference([m.state_dict() for m in models], before) == 0.0


def test_result_loads_into_a_model_of_the_family() -> None:
    x, y = data()
    models = mlps(2)
    states = train_fused(models, x, y, LRS[:2], WEIGHT_DECAYS[:2], epochs=1, batch_size=64)
    model = mlps(1)[0]
    model.load_state_dict(states[1])
    fused = fuse_models(models)
    assert fused(x).shape == (2, 200)


def test_models_of_other_widths_are_refused() -> None:
    models = [*mlps(2), *mlps(1, units=(48, 16))]
    with pytest.raises(
        InvalidArgument, match=r"model 2's parameter 'net\.0\.weight' is \[48, 64\]"
    ):
        fuse_models(models)


def test_models_of_other_depths_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="differ in their parameters"):
        fuse_models([*mlps(1), *mlps(1, units=(32, 16, 8))])


def test_models_with_other_slopes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"negative_slope=0\.2.*share one architecture"):
        fuse_models([*mlps(1), *mlps(1, slope=0.2)])


def test_models_of_other_classes_are_refused() -> None:
    other = nn.Sequential(nn.Linear(FEATURES, 1))
    with pytest.raises(InvalidArgument, match="model 1 is a Sequential but model 0 is a MLP"):
        fuse_models([*mlps(1), other])


def test_dropout_is_refused() -> None:
    torch.manual_seed(0)
    with_dropout = MLP(FEATURES, [DenseLayerSpec(32, 0.1, 0.2)])
    with pytest.raises(InvalidArgument, match=r"dropout p=0\.2 at 'net\.2'"):
        fuse_models([with_dropout])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lrs": LRS[:3]}, "3 learning rates and 4 weight decays for 4 models"),
        ({"weight_decays": [0.0, -1.0, 0.0, 0.0]}, "weight_decay of model 1 is -1.0"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'; choose one of: adam, adamw"),
        ({"seed": [0, 1]}, "2 seeds for 4 models"),
        ({"epochs": 0}, "epochs is 0"),
    ],
)
def test_bad_arguments_are_refused(change: dict[str, object], message: str) -> None:
    x, y = data()
    kwargs: dict[str, object] = {
        "lrs": LRS,
        "weight_decays": WEIGHT_DECAYS,
        "epochs": 1,
        "batch_size": 32,
        "seed": 0,
        "optimizer": "adam",
        **change,
    }
    with pytest.raises(InvalidArgument, match=message):
        train_fused(mlps(4), x, y, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=message):
        train_separately(mlps(4), x, y, **kwargs)  # type: ignore[arg-type]
