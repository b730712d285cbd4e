"""The training step of every model family never makes the host wait for the device.

On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` makes any synchronising operation of the
step raise; on a CPU, ``SyncGuard`` counts the Python-level calls that would synchronise there
(see ``trainer.training.sync_guard``). Either way each step must count zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from molhpo.contract import catalogue
from trainer.training import TrainConfig, train
from trainer.training.precision import autocast_dtype
from trainer.training.sync_guard import SyncGuard, per_batch_syncs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
AMP = not CUDA or autocast_dtype(torch.device(DEVICE)) == torch.bfloat16
"""amp on, except on GPUs without native bfloat16: their float16 loss scaling reads an
overflow flag back after every step (GradScaler.step), a known wait the test leaves out."""

TINY: dict[str, dict[str, object]] = {
    "mlp": {"units": 32, "dropout": 0.2},
    "cnn": {"filters": 16, "dropout": 0.2},
    "gin": {"hidden_channels": 16, "num_layers": 2, "dropout": 0.2},
    "gcn": {"hidden_channels": 16, "num_layers": 2, "dropout": 0.2},
    "gat": {"hidden_channels": 16, "num_layers": 2, "dropout": 0.2},
    "attentivefp": {"hidden_channels": 16, "num_layers": 2, "dropout": 0.2},
    "egnn": {"hidden_channels": 16, "num_layers": 2, "cutoff": 3.0, "dropout": 0.2},
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 1},
}
"""Small settings for every trainable family; dropout on where the family has it."""


def test_every_trainable_family_is_covered() -> None:
    trainable = {name for name in catalogue.MODELS if name != catalogue.SYNTHETIC}
    assert set(TINY) == trainable


@pytest.mark.parametrize("model", sorted(TINY))
def test_training_steps_never_synchronise(model: str) -> None:
    params: dict[str, Any] = {**TINY[model], "batch_size": 16, "grad_clip": 1.0, "amp": AMP}
    config = TrainConfig(
        "freesolv", model, params, max_epochs=2, max_molecules=48, seed=1, device=DEVICE
    )
    with per_batch_syncs(DEVICE, cuda_mode="error") as syncs:
        result = train(config, lambda epoch: True)
    assert result.epochs_trained == 2
    assert syncs.batches >= 4  # 38 training molecules, batches of 16, two epochs
    assert syncs.per_batch == [0] * syncs.batches, syncs.examples


def test_the_guard_sees_what_synchronises() -> None:
    x = torch.arange(6.0)
    repeats = torch.tensor([1, 0, 2, 1, 0, 1])
    with SyncGuard() as guard:
        x.sum().item()
        bool(x.max() > 2)
        _ = x[x > 2]
        torch.repeat_interleave(x, repeats)
        torch.repeat_interleave(repeats)
        torch.from_numpy(np.arange(3))
        torch.tensor([1.0, 2.0])
    with SyncGuard() as silent:
        torch.repeat_interleave(x, repeats, output_size=5)
        torch.repeat_interleave(repeats, output_size=5)
        torch.repeat_interleave(x, 2)
        _ = x[torch.arange(2)]
        x.sum() * 2
    assert guard.count == 7, guard.calls
    assert silent.count == 0, silent.calls
    assert x.sum().item() == 15.0  # the patches are gone afterwards


def test_the_guard_ignores_other_threads_and_the_optimisers_host_counters() -> None:
    import threading

    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([w], lr=0.1)
    with SyncGuard() as guard:
        thread = threading.Thread(target=lambda: torch.ones(2).sum().item())
        thread.start()
        thread.join()
        (w * 2).sum().backward()
        optimizer.step()  # Adam reads its step count, a host tensor, with .item()
    assert guard.count == 0, guard.calls


def test_a_step_that_reads_back_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.training import epochs

    step = epochs.train_step

    def reading(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = step(*args, **kwargs)
        out.item()
        return out

    monkeypatch.setattr(epochs, "train_step", reading)
    config = TrainConfig("freesolv", "mlp", {"units": 8, "batch_size": 16}, 1, max_molecules=40)
    with per_batch_syncs("cpu") as syncs:
        train(config, lambda epoch: True)
    assert syncs.per_batch == [1] * syncs.batches
