"""Mixed precision (``amp``) for the hidden layers of a trial's training steps.

bfloat16 on GPUs that compute it natively (compute capability 8.0 and newer), float16 with a
gradient scaler on older GPUs, off on the CPU (:func:`autocast_dtype`). Only the per-atom (or
per-position) layers before the readout run in reduced precision
(:func:`mixed_precision_layers`); readouts (pooling), heads, the output layer and the loss stay
in float32, and every evaluation (validation, test, predictions) runs in float32 throughout
(:class:`MixedPrecision`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from trainer.models.gnn import AttentiveFPRegressor
from trainer.models.mlp import MLP
from trainer.models.schnet import SchNet


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision ``amp`` runs hidden layers in on ``device``; None: none (off).

    bfloat16 where the GPU computes it natively (``torch.cuda.is_bf16_supported`` with
    emulation not counted: compute capability 8.0 and newer). Older GPUs (V100, T4) would
    emulate it slowly, so they get float16, which they compute natively, with loss scaling
    against underflow. Off CUDA, None: CPU autocast would only slow small models down.
    """
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native_bf16 else torch.float16


def mixed_precision_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that ``amp`` may run in reduced precision.

    They are the per-atom (or per-position) layers before the readout: convolutions, message
    passing and the MLP's hidden layers. Pooling and the other readouts, the head, the output
    layer and the loss are never among them. A model of unknown structure gets none, so
    ``amp`` leaves it in float32.
    """
    if isinstance(model, MLP):
        linears: list[nn.Module] = [m for m in model.net if isinstance(m, nn.Linear)]
        return linears[:-1]
    if isinstance(model, AttentiveFPRegressor):
        net = model.net
        return [net.lin1, net.gate_conv, net.gru, *net.atom_convs, *net.atom_grus]
    if isinstance(model, SchNet):
        return list(model.net.interactions)
    for name in ("convs", "layers"):  # GIN, GCN, GAT and the SMILES CNN; the EGNN
        hidden = getattr(model, name, None)
        if isinstance(hidden, nn.ModuleList):
            return list(hidden)
    return []


def _to_float32(value: Any) -> Any:
    """``value`` with every float16/bfloat16 tensor in it (also in tuples) cast to float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    return value


class MixedPrecision:
    """``amp`` for one model: autocast to ``dtype`` over its :func:`mixed_precision_layers`
    only, and only within :meth:`step` (the forward pass of a training step).

    Each such layer enters autocast when called and leaves it when it returns, its output
    cast back to float32, so what follows computes in float32: readouts (a sum pooling of
    bfloat16 values would round at every addition), heads, the output layer and the loss.
    Outside ``step`` (evaluation, predictions) the model runs in float32 throughout. With
    ``dtype`` None (no ``amp``, or a device without it) nothing is installed and ``step`` is
    a no-op. The autocast state is per thread, as torch's is; a model trains in one thread.
    """

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype | None) -> None:
        self.dtype = dtype
        self.device_type = device_type
        self.layers = mixed_precision_layers(model) if dtype is not None else []
        self._local = threading.local()
        for layer in self.layers:
            layer.register_forward_pre_hook(self._enter)
            layer.register_forward_hook(self._leave, always_call=True)

    def _entered(self) -> list[tuple[nn.Module, torch.autocast]] | None:
        """This thread's autocast contexts of layers running now; None outside ``step``."""
        entered: list[tuple[nn.Module, torch.autocast]] | None = getattr(
            self._local, "entered", None
        )
        return entered

    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        entered = self._entered()
        if entered is not None:
            context = torch.autocast(self.device_type, dtype=self.dtype)
            context.__enter__()
            entered.append((module, context))

    def _leave(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        entered = self._entered()
        if not entered or entered[-1][0] is not module:
            return None
        entered.pop()[1].__exit__(None, None, None)
        return _to_float32(output)

    def step(self) -> AbstractContextManager[None]:
        """The context of a training step's forward pass: ``amp`` on for the hidden layers."""
        return self._stepping() if self.layers else nullcontext()

    @contextmanager
    def _stepping(self) -> Iterator[None]:
        self._local.entered = []
        try:
            yield
        finally:
            entered = self._local.entered
            self._local.entered = None
            while entered:  # left open by a layer whose forward raised
                entered.pop()[1].__exit__(None, None, None)
