"""A trial stopped mid-way resumes from its saved state and ends exactly as an uninterrupted
run would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from storage.artifacts import ArtifactStore, ResumeFile
from trainer.training.loop import EpochResult, TrainConfig, train


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("model", ["mlp", "gin"])
def test_resumed_run_matches_an_uninterrupted_one(model: str, tmp_path: Path) -> None:
    config = TrainConfig(
        dataset="freesolv",
        model=model,
        params={"dropout": 0.2, "scheduler": "cosine"},
        max_epochs=6,
        seed=3,
        max_molecules=120,
    )
    whole = train(config, lambda ep: True)

    resume = ResumeFile(ArtifactStore(tmp_path), "s", 0, every=2)
    steps: list[int] = []

    def stop_after_three(ep: EpochResult) -> bool:
        steps.append(ep.step)
        return ep.step < 3

    first = train(config, stop_after_three, resume=resume)
    assert first.stopped and first.epochs_trained == 3
    assert resume.load() is not None and resume.load()["epoch"] == 3  # type: ignore[index]

    later: list[int] = []

    def record(ep: EpochResult) -> bool:
        later.append(ep.step)
        return True

    second = train(config, record, resume=resume)
    assert second.resumed_from == 3
    assert later == [4, 5, 6]
    assert second.best_step == whole.best_step
    for k, v in whole.test_metrics.items():
        assert second.test_metrics[k] == pytest.approx(v, rel=1e-6, abs=1e-9)
