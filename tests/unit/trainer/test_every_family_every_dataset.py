"""Every model family learns on a small real slice of every built-in data set and of a user
CSV: the training loss falls within a few epochs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from molhpo.contract import catalogue
from molhpo.datasets import DatasetRequest, load_dataset
from trainer.training.loop import EpochResult, TrainConfig, train

N_MOLECULES = 96
EPOCHS = 6
# Small networks, so each run takes a second or two on one CPU thread.
SMALL = {
    "mlp": {"units": 64},
    "cnn": {"filters": 32},
    "gin": {"hidden_channels": 32},
    "gcn": {"hidden_channels": 32},
    "gat": {"hidden_channels": 32},
    "attentivefp": {"hidden_channels": 32},
    "egnn": {"hidden_channels": 32, "num_layers": 2},
    "schnet": {"hidden_channels": 32, "num_filters": 32, "num_interactions": 2},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user file: solubility molecules written as a plain SMILES,target CSV."""
    root = tmp_path_factory.mktemp("user")
    table = load_dataset("solubility")
    rows = [f"{s},{t}" for s, t in zip(table.smiles[:300], table.targets[:300], strict=True)]
    (root / "logs.csv").write_text("smiles,logS\n" + "\n".join(rows) + "\n")
    return root


def data_for(source: str, root: Path) -> tuple[str, DatasetRequest]:
    if source == "user-csv":
        return "", DatasetRequest(path="logs.csv")
    if source == "qm9":
        return "qm9", DatasetRequest(name="qm9", target="homo", subset=N_MOLECULES)
    return source, DatasetRequest(name=source)


def test_every_family_is_covered() -> None:
    # The synthetic family trains on no molecules (tests/unit/trainer/test_synthetic.py).
    assert set(SMALL) == set(catalogue.MODELS) - {"synthetic"}


@pytest.mark.parametrize("source", ["freesolv", "solubility", "qm9", "user-csv"])
@pytest.mark.parametrize("model", sorted(SMALL))
def test_training_loss_falls(model: str, source: str, user_csv: Path) -> None:
    name, request = data_for(source, user_csv)
    losses: list[float] = []

    def on_epoch(ep: EpochResult) -> bool:
        losses.append(ep.train_loss)
        return True

    result = train(
        TrainConfig(
            dataset=name or "freesolv",
            model=model,
            params={**SMALL[model], "lr": 3e-3},
            max_epochs=EPOCHS,
            seed=0,
            max_molecules=N_MOLECULES,
            data=request,
            dataset_roots=(str(user_csv),),
        ),
        on_epoch,
    )
    assert result.epochs_trained == EPOCHS
    assert len(losses) == EPOCHS
    assert min(losses[-2:]) < losses[0], losses
