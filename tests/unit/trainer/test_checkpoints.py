"""Top-k checkpoints of a trial in the artifact store, and rebuilding a model from one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from molhpo.contract.errors import InvalidArgument, NotFound
from storage.artifacts import ArtifactStore, TopKCheckpoints
from trainer.models.registry import build_model
from trainer.training.loop import TrainConfig, train


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_keeps_the_k_best_and_deletes_the_rest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    top = TopKCheckpoints(store, "s", 3, k=2, direction="minimize")
    for step, value in [(1, 5.0), (2, 3.0), (3, 4.0), (4, 1.0), (5, 9.0)]:
        if top.wants(value):
            top.save(step, value, {"w": step})
    assert [e["step"] for e in store.index("s", 3)] == [4, 2]
    assert sorted(p.name for p in store.trial_dir("s", 3).glob("*.pt")) == [
        "epoch-00002.pt",
        "epoch-00004.pt",
    ]
    assert store.read(store.best("s", 3))["w"] == 4
    assert not top.wants(9.0)


def test_maximize_keeps_the_largest(tmp_path: Path) -> None:
    top = TopKCheckpoints(ArtifactStore(tmp_path), "s", 0, k=1, direction="maximize")
    for step, value in [(1, 0.2), (2, 0.9), (3, 0.5)]:
        if top.wants(value):
            top.save(step, value, {})
    assert top.best_path is not None and top.best_path.name == "epoch-00002.pt"


def test_bad_names_and_missing_checkpoints(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(InvalidArgument):
        store.trial_dir("../escape", 0)
    with pytest.raises(NotFound):
        store.best("s", 99)
    with pytest.raises(InvalidArgument):
        TopKCheckpoints(store, "s", 0, k=0, direction="minimize")


def test_training_writes_a_checkpoint_that_rebuilds_the_best_model(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sink = TopKCheckpoints(store, "s", 1, k=2, direction="minimize")
    result = train(
        TrainConfig(
            dataset="freesolv", model="mlp", params={"units": 32}, max_epochs=5, max_molecules=120
        ),
        lambda ep: True,
        sink,
    )
    best = store.read(store.best("s", 1))
    assert best["step"] == result.best_step
    assert best["valid_metrics"] == result.best_valid_metrics
    assert len(list(store.trial_dir("s", 1).glob("*.pt"))) == 2
    model = build_model(best["model"], best["params"], best["in_features"], best["edge_features"])
    model.load_state_dict(best["state_dict"])
    assert sum(p.numel() for p in model.parameters()) == result.n_parameters
