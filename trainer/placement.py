"""Where the entry points that compute with a model did their work, for whoever watches.

A trainer resolves its device once and hands it to every entry point: training
(``trainer.training.loop.train``), predictions (``trainer.predict.Predictor``) and fused
training (``trainer.training.fused.train_fused``). Each reports a :class:`Placement` of its
work to the watchers of :func:`watch_placements`, so tests and diagnostics can see that the
setting reaches the work. While nobody watches, nothing is recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Placement:
    """Where one call of an entry point that computes with a model did its work.

    ``entry`` is "train" (``trainer.training.loop.train``), "predict"
    (``trainer.predict.Predictor``) or "fused" (``trainer.training.fused.train_fused``);
    ``requested`` is the device it was handed (None: none was, so the CPU default applied);
    ``parameters`` is where the model's weights were and ``inputs`` where the tensors of its
    forward pass were. A trainer hands its resolved device to every entry point, so all three
    agree with that device; a hand-over that goes missing shows as ``requested`` None, even on
    a machine where the CPU is the device anyway.
    """

    entry: str
    requested: str | None
    parameters: torch.device
    inputs: tuple[torch.device, ...]


_placement_watchers: list[Callable[[Placement], None]] = []
_placement_lock = threading.Lock()


def watch_placements(watcher: Callable[[Placement], None]) -> Callable[[], None]:
    """Call ``watcher`` with the :class:`Placement` of every training run (its first forward
    pass), prediction chunk and fused run in this process from now on, in the thread doing
    the work; returns the function that stops it. For checking that the device setting
    reaches the work (tests, diagnostics); while nobody watches, nothing is recorded."""
    with _placement_lock:
        _placement_watchers.append(watcher)

    def stop() -> None:
        with _placement_lock:
            if watcher in _placement_watchers:
                _placement_watchers.remove(watcher)

    return stop


def report_placement(
    entry: str, requested: str | None, parameters: torch.device, inputs: Iterable[object]
) -> None:
    """Tell the watchers where ``entry`` computed; non-tensors among ``inputs`` are skipped."""
    with _placement_lock:
        watchers = list(_placement_watchers)
    if not watchers:
        return
    devices = tuple(t.device for t in inputs if isinstance(t, torch.Tensor))
    placement = Placement(entry, requested, parameters, devices)
    for watcher in watchers:
        watcher(placement)


def parameter_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def report_first_forward(model: nn.Module, requested: str | None) -> None:
    """Report where ``model``'s next forward pass computes (a one-shot pre-hook, installed
    only while anyone watches)."""
    with _placement_lock:
        if not _placement_watchers:
            return

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        handle.remove()
        report_placement("train", requested, parameter_device(module), args)

    handle = model.register_forward_pre_hook(hook)
