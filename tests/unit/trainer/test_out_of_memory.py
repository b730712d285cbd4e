"""Running out of memory is a resource failure (``out_of_memory``) that the coordinator
dispatches again, not a bad configuration.

The error is raised where a GPU raises it, inside a forward pass, by a process-wide module
hook (torch's own ``register_module_forward_pre_hook``), so no GPU is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from coordinator.retry import DEFAULT_MAX_ATTEMPTS, RETRYABLE, should_retry
from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import InvalidConfigError, TrainingError
from trainer.training.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@contextmanager
def failing_forward(after: int, error: Callable[[], BaseException]) -> Iterator[list[int]]:
    """Every module call after the first ``after`` raises ``error()``; yields the call count."""
    calls = [0]

    def hook(_module: nn.Module, _args: object) -> None:
        calls[0] += 1
        if calls[0] > after:
            raise error()

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def config(model: str = "mlp") -> TrainConfig:
    params = {"units": 16} if model == "mlp" else {"hidden_channels": 16, "num_layers": 1}
    return TrainConfig("freesolv", model, params, max_epochs=3, max_molecules=80, device="cpu")


CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)"


@pytest.mark.parametrize("model", ["mlp", "gin"])
@pytest.mark.parametrize("after", [0, 40], ids=["first-step", "later-step"])
def test_out_of_memory_in_a_training_step_is_a_resource_failure(model: str, after: int) -> None:
    with (
        failing_forward(after, lambda: torch.OutOfMemoryError(CUDA_OOM)) as calls,
        pytest.raises(TrainingError) as caught,
    ):
        train(config(model), lambda _e: True)
    assert calls[0] > after  # it did fail inside the training, where it was raised
    err = caught.value
    assert not isinstance(err, InvalidConfigError)
    assert err.failure_class == FailureClass.OUT_OF_MEMORY == "out_of_memory"
    assert "ran out of memory on cpu with batch_size" in str(err)
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in str(err)
    assert isinstance(err.__cause__, torch.OutOfMemoryError)


def test_host_memory_running_out_is_classified_alike() -> None:
    with failing_forward(0, MemoryError), pytest.raises(TrainingError) as caught:
        train(config(), lambda _e: True)
    assert caught.value.failure_class == FailureClass.OUT_OF_MEMORY


def test_other_errors_in_a_step_are_not_taken_for_memory() -> None:
    with failing_forward(0, lambda: RuntimeError("a bug")), pytest.raises(RuntimeError) as caught:
        train(config(), lambda _e: True)
    assert not isinstance(caught.value, TrainingError)


def test_the_coordinator_dispatches_an_out_of_memory_trial_again_within_the_bound() -> None:
    assert FailureClass.OUT_OF_MEMORY in RETRYABLE
    for attempt in range(1, DEFAULT_MAX_ATTEMPTS):
        assert should_retry(FailureClass.OUT_OF_MEMORY, attempt, DEFAULT_MAX_ATTEMPTS)
    assert not should_retry(FailureClass.OUT_OF_MEMORY, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_ATTEMPTS)
    assert not should_retry(InvalidConfigError("too big").failure_class, 1, DEFAULT_MAX_ATTEMPTS)
