"""Predictions from checkpoints equal what the training loop measured on the same molecules."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from molhpo.contract.errors import InvalidArgument, NotFound
from molhpo.datasets import DatasetRequest, load_table, split_dataset
from storage.artifacts import ArtifactStore, TopKCheckpoints
from trainer.checkpoint import descriptor_statistics
from trainer.featurize import DescriptorFeatures, featurize, standardize
from trainer.predict import (
    Ensemble,
    Predictor,
    apply_statistics,
    clear_predictor_cache,
    load_predictor,
)
from trainer.training.data import subset
from trainer.training.loop import TrainConfig, TrainResult, train
from trainer.training.metrics import regression_metrics

SMALL: dict[str, dict[str, object]] = {
    "mlp": {"units": 32},
    "cnn": {"filters": 16},
    "gin": {"hidden_channels": 16, "num_layers": 2},
    "egnn": {"hidden_channels": 16, "num_layers": 2},
}
N_MOLECULES = 120


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    clear_predictor_cache()
    yield
    clear_predictor_cache()
    torch.set_num_threads(before)


def _config(model: str) -> TrainConfig:
    return TrainConfig(
        dataset="freesolv",
        model=model,
        params={**SMALL[model], "lr": 3e-3},
        max_epochs=3,
        max_molecules=N_MOLECULES,
    )


def _train(tmp_path: Path, model: str, k: int = 1) -> tuple[TrainResult, ArtifactStore]:
    store = ArtifactStore(tmp_path)
    sink = TopKCheckpoints(store, "s", 0, k=k, direction="minimize")
    return train(_config(model), lambda ep: True, sink), store


def _test_rows(config: TrainConfig) -> tuple[list[str], np.ndarray]:
    """The test SMILES and targets exactly as ``train`` selects them."""
    table = subset(
        load_table(DatasetRequest(name=config.dataset)), config.max_molecules, config.split_seed
    )
    _, _, test_rows = split_dataset(
        table,
        kind=config.split,
        seed=config.split_seed,
        valid_fraction=config.valid_fraction,
        test_fraction=config.test_fraction,
    )
    return [table.smiles[i] for i in test_rows], table.targets[test_rows]


@pytest.mark.parametrize("model", sorted(SMALL))
def test_predictions_reproduce_the_test_metrics(tmp_path: Path, model: str) -> None:
    result, store = _train(tmp_path, model)
    predictor = Predictor.from_checkpoint(store.best("s", 0))
    assert predictor.step == result.best_step
    smiles, targets = _test_rows(_config(model))
    predictions = predictor.predict(smiles)
    assert predictions.shape == (len(smiles),) and predictions.dtype == np.float64
    metrics = regression_metrics(targets, predictions)
    assert metrics["rmse"] == pytest.approx(result.test_metrics["rmse"], abs=1e-4)
    assert metrics["mae"] == pytest.approx(result.test_metrics["mae"], abs=1e-4)
    # chunking does not change anything
    np.testing.assert_allclose(predictor.predict(smiles, batch_size=3), predictions, atol=1e-5)


def test_bad_smiles_are_named_and_nothing_is_predicted(tmp_path: Path) -> None:
    _, store = _train(tmp_path, "gin")
    predictor = Predictor.from_checkpoint(store.best("s", 0))
    with pytest.raises(InvalidArgument) as err:
        predictor.predict(["CCO", "C1CC", "not-a-smiles", "c1ccccc1", ""])
    message = str(err.value)
    assert "#1 'C1CC'" in message and "#2 'not-a-smiles'" in message and "#4 ''" in message
    assert "3 of 5" in message and "CCO" not in message
    many = [f"C{'(' * (i + 1)}" for i in range(8)]
    with pytest.raises(InvalidArgument, match="and 3 more"):
        predictor.predict(many)
    with pytest.raises(InvalidArgument, match="single string"):
        predictor.predict("CCO")
    assert predictor.predict([]).shape == (0,)


def test_onehot_smiles_outside_the_alphabet_or_too_long_are_refused(tmp_path: Path) -> None:
    _, store = _train(tmp_path, "cnn")
    predictor = Predictor.from_checkpoint(store.best("s", 0))
    with pytest.raises(InvalidArgument, match="outside the model's alphabet") as err:
        predictor.predict(["CCO", "[Se]CC"])
    assert "#1 '[Se]CC'" in str(err.value) and "'[Se]'" in str(err.value)
    with pytest.raises(InvalidArgument, match="longer than the model's maximum"):
        predictor.predict(["C" * (predictor.max_len + 1)])


def test_ensemble_averages_its_members(tmp_path: Path) -> None:
    _, store = _train(tmp_path, "mlp", k=2)
    paths = [store.trial_dir("s", 0) / e["file"] for e in store.index("s", 0)]
    assert len(paths) == 2
    ensemble = Ensemble.from_checkpoints(paths)
    smiles = ["CCO", "c1ccccc1O", "CC(=O)OC", "ClCCl"]
    members = ensemble.predict_members(smiles)
    assert members.shape == (2, len(smiles))
    one, two = (Predictor.from_checkpoint(p).predict(smiles) for p in paths)
    np.testing.assert_array_equal(members, np.stack([one, two]))
    np.testing.assert_array_equal(ensemble.predict(smiles), (one + two) / 2)
    assert not np.array_equal(one, two)
    with pytest.raises(InvalidArgument):
        Ensemble([])


def test_descriptor_statistics_standardise_like_training() -> None:
    table = subset(load_table(DatasetRequest(name="freesolv")), 60, 0)
    features = featurize(table, "rdkit_descriptors")
    assert isinstance(features, DescriptorFeatures)
    values = features.values
    rows = np.arange(0, 60, 2)
    mean, std = descriptor_statistics(values, rows)
    np.testing.assert_array_equal(apply_statistics(values, mean, std), standardize(values, rows))


def test_cache_reuses_predictors_and_reloads_rewritten_files(tmp_path: Path) -> None:
    _, store = _train(tmp_path, "mlp")
    path = store.best("s", 0)
    results: list[Predictor] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_predictor(path))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(p) for p in results}) == 1
    assert Predictor.from_checkpoint(path) is results[0]
    assert Predictor.from_checkpoint(path, cache=False) is not results[0]
    payload = torch.load(path, weights_only=True)
    payload["y_mean"] = payload["y_mean"] + 1.0
    store.write(path, payload)
    reloaded = load_predictor(path)
    assert reloaded is not results[0]
    np.testing.assert_allclose(
        reloaded.predict(["CCO"]), results[0].predict(["CCO"]) + 1.0, atol=1e-9
    )


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        Predictor.from_checkpoint(tmp_path / "nothing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidArgument, match="cannot be read"):
        Predictor.from_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": 99}, other)
    with pytest.raises(InvalidArgument, match="format 99"):
        Predictor.from_checkpoint(other)
