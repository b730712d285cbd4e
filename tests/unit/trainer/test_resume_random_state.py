"""Resuming restores each dropout layer's random state on the device the trial runs on, so a
resumed trial draws the masks an uninterrupted one would; a state that cannot be used starts
the trial over instead of failing it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from storage.artifacts import ArtifactStore, ResumeFile
from trainer.checkpoint import dropout_states, restore_dropout_states
from trainer.models.mlp import MLP, DenseLayerSpec
from trainer.training.loop import EpochResult, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
LAYERS = [DenseLayerSpec(16, 0.1, 0.5), DenseLayerSpec(16, 0.1, 0.3)]


def dropout_net(device: str) -> MLP:
    torch.manual_seed(7)  # the layers' seeds come from the global generator
    return MLP(8, LAYERS).to(device).train()


def masks(model: MLP, device: str, draws: int) -> list[torch.Tensor]:
    """The outputs of ``draws`` forward passes on the same input: they differ by their masks."""
    x = torch.ones(32, 8, device=device)
    with torch.no_grad():
        return [model(x).cpu() for _ in range(draws)]


@pytest.mark.parametrize("device", DEVICES)
def test_restored_generators_draw_the_masks_the_saved_ones_would(device: str) -> None:
    original = dropout_net(device)
    masks(original, device, 3)  # the generators have moved on from their seeds
    states = dropout_states(original)
    assert [s["device"] for s in states if s is not None] == [torch.device(device).type] * 2
    expected = masks(original, device, 2)

    resumed = dropout_net(device)
    resumed.load_state_dict(original.state_dict())
    restore_dropout_states(resumed, states, device)
    assert all(torch.equal(a, b) for a, b in zip(masks(resumed, device, 2), expected, strict=True))
    fresh = dropout_net(device)
    fresh.load_state_dict(original.state_dict())
    assert not torch.equal(masks(fresh, device, 1)[0], expected[0])  # the check can fail


def test_a_layer_that_drew_nothing_yet_starts_from_its_seed() -> None:
    model = dropout_net("cpu")
    assert dropout_states(model) == [None, None]
    restore_dropout_states(model, [None, None], "cpu")
    assert masks(model, "cpu", 1)[0].equal(masks(dropout_net("cpu"), "cpu", 1)[0])


def test_a_bare_tensor_from_an_older_resume_file_is_a_cpu_state() -> None:
    original = dropout_net("cpu")
    masks(original, "cpu", 2)
    bare = [s["state"] if s is not None else None for s in dropout_states(original)]
    expected = masks(original, "cpu", 1)[0]
    resumed = dropout_net("cpu")
    restore_dropout_states(resumed, bare, "cpu")
    assert masks(resumed, "cpu", 1)[0].equal(expected)


def test_a_state_of_another_device_type_is_not_forced_into_this_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A CUDA generator's state (Philox seed and offset, 16 bytes) restored on the CPU: a CPU
    # generator refuses it ("Expected a CPUGeneratorImplState of size 5056 but found 16").
    cuda_state = {"device": "cuda", "state": torch.zeros(16, dtype=torch.uint8)}
    model = dropout_net("cpu")
    with caplog.at_level(logging.WARNING):
        restore_dropout_states(model, [cuda_state, None], "cpu")
    assert "saved on cuda cannot be restored on cpu" in caplog.text
    assert masks(model, "cpu", 1)[0].equal(masks(dropout_net("cpu"), "cpu", 1)[0])


def test_states_of_another_model_are_refused() -> None:
    with pytest.raises(ValueError, match="3 saved dropout states for 2 dropout layers"):
        restore_dropout_states(dropout_net("cpu"), [None, None, None], "cpu")


def config(device: str | None) -> TrainConfig:
    return TrainConfig(
        dataset="freesolv",
        model="mlp",
        params={"units": 32, "dropout": 0.5, "num_extra_layers": 1, "dropout_1": 0.3},
        max_epochs=5,
        seed=11,
        max_molecules=120,
        device=device,
    )


def _recorder(into: list[EpochResult]) -> Callable[[EpochResult], bool]:
    """An on_epoch callback that keeps every epoch and lets training go on."""

    def record(ep: EpochResult) -> bool:
        into.append(ep)
        return True

    return record


def interrupted_after(config: TrainConfig, resume: ResumeFile, epoch: int) -> None:
    first = train(config, lambda ep: ep.step < epoch, resume=resume)
    assert first.stopped and first.epochs_trained == epoch


@pytest.mark.parametrize("device", DEVICES)
def test_a_dropout_model_resumed_on_its_device_ends_as_an_uninterrupted_run(
    device: str, tmp_path: Path
) -> None:
    whole_epochs: list[EpochResult] = []
    whole = train(config(device), _recorder(whole_epochs))

    resume = ResumeFile(ArtifactStore(tmp_path), "s", 0, every=2)
    interrupted_after(config(device), resume, 3)
    saved = resume.load()
    assert saved is not None and saved["epoch"] == 3
    assert [s["device"] for s in saved["dropout"]] == [torch.device(device).type] * 2

    later: list[EpochResult] = []
    second = train(config(device), _recorder(later), resume=resume)
    assert second.resumed_from == 3
    assert [ep.step for ep in later] == [4, 5]
    # same masks, same batches, same weights: the same losses and metrics, to the last bit
    # on the CPU (a GPU may differ in the last bits through atomic adds)
    exact = device == "cpu"
    for a, b in zip(later, whole_epochs[3:], strict=True):
        assert a.train_loss == (b.train_loss if exact else pytest.approx(b.train_loss))
        assert a.valid_metrics == (b.valid_metrics if exact else pytest.approx(b.valid_metrics))
    assert second.test_metrics == (
        whole.test_metrics if exact else pytest.approx(whole.test_metrics)
    )


def test_an_unusable_resume_state_starts_the_trial_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = train(config("cpu"), lambda _e: True)
    resume = ResumeFile(ArtifactStore(tmp_path), "s", 0, every=2)
    interrupted_after(config("cpu"), resume, 2)
    saved = resume.load()
    assert saved is not None
    saved["model_state"].popitem()  # e.g. written by a molhpo whose model had another layer
    resume.save(saved)

    epochs: list[EpochResult] = []
    with caplog.at_level(logging.WARNING):
        again = train(config("cpu"), _recorder(epochs), resume=resume)
    steps = [ep.step for ep in epochs]
    assert "does not fit it" in caplog.text and "starts over" in caplog.text
    assert again.resumed_from == 0 and steps == [1, 2, 3, 4, 5]
    assert again.test_metrics == whole.test_metrics
