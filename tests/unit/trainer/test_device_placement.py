"""The device handed to each entry point that computes with a model (training, prediction,
fused training) is where its model and its inputs are.

A machine without a GPU has one device besides the CPU that every torch build knows: "meta"
(tensors with shapes and no data). Handing it over shows that the device reaches the model and
the inputs, where "cpu" could not tell a hand-over from the CPU default; the computation then
stops at the first step that needs values, after the placement was seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from trainer.models.mlp import MLP, DenseLayerSpec
from trainer.placement import Placement, watch_placements
from trainer.predict import Predictor, clear_predictor_cache
from trainer.training.fused import train_fused, train_separately
from trainer.training.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = ["cpu", "meta"] + (["cuda:0"] if torch.cuda.is_available() else [])


@pytest.fixture
def placements() -> Iterator[list[Placement]]:
    seen: list[Placement] = []
    stop = watch_placements(seen.append)
    clear_predictor_cache()
    yield seen
    stop()
    clear_predictor_cache()


def on(device: str) -> torch.device:
    return torch.device(device)


SMALL: dict[str, dict[str, object]] = {
    "mlp": {"units": 16},
    "gin": {"hidden_channels": 16},
    "cnn": {"filters": 16},
    "egnn": {"hidden_channels": 16},
}


def config(device: str | None, model: str = "mlp") -> TrainConfig:
    return TrainConfig(
        "freesolv", model, SMALL[model], max_epochs=1, max_molecules=60, device=device
    )


class KeepLast:
    """A checkpoint sink that keeps the last payload in memory."""

    payload: dict[str, Any] = {}

    def wants(self, value: float) -> bool:
        return True

    def save(self, step: int, value: float, payload: dict[str, Any]) -> None:
        self.payload = payload


def run_until_it_needs_values(fn: Any, device: str) -> None:
    """``fn()``; on "meta" it must fail once it needs a value, which is expected there."""
    if device == "meta":
        with pytest.raises((RuntimeError, NotImplementedError)):
            fn()
    else:
        fn()


@pytest.mark.parametrize("device", DEVICES)
def test_training_computes_on_the_device_of_its_config(
    device: str, placements: list[Placement]
) -> None:
    run_until_it_needs_values(lambda: train(config(device), lambda _e: True), device)
    assert placements[0] == Placement("train", device, on(device), (on(device),))


@pytest.mark.parametrize("model", ["gin", "cnn", "egnn"])
def test_every_input_of_every_featuriser_is_on_the_device(
    model: str, placements: list[Placement]
) -> None:
    train(config("cpu", model), lambda _e: True)
    first = placements[0]
    assert (first.entry, first.requested, first.parameters) == ("train", "cpu", on("cpu"))
    assert first.inputs and set(first.inputs) == {on("cpu")}


@pytest.mark.parametrize("device", DEVICES)
def test_prediction_computes_on_the_device_it_was_handed(
    device: str, placements: list[Placement]
) -> None:
    sink = KeepLast()
    train(config(None), lambda _e: True, sink)
    placements.clear()
    predictor = Predictor.from_payload(sink.payload, device=device)
    run_until_it_needs_values(lambda: predictor.predict(["CCO", "c1ccccc1"]), device)
    assert placements == [Placement("predict", device, on(device), (on(device),))]


@pytest.mark.parametrize("device", DEVICES)
def test_fused_training_computes_on_the_device_it_was_handed(
    device: str, placements: list[Placement]
) -> None:
    torch.manual_seed(0)
    models = [MLP(8, [DenseLayerSpec(8, 0.1, 0.0)]) for _ in range(3)]
    x, y = torch.randn(20, 8), torch.randn(20)
    states = train_fused(models, x, y, [1e-3] * 3, [0.0] * 3, 1, 8, device=device)
    assert placements == [Placement("fused", device, on(device), (on(device), on(device)))]
    assert {t.device for s in states for t in s.values()} == {on(device)}
    assert {p.device for m in models for p in m.parameters()} == {on("cpu")}  # not moved
    if device != "meta":
        alone = train_separately(models, x, y, [1e-3] * 3, [0.0] * 3, 1, 8, device=device)
        assert {t.device for s in alone for t in s.values()} == {on(device)}


def test_no_device_handed_over_shows_as_none(placements: list[Placement]) -> None:
    sink = KeepLast()
    train(config(None), lambda _e: True, sink)
    Predictor.from_payload(sink.payload).predict(["CCO"])
    assert [(p.entry, p.requested, p.parameters) for p in placements] == [
        ("train", None, on("cpu")),
        ("predict", None, on("cpu")),
    ]


def test_nothing_is_recorded_once_the_watcher_stopped() -> None:
    seen: list[Placement] = []
    stop = watch_placements(seen.append)
    stop()
    train(config("cpu"), lambda _e: True)
    assert seen == []
