"""Fused training of several trials that share one architecture ("GPU packing").

A small model such as the descriptor MLP leaves a GPU mostly idle: each step is a few tiny
kernels, so one trial per GPU is bound by kernel launches, not by arithmetic. Following HFTA
(Wang et al., "Horizontally Fused Training Array: An Effective Hardware Utilization Squeezer
for Training Novel Deep Learning Models", MLSys 2021, https://arxiv.org/abs/2102.02344), K
models of one architecture are trained as one: their parameters are stacked along a new leading
dimension (``torch.func.stack_module_state``), one ``torch.func.vmap`` of ``functional_call``
computes all K losses with batched kernels, the K losses are summed and one backward pass gives
every model its own gradient (the models share no parameter, so d(sum)/d(theta_k) is
d(loss_k)/d(theta_k)). The optimiser is Adam written out by hand so that the learning rate and
weight decay can differ per model: both are tensors of shape [K] broadcast over each stacked
parameter's leading dimension.

What may differ between fused models: initial weights (seed), ``lr``, ``weight_decay`` and the
batch order. What must not: anything that changes shapes or the computation (layer sizes,
LeakyReLU slopes, ...), the batch size, the number of epochs and the optimiser kind;
``fuse_models`` refuses models that are not built alike.

Dropout is refused (InvalidArgument) rather than supported. Under ``vmap`` a random op draws
one mask for the whole stack (or errors), so fused models would not get the masks each trial
draws from its own ``SeededDropout`` generator when trained alone, and fused results would no
longer equal separate ones. Trials with dropout > 0 are trained one at a time.

Each model sees the same mini-batches in the same order as it would alone: the order of every
epoch comes from ``np.random.default_rng(seed).permutation(n)`` as in ``trainer.training.loop``,
with one seed for all K models or one per model. ``train_separately`` is the reference: the
same recipe, one model at a time, with ``torch.optim.Adam``/``AdamW``. Fused and separate
results agree to rounding (batched and single matrix products may sum in different orders).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from molhpo.contract.errors import InvalidArgument
from trainer.models.mlp import SeededDropout
from trainer.placement import report_placement

OPTIMIZERS = ("adam", "adamw")
"""Optimisers ``train_fused`` implements: Adam with L2 weight decay, AdamW (decoupled)."""


class FusedModels:
    """K models of one architecture whose parameters are stacked along a leading dimension.

    ``params`` maps each parameter name of the template to a leaf tensor [K, *shape] (requiring
    grad like the original); ``buffers`` does the same for buffers. The template lives on the
    ``meta`` device and only supplies the computation.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        check_fusable(models)
        params, buffers = stack_module_state(list(models))
        self.params: dict[str, torch.Tensor] = dict(params)
        self.buffers: dict[str, torch.Tensor] = dict(buffers)
        self.k = len(models)
        self._state_keys = list(models[0].state_dict().keys())
        self._template = copy.deepcopy(models[0]).to("meta")
        self._template.train(models[0].training)

    def __len__(self) -> int:
        return self.k

    def _call_one(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = functional_call(self._template, (params, buffers), (x,))
        return out

    def forward(self, x: torch.Tensor, per_model: bool = False) -> torch.Tensor:
        """Outputs [K, batch, *out] (for the MLP: [K, batch]) of every model.

        ``x`` is [batch, *in], the same rows for every model, or with ``per_model``
        [K, batch, *in], model k's rows in ``x[k]``.
        """
        fn = vmap(self._call_one, in_dims=(0, 0, 0 if per_model else None), randomness="error")
        out: torch.Tensor = fn(self.params, self.buffers, x)
        return out

    __call__ = forward

    def train(self, mode: bool = True) -> FusedModels:
        """Set the template's training mode (what ``nn.Module.train`` does for one model)."""
        self._template.train(mode)
        return self

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """One state dict per model, in input order, each loadable by ``load_state_dict`` of a
        model built like the originals (detached copies on the stack's device)."""
        stacked = {**self.params, **self.buffers}
        return [
            {key: stacked[key][i].detach().clone() for key in self._state_keys}
            for i in range(self.k)
        ]


def fuse_models(models: Sequence[nn.Module]) -> FusedModels:
    """Stack ``models`` (K >= 1, one architecture, no dropout) for fused training.

    Raises InvalidArgument naming the first difference when the models are not built alike,
    or when a dropout layer has p > 0.
    """
    return FusedModels(models)


def check_fusable(models: Sequence[nn.Module]) -> None:
    """InvalidArgument unless ``models`` can be fused: at least one, same class, same
    parameter and buffer names/shapes/dtypes/devices, same structure (``repr``, which shows
    layer sizes and constants such as LeakyReLU slopes), and no dropout with p > 0."""
    if len(models) == 0:
        raise InvalidArgument("no models to fuse; pass at least one")
    first = models[0]
    for i, model in enumerate(models):
        _check_no_dropout(i, model)
        if i == 0:
            continue
        if type(model) is not type(first):
            raise InvalidArgument(
                f"model {i} is a {type(model).__name__} but model 0 is a {type(first).__name__}; "
                "fused models must share one architecture, so train them in separate groups"
            )
        for kind, mine, theirs in (
            (
                "parameter",
                _tensor_specs(model.named_parameters()),
                _tensor_specs(first.named_parameters()),
            ),
            ("buffer", _tensor_specs(model.named_buffers()), _tensor_specs(first.named_buffers())),
        ):
            if mine.keys() != theirs.keys():
                extra = sorted(mine.keys() ^ theirs.keys())
                raise InvalidArgument(
                    f"model {i} and model 0 differ in their {kind}s ({', '.join(extra)}); fused "
                    "models must share one architecture, so train them in separate groups"
                )
            for name, spec in mine.items():
                if spec != theirs[name]:
                    raise InvalidArgument(
                        f"model {i}'s {kind} '{name}' is {spec} but model 0's is "
                        f"{theirs[name]}; fused models must share one architecture (same "
                        "layer sizes), so train them in separate groups"
                    )
        mine_lines, theirs_lines = repr(model).splitlines(), repr(first).splitlines()
        for a, b in zip(mine_lines, theirs_lines, strict=False):
            if a != b:
                raise InvalidArgument(
                    f"model {i} has '{a.strip()}' where model 0 has '{b.strip()}'; fused models "
                    "must share one architecture (sizes and constants such as LeakyReLU "
                    "slopes), so train them in separate groups"
                )
        if len(mine_lines) != len(theirs_lines):
            raise InvalidArgument(
                f"model {i} has {len(mine_lines)} lines of structure but model 0 has "
                f"{len(theirs_lines)}; fused models must share one architecture"
            )


def _tensor_specs(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, str]:
    return {
        name: f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"
        for name, t in named
    }


def _check_no_dropout(index: int, model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.dropout._DropoutNd, SeededDropout)) and module.p > 0:
            raise InvalidArgument(
                f"model {index} has dropout p={module.p} at '{name}'; fused training needs "
                "dropout 0 (each trial's masks come from its own generator, which vmap cannot "
                "keep apart), so train trials with dropout one at a time"
            )


def adam_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
    betas: tuple[float, float],
    eps: float,
    decoupled: bool,
) -> None:
    """One Adam (``decoupled`` False) or AdamW (True) update of K stacked parameters, in place.

    ``param``, ``grad``, ``exp_avg``, ``exp_avg_sq`` are [K, *shape]; ``lr`` and
    ``weight_decay`` are float64 tensors [K]; ``step`` is the 1-based step count. The formula
    is ``torch.optim.Adam``'s (single-tensor path), op for op where it matters for rounding:

        g = grad + wd * param                    (adam: L2 term on the gradient)
        param *= 1 - lr * wd                     (adamw: decoupled decay, before the step)
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Per-model scalars are formed in float64 and cast once to the parameter's dtype, like the
    Python floats torch.optim passes to its kernels.
    """
    beta1, beta2 = betas
    shape = (param.shape[0],) + (1,) * (param.dim() - 1)

    def per_model(values: torch.Tensor) -> torch.Tensor:
        return values.to(param.dtype).view(shape)

    if decoupled:
        param.mul_(per_model(1.0 - lr * weight_decay))
    else:
        grad = grad + per_model(weight_decay) * param
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.sub_(per_model(lr / bias_correction1) * exp_avg / denom)


class FusedAdam:
    """Adam/AdamW over the stacked parameters of ``FusedModels`` with per-model ``lr`` and
    ``weight_decay`` ([K] each); betas and eps are shared. Parameters without a gradient are
    skipped and keep their step count, as in ``torch.optim.Adam``."""

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        lrs: Sequence[float],
        weight_decays: Sequence[float],
        optimizer: str = "adam",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise InvalidArgument(
                f"unknown optimizer '{optimizer}'; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise InvalidArgument(f"betas are {betas}; each must be in [0, 1), e.g. (0.9, 0.999)")
        if not eps >= 0.0:
            raise InvalidArgument(f"eps is {eps}; it must be >= 0, e.g. 1e-8")
        self.params = params
        self.decoupled = optimizer == "adamw"
        self.betas = betas
        self.eps = eps
        device = next(iter(params.values())).device if params else torch.device("cpu")
        self.lr = torch.tensor(list(lrs), dtype=torch.float64, device=device)
        self.weight_decay = torch.tensor(list(weight_decays), dtype=torch.float64, device=device)
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.steps: dict[str, int] = {}

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``)."""
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Update every stacked parameter that has a gradient."""
        for name, p in self.params.items():
            if p.grad is None:
                continue
            if name not in self.state:
                self.state[name] = (torch.zeros_like(p), torch.zeros_like(p))
                self.steps[name] = 0
            self.steps[name] += 1
            exp_avg, exp_avg_sq = self.state[name]
            adam_step(
                p,
                p.grad,
                exp_avg,
                exp_avg_sq,
                self.steps[name],
                self.lr,
                self.weight_decay,
                self.betas,
                self.eps,
                self.decoupled,
            )


def batch_orders(seed: int | Sequence[int], k: int) -> list[np.random.Generator]:
    """The batch-order generators of K models: one seed shared by all, or one seed each."""
    seeds = [seed] * k if isinstance(seed, int) else list(seed)
    if len(seeds) != k:
        raise InvalidArgument(f"{len(seeds)} seeds for {k} models; pass one int or one per model")
    return [np.random.default_rng(s) for s in seeds]


def _check_run(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    lrs: Sequence[float],
    weight_decays: Sequence[float],
    epochs: int,
    batch_size: int,
    optimizer: str,
) -> None:
    k = len(models)
    if len(lrs) != k or len(weight_decays) != k:
        raise InvalidArgument(
            f"{len(lrs)} learning rates and {len(weight_decays)} weight decays for {k} models; "
            "pass one of each per model"
        )
    for name, values in (("lr", lrs), ("weight_decay", weight_decays)):
        for i, v in enumerate(values):
            if not (math.isfinite(v) and v >= 0.0):
                raise InvalidArgument(f"{name} of model {i} is {v}; it must be finite and >= 0")
    if epochs < 1:
        raise InvalidArgument(f"epochs is {epochs}; it must be at least 1")
    if batch_size < 1:
        raise InvalidArgument(f"batch_size is {batch_size}; it must be at least 1")
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise InvalidArgument(
            f"x is {list(x.shape)} and y is {list(y.shape)}; pass x [n, features] and y [n]"
        )
    if optimizer not in OPTIMIZERS:
        raise InvalidArgument(
            f"unknown optimizer '{optimizer}'; choose one of: {', '.join(OPTIMIZERS)}"
        )


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _on(
    models: Sequence[nn.Module], device: torch.device | str | None
) -> tuple[Sequence[nn.Module], torch.device]:
    """``models`` on ``device`` (copies where they are elsewhere; None: where the first is)."""
    if device is None:
        return models, _device_of(models[0])
    target = torch.device(device)
    return [m if _device_of(m) == target else copy.deepcopy(m).to(target) for m in models], target


def train_fused(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    lrs: Sequence[float],
    weight_decays: Sequence[float],
    epochs: int,
    batch_size: int,
    seed: int | Sequence[int] = 0,
    optimizer: str = "adam",
    device: torch.device | str | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Train K models of one architecture together; return their final state dicts.

    Args:
        models: K >= 1 models built alike (see ``check_fusable``), on one device; they are not
            modified. Their forward maps [batch, features] to predictions [batch].
        x: inputs [n, features], moved to the models' device.
        y: regression targets [n] (standardised, as the training loop uses them).
        lrs: learning rate per model, K values.
        weight_decays: weight decay per model, K values (L2 for adam, decoupled for adamw).
        epochs: passes over the n rows.
        batch_size: rows per step; the last batch of an epoch may be smaller.
        seed: batch-order seed, shared by every model or one per model; every epoch's order
            is ``np.random.default_rng(seed).permutation(n)``, drawn afresh each epoch.
        optimizer: adam or adamw.
        device: where to train (a trainer passes its resolved device); the models are copied
            there. None: on the models' own device.

    Returns:
        K state dicts (detached, on the device trained on), in input order, equal to what
        ``train_separately`` gives up to rounding.
    """
    _check_run(models, x, y, lrs, weight_decays, epochs, batch_size, optimizer)
    placed, target = _on(models, device)
    fused = fuse_models(placed).train()
    x, y = x.to(target), y.to(target)
    report_placement(
        "fused",
        None if device is None else str(device),
        next(iter(fused.params.values())).device,
        (x, y),
    )
    k, n = len(fused), x.shape[0]
    opt = FusedAdam(fused.params, lrs, weight_decays, optimizer)
    orders = batch_orders(seed, k)
    shared = isinstance(seed, int)
    for _ in range(epochs):
        if shared:
            order = torch.from_numpy(orders[0].permutation(n)).to(target)
        else:
            order = torch.from_numpy(np.stack([g.permutation(n) for g in orders])).to(target)
        for start in range(0, n, batch_size):
            rows = order[..., start : start + batch_size]
            # shared: x [b, f] for all, y [b]; per model: x [K, b, f], y [K, b]
            pred = fused(x[rows], per_model=not shared)
            losses = ((pred - y[rows]) ** 2).mean(dim=-1)
            opt.zero_grad()
            losses.sum().backward()
            opt.step()
    return fused.state_dicts()


def train_separately(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    lrs: Sequence[float],
    weight_decays: Sequence[float],
    epochs: int,
    batch_size: int,
    seed: int | Sequence[int] = 0,
    optimizer: str = "adam",
    device: torch.device | str | None = None,
) -> list[dict[str, torch.Tensor]]:
    """The reference for ``train_fused``: the same recipe, one model at a time.

    Each model (a deep copy; the inputs are not modified) is trained with
    ``torch.optim.Adam``/``AdamW`` and ``nn.MSELoss`` on the batches ``train_fused`` gives it.
    Same arguments and result as ``train_fused`` (each copy trains on ``device``, or where its
    model is); models need not be built alike, but dropout layers draw their masks as in a
    trial of their own.
    """
    _check_run(models, x, y, lrs, weight_decays, epochs, batch_size, optimizer)
    orders = batch_orders(seed, len(models))
    results: list[dict[str, torch.Tensor]] = []
    loss_fn = nn.MSELoss()
    for original, lr, wd, order_rng in zip(models, lrs, weight_decays, orders, strict=True):
        target = _device_of(original) if device is None else torch.device(device)
        model = copy.deepcopy(original).to(target).train()
        xd, yd = x.to(target), y.to(target)
        n = xd.shape[0]
        opt_class = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
        opt = opt_class(model.parameters(), lr=lr, weight_decay=wd)
        for _ in range(epochs):
            order = torch.from_numpy(order_rng.permutation(n)).to(target)
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                loss = loss_fn(model(xd[rows]), yd[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return results
