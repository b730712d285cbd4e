"""The checkpoint and resume-state formats of ``trainer.checkpoint``: their keys, reading them
back, and where one attempt of a trial keeps them in the artifact store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molhpo.contract.catalogue import resolve_params
from molhpo.contract.errors import InvalidArgument
from storage.artifacts import ArtifactStore
from trainer.checkpoint import (
    CHECKPOINT_FORMAT,
    REQUIRED_KEYS,
    RESUME_FORMAT,
    UnusableResumeState,
    build_from_checkpoint,
    check_checkpoint,
    checkpoint_payload,
    read_checkpoint,
    restore_resume_state,
    resume_state,
    trial_stores,
)
from trainer.models import build_model
from trainer.training.recipe import Schedule, make_optimizer

PARAMS = {"units": 8, "lr": 1e-3, "scheduler": "cosine"}
CPU = torch.device("cpu")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", PARAMS, 4, 0)


def _payload(model: torch.nn.Module) -> dict[str, object]:
    return checkpoint_payload(
        model_name="mlp",
        params=PARAMS,
        in_features=4,
        edge_features=0,
        model=model,
        y_mean=1.5,
        y_std=2.0,
        metric="rmse",
        valid_metrics={"rmse": 0.5},
        dataset="freesolv",
        split=["random", 0, 0.1, 0.1],
        inputs={"featurizer": "rdkit_descriptors"},
        data_request={"name": "freesolv"},
        max_molecules=0,
    )


def test_a_checkpoint_holds_the_documented_keys_and_rebuilds_its_model(tmp_path: Path) -> None:
    model = _model()
    payload = _payload(model)
    assert payload["format"] == CHECKPOINT_FORMAT
    assert set(REQUIRED_KEYS) <= set(payload)
    assert set(payload) == {
        *REQUIRED_KEYS,
        "format",
        "metric",
        "valid_metrics",
        "dataset",
        "split",
        "featurizer",
        "data_request",
        "max_molecules",
    }
    ArtifactStore(tmp_path).write(tmp_path / "epoch-00001.pt", payload)
    read = read_checkpoint(tmp_path / "epoch-00001.pt")
    check_checkpoint(read, "here")
    rebuilt = build_from_checkpoint(read, "here")
    x = torch.ones(3, 4)
    torch.testing.assert_close(rebuilt(x), model.eval()(x))
    with pytest.raises(InvalidArgument, match="lacks y_std"):
        check_checkpoint({k: v for k, v in read.items() if k != "y_std"}, "here")


def _learner_parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, Schedule]:
    params = resolve_params("mlp", PARAMS)
    model = _model()
    optimizer = make_optimizer(params, model)
    return model, optimizer, Schedule(params, optimizer, 10, "minimize")


def test_a_resume_state_comes_back_into_a_fresh_trial() -> None:
    model, optimizer, schedule = _learner_parts()
    rng = np.random.default_rng(3)
    rng.permutation(10)
    state = resume_state(
        model_name="mlp",
        epoch=2,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        order_rng=rng,
        best_step=1,
        best_value=0.7,
        best_metrics={"rmse": 0.7},
        best_state=model.state_dict(),
    )
    assert state["format"] == RESUME_FORMAT
    fresh_model, fresh_optimizer, fresh_schedule = _learner_parts()
    fresh_rng = np.random.default_rng(3)
    point = restore_resume_state(
        state, "mlp", fresh_model, fresh_optimizer, fresh_schedule, fresh_rng, CPU
    )
    assert point is not None and (point.epoch, point.best_step, point.best_value) == (2, 1, 0.7)
    assert np.array_equal(fresh_rng.permutation(10), rng.permutation(10))
    # another family's state, or none, is not this trial's: nothing is loaded
    assert restore_resume_state(state, "gin", *_learner_parts(), fresh_rng, CPU) is None
    assert restore_resume_state(None, "mlp", *_learner_parts(), fresh_rng, CPU) is None
    broken = {**state, "model_state": {"nothing": torch.zeros(1)}}
    with pytest.raises(UnusableResumeState, match="after epoch 2 does not fit it"):
        restore_resume_state(broken, "mlp", *_learner_parts(), fresh_rng, CPU)


def test_a_first_attempt_clears_the_resume_file_a_later_one_keeps_it(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    sink, resume = trial_stores(store, "s", 3, attempt=1, every=0, keep=0, direction="minimize")
    assert resume.every == 5  # 0: the default
    resume.save({"format": RESUME_FORMAT, "epoch": 1})
    assert trial_stores(store, "s", 3, attempt=2, every=2, keep=1, direction="minimize")[
        1
    ].load() == {"format": RESUME_FORMAT, "epoch": 1}
    _, again = trial_stores(store, "s", 3, attempt=1, every=2, keep=1, direction="minimize")
    assert again.load() is None
    for step, value in [(1, 3.0), (2, 1.0)]:
        if sink.wants(value):
            sink.save(step, value, {})
    assert [e["step"] for e in store.index("s", 3)] == [2]  # keep 0: one checkpoint
