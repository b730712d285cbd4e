"""A CUDA stream of its own for every trial, so trials sharing a GPU do not queue behind each
other.

Torch queues the kernels of every thread on the device's default stream unless told
otherwise, so the slots of a trainer, each a thread, would run their kernels one after another
however idle the GPU is. ``own_stream`` makes a stream current in the calling thread for the
length of a trial (the current stream is per thread in torch), and ``on_own_stream`` runs a
trial function under it. Off CUDA both do nothing.

Streams are handed out from a free list (``StreamPool``): a trial takes one, the next trial of
the same slot gets it back, so a trainer with N slots uses N streams. That matters for memory:
torch's caching allocator reuses a freed block only for allocations on the stream that used
it, so a fresh stream per trial would strand every finished trial's cached memory.

Ordering: the new stream first waits for what the thread had queued on its previous stream
(nothing is read before it is written), and the trial ends by waiting for its stream once, so
its tensors may be freed or read by anyone afterwards. Data shared between trials (the device
copies of ``trainer.featurize.on_device``) are complete before they are shared.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


class StreamPool(Generic[S]):
    """Streams per device, each lent to one trial at a time: ``take`` the one returned last
    (or a new one from ``create(device)``), ``give_back`` when the trial ends."""

    def __init__(self, create: Callable[[torch.device], S]) -> None:
        self._create = create
        self._free: dict[Hashable, list[S]] = {}
        self._lock = threading.Lock()

    def take(self, device: torch.device) -> S:
        with self._lock:
            free = self._free.setdefault(_device_key(device), [])
            if free:
                return free.pop()
        return self._create(device)

    def give_back(self, device: torch.device, stream: S) -> None:
        with self._lock:
            self._free.setdefault(_device_key(device), []).append(stream)


def _device_key(device: torch.device) -> Hashable:
    if device.type == "cuda" and device.index is None:
        return ("cuda", torch.cuda.current_device())
    return (device.type, device.index)


_streams: StreamPool[torch.cuda.Stream] = StreamPool(lambda d: torch.cuda.Stream(device=d))


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
    stream = _streams.take(cuda)
    stream.wait_stream(torch.cuda.current_stream(cuda))
    try:
        with torch.cuda.stream(stream):
            yield stream
    finally:
        stream.synchronize()  # once per trial: its tensors are then safe to free or read
        _streams.give_back(cuda, stream)


def on_own_stream(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run under :func:`own_stream` of the device of its first argument (an object with
    a ``device`` attribute, such as a ``TrainConfig``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with own_stream(getattr(args[0], "device", None) if args else None):
            return fn(*args, **kwargs)

    return wrapper
