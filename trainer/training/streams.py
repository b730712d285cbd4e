"""A CUDA stream of its own for every trial, so trials sharing a GPU do not queue behind each
other.

Torch queues the kernels of every thread on the device's default stream unless told
otherwise, so the slots of a trainer, each a thread, would run their kernels one after another
however idle the GPU is. ``own_stream`` gives the calling thread a stream from torch's pool for
the length of a trial (the current stream is per thread in torch), and ``on_own_stream`` runs
a trial function under it. Off CUDA both do nothing.

Ordering: the new stream first waits for what the thread had queued on its previous stream
(nothing is read before it is written), and the trial ends by waiting for its stream once, so
its tensors may be freed or read by anyone afterwards. Data shared between trials (the device
copies of ``trainer.featurize.on_device``) are complete before they are shared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")


def _cuda_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` when it names a usable CUDA device; None otherwise (also when unparsable:
    the trial itself reports a bad device)."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        return None
    if parsed.type != "cuda" or not torch.cuda.is_available():
        return None
    return parsed


@contextmanager
def own_stream(device: str | torch.device | None) -> Iterator[torch.cuda.Stream | None]:
    """Run the block on a CUDA stream of its own on ``device`` (None and a no-op off CUDA)."""
    cuda = _cuda_device(device)
    if cuda is None:
        yield None
        return
    stream = torch.cuda.Stream(device=cuda)
    stream.wait_stream(torch.cuda.current_stream(cuda))
    try:
        with torch.cuda.stream(stream):
            yield stream
    finally:
        stream.synchronize()  # once per trial: its tensors are then safe to free or read


def on_own_stream(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run under :func:`own_stream` of the device of its first argument (an object with
    a ``device`` attribute, such as a ``TrainConfig``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with own_stream(getattr(args[0], "device", None) if args else None):
            return fn(*args, **kwargs)

    return wrapper
