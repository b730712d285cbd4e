"""Counting the calls that make the host wait for the device, per training batch.

A training step that reads a value back (``.item()``, ``float(t)``, ``if t:``), copies to the
host (``.cpu()``, ``.numpy()``, ``.tolist()``), or runs an operation whose output size depends
on the data (``nonzero``, boolean-mask indexing, ``bincount``, ``unique``, ``repeat_interleave``
without ``output_size``) stalls the CPU until the GPU has caught up, so the GPU then idles while
Python prepares the next batch. A blocking copy of host data to the device (a pageable tensor
built from numpy inside the step) waits too.

``SyncGuard`` counts such calls while it is active:

- on CUDA, with ``torch.cuda.set_sync_debug_mode`` ("warn" counts the warnings; "error" makes
  the first synchronising operation raise), which sees every synchronising operation,
  Python-level or not;
- on any device, by patching the Python entry points listed above and counting the calls made
  from the thread that entered the guard. On a CPU these calls cost nothing, but the same code
  on a GPU would wait, so the count is the CPU's stand-in for ``set_sync_debug_mode``. Calls
  made by ``torch.optim`` are not counted: optimisers keep their step counts on the host
  unless ``capturable``, so their ``.item()`` never touches the device.

``per_batch_syncs`` applies a guard to every call of the training loop's per-batch step
(``trainer.training.epochs.train_step``) and records one count per batch. Patching is
process-wide: this is a diagnostic for tests and ``bench/gpu_check.py``, not for a serving
trainer.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

_EXEMPT_CALLERS = ("torch.optim",)
"""Modules whose calls are not counted (their tensors live on the host; see the docstring)."""

_TENSOR_METHODS = ("item", "tolist", "numpy", "cpu", "nonzero", "unique", "bincount")
_TENSOR_DUNDERS = ("__bool__", "__int__", "__float__", "__index__")
_TORCH_FUNCTIONS = ("nonzero", "masked_select", "unique", "bincount", "from_numpy", "as_tensor")


def _is_mask(index: object) -> bool:
    """Whether an indexing key holds a boolean tensor (indexing with it calls ``nonzero``)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype in (torch.bool, torch.uint8) for p in parts)


def _caller_module(depth: int) -> str:
    return str(sys._getframe(depth).f_globals.get("__name__", ""))


@dataclass
class SyncGuard:
    """Counts synchronising calls made while it is entered (see the module docstring).

    ``device``: where the code under watch runs; on CUDA ``set_sync_debug_mode`` is used too,
    in mode ``cuda_mode`` ("warn": count, "error": raise at the first one).
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cuda_mode: str = "warn"
    calls: list[str] = field(default_factory=list)
    """What was called, one entry per synchronising call (e.g. "Tensor.item from trainer.x")."""

    _thread: int = 0
    _saved: list[tuple[Any, str, Any, bool]] = field(default_factory=list)
    _mode_before: int = 0
    _warnings: Any = None
    _records: list[warnings.WarningMessage] | None = None

    @property
    def count(self) -> int:
        """Synchronising calls seen so far."""
        return len(self.calls) + self._cuda_count()

    def _cuda_count(self) -> int:
        if self._records is None:
            return 0
        return sum("synchroniz" in str(w.message) for w in self._records)

    def _note(self, what: str) -> None:
        if threading.get_ident() != self._thread:
            return
        caller = _caller_module(3)
        if caller.startswith(_EXEMPT_CALLERS):
            return
        self.calls.append(f"{what} from {caller}")

    def _wrap(self, owner: Any, name: str, check: Callable[..., bool] | None = None) -> None:
        original = getattr(owner, name)
        guard = self

        def counting(*args: Any, **kwargs: Any) -> Any:
            if check is None or check(*args, **kwargs):
                guard._note(f"{getattr(owner, '__name__', owner)}.{name}")
            return original(*args, **kwargs)

        self._saved.append((owner, name, original, name in vars(owner)))
        setattr(owner, name, counting)

    def __enter__(self) -> SyncGuard:
        self._thread = threading.get_ident()
        for name in _TENSOR_METHODS + _TENSOR_DUNDERS:
            self._wrap(torch.Tensor, name)
        for name in _TORCH_FUNCTIONS:
            self._wrap(torch, name)
        self._wrap(torch.Tensor, "__getitem__", lambda _self, key: _is_mask(key))
        self._wrap(torch.Tensor, "__setitem__", lambda _self, key, _value: _is_mask(key))
        self._wrap(torch, "where", lambda *args, **kwargs: len(args) + len(kwargs) == 1)
        # The output size of repeat_interleave with tensor repeats is their sum, read back
        # from the device unless the caller passes output_size.
        self._wrap(torch, "repeat_interleave", _repeat_needs_sync)
        self._wrap(torch.Tensor, "repeat_interleave", _repeat_needs_sync)
        self._wrap(torch.Tensor, "to", _copies_to_host)
        self._wrap(torch, "tensor", lambda *args, **kwargs: True)
        if self.device.type == "cuda":
            self._mode_before = torch.cuda.get_sync_debug_mode()
            if self.cuda_mode == "warn":
                self._warnings = warnings.catch_warnings(record=True)
                self._records = self._warnings.__enter__()
                warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode(self.cuda_mode)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(self._mode_before)
            if self._warnings is not None:
                kept = list(self._records or [])
                self._warnings.__exit__(None, None, None)
                self._records = kept
                self._warnings = None
        for owner, name, original, own in reversed(self._saved):
            if own:
                setattr(owner, name, original)
            else:  # inherited (e.g. from torch._C.TensorBase): inherit it again
                delattr(owner, name)
        self._saved.clear()


def _repeat_needs_sync(*args: Any, **kwargs: Any) -> bool:
    """Whether a ``repeat_interleave`` call reads its output size back: tensor repeats (the
    second argument, or the only one: ``repeat_interleave(repeats)``) and no output_size."""
    if len(args) == 1 and "repeats" not in kwargs:
        repeats = args[0]
    else:
        repeats = kwargs.get("repeats", args[1] if len(args) > 1 else None)
    return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None


def _copies_to_host(self: torch.Tensor, *args: Any, **kwargs: Any) -> bool:
    """Whether ``Tensor.to`` moves a device tensor to the host."""
    if self.device.type == "cpu":
        return False
    target = kwargs.get("device", args[0] if args else None)
    if isinstance(target, str | torch.device):
        return torch.device(target).type == "cpu"
    return False


@dataclass
class BatchSyncs:
    """Synchronising calls of every training step run while ``per_batch_syncs`` was active."""

    per_batch: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    """Up to ten of the calls seen, for the error message of a failing check."""

    @property
    def batches(self) -> int:
        return len(self.per_batch)

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_batch)) if self.per_batch else 0.0


@contextmanager
def per_batch_syncs(
    device: torch.device | str = "cpu", cuda_mode: str = "warn"
) -> Iterator[BatchSyncs]:
    """Count the synchronising calls of each training step of ``train`` run inside this block."""
    from trainer.training import epochs

    record = BatchSyncs()
    step = epochs.train_step

    def guarded(*args: Any, **kwargs: Any) -> Any:
        with SyncGuard(torch.device(device), cuda_mode) as guard:
            out = step(*args, **kwargs)
        record.per_batch.append(guard.count)
        record.examples.extend(guard.calls[: max(10 - len(record.examples), 0)])
        return out

    epochs.train_step = guarded
    try:
        yield record
    finally:
        epochs.train_step = step
