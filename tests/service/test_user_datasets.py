"""User data files through ValidateStudy/StartStudy: bad rows counted, paths confined."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer

from coordinator.server import CoordinatorServer, make_server
from coordinator.settings import CoordinatorSettings
from molhpo.client import MolhpoClient
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import load_dataset

BAD_SMILES = ["C1CC", "not-a-molecule", "c1ccccc", "[Xx]", "C(C"]


def write_csv(path: Path, n_good: int, bad: list[str]) -> None:
    table = load_dataset("freesolv")
    lines = ["smiles,dG"]
    lines += [
        f"{s},{t}" for s, t in zip(table.smiles[:n_good], table.targets[:n_good], strict=True)
    ]
    lines += [f"{s},1.0" for s in bad]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def client(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path, data_root: Path
) -> Iterator[MolhpoClient]:
    built: CoordinatorServer = make_server(
        CoordinatorSettings(
            listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix=key_prefix,
            storage_url=f"sqlite:///{tmp_path / 's.db'}",
            state_dir=tmp_path,
            dataset_roots=str(data_root),
        )
    )
    built.start()
    with MolhpoClient(f"127.0.0.1:{built.port}", timeout_s=30) as c:
        yield c
    built.stop(grace_s=0)


def study(path: str, **dataset: object) -> dict[str, object]:
    return {
        "name": "user-data",
        "dataset": {"path": path, **dataset},
        "model": "mlp",
        "search_space": {"dropout": {"type": "float", "low": 0.0, "high": 0.5}},
        "budget": {"n_trials": 2, "max_epochs": 2},
    }


def test_bad_smiles_rows_are_counted_with_examples(client: MolhpoClient, data_root: Path) -> None:
    write_csv(data_root / "mols.csv", 100, BAD_SMILES)
    resp = client.validate_study(study("mols.csv"))
    assert resp.dataset.n_molecules == 100
    assert resp.dataset.n_invalid == len(BAD_SMILES)
    assert set(resp.dataset.invalid_examples) <= set(BAD_SMILES)
    assert resp.dataset.invalid_examples
    info = client.start_study(study("mols.csv"))
    assert info.dataset.n_invalid == len(BAD_SMILES)
    client.stop_study("user-data")


def test_too_many_bad_rows_is_invalid_argument(client: MolhpoClient, data_root: Path) -> None:
    write_csv(data_root / "mostly_bad.csv", 10, BAD_SMILES)
    with pytest.raises(InvalidArgument, match=r"dataset: .*5"):
        client.validate_study(study("mostly_bad.csv"))
    # A looser limit lets the same file through.
    client.validate_study(study("mostly_bad.csv", max_invalid_share=0.5))


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "missing.csv"])
def test_paths_outside_the_roots_or_missing_are_refused(client: MolhpoClient, path: str) -> None:
    with pytest.raises(InvalidArgument, match="dataset"):
        client.validate_study(study(path))
