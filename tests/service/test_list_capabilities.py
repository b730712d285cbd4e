"""ListCapabilities on one real coordinator (port 0, real redis-server) with trainers registered
through MembershipService, and `molhpo list` asking it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import RedisServer

from coordinator.optimizer.pruners import PRUNERS
from coordinator.optimizer.samplers import SAMPLERS
from coordinator.server import CoordinatorServer, make_server
from coordinator.settings import CoordinatorSettings
from molhpo import cli
from molhpo.client import MolhpoClient
from molhpo.contract import catalogue
from molhpo.v1 import trainer_pb2, trainer_pb2_grpc


@pytest.fixture
def coordinator(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> Iterator[CoordinatorServer]:
    built = make_server(
        CoordinatorSettings(
            listen="127.0.0.1:0",
            redis_url=redis_server.url,
            storage_url=f"sqlite:///{tmp_path / 'studies.db'}",
            key_prefix=key_prefix,
            state_dir=tmp_path,
            # the registered trainers below send no heartbeats
            heartbeat_timeout_s=300,
        )
    )
    built.start()
    yield built
    built.stop(grace_s=0)


@pytest.fixture
def address(coordinator: CoordinatorServer) -> str:
    return f"127.0.0.1:{coordinator.port}"


def register(address: str, **info: object) -> None:
    """Register a trainer as `molhpo trainer` does (it is never dialled here)."""
    with grpc.insecure_channel(address) as channel:
        trainer_pb2_grpc.MembershipServiceStub(channel).RegisterTrainer(
            trainer_pb2.RegisterTrainerRequest(
                info=trainer_pb2.TrainerInfo(address="127.0.0.1:1", slots=2, **info)  # type: ignore[arg-type]
            ),
            timeout=5,
        )


@pytest.fixture
def two_trainers(address: str) -> str:
    """A GPU trainer of graph models on FreeSolv and CSV files, a CPU trainer of the MLP and
    the synthetic family on solubility and synthetic data."""
    register(
        address,
        trainer_id="t-gpu",
        device="cuda:0",
        models=["gin", "gcn"],
        datasets=["freesolv"],
        file_formats=["csv"],
    )
    register(
        address,
        trainer_id="t-cpu",
        device="cpu",
        models=["mlp", "synthetic"],
        datasets=["solubility", "synthetic"],
    )
    return address


def test_without_trainers_it_offers_no_models_and_every_sampler_and_pruner(address: str) -> None:
    with MolhpoClient(address, timeout_s=10) as client:
        caps = client.list_capabilities()
    assert list(caps.trainers) == [] and list(caps.models) == [] and list(caps.datasets) == []
    # torch is installed beside the tests, so gp is offered too
    assert [s.name for s in caps.samplers] == sorted(SAMPLERS)
    assert [p.name for p in caps.pruners] == sorted(PRUNERS)
    hyperband = next(p for p in caps.pruners if p.name == "hyperband")
    assert {o.name for o in hyperband.options} == set(PRUNERS["hyperband"].options.model_fields)
    assert all(o.type_and_default for o in hyperband.options)


def test_it_offers_the_union_of_the_registered_trainers(two_trainers: str) -> None:
    with MolhpoClient(two_trainers, timeout_s=10) as client:
        caps = client.list_capabilities()
    assert [(t.trainer_id, t.device, t.slots) for t in caps.trainers] == [
        ("t-cpu", "cpu", 2),
        ("t-gpu", "cuda:0", 2),
    ]
    assert list(caps.trainers[1].models) == ["gin", "gcn"]
    assert list(caps.models) == ["gcn", "gin", "mlp", "synthetic"]
    assert list(caps.datasets) == ["freesolv", "solubility", "synthetic"]
    # t-cpu named data sets but no formats: it reads no user files
    assert list(caps.file_formats) == ["csv"]


def test_a_trainer_that_names_nothing_offers_the_whole_catalogue(address: str) -> None:
    register(address, trainer_id="t-any")
    with MolhpoClient(address, timeout_s=10) as client:
        caps = client.list_capabilities()
    assert list(caps.models) == sorted(catalogue.MODELS)
    assert list(caps.datasets) == sorted(catalogue.DATASETS)
    assert list(caps.file_formats) == ["csv", "sdf"]


def test_molhpo_list_models_prints_what_the_trainers_offer(
    two_trainers: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["list", "models", "--coordinator", two_trainers]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"offered by the trainers registered at {two_trainers}: t-cpu, t-gpu" in out
    titles = dict(re.findall(r"^(\w+)( \(trainers [^)]*\))?: ", out, flags=re.M))
    assert titles == {
        "gcn": " (trainers t-gpu)",
        "gin": " (trainers t-gpu)",
        "mlp": " (trainers t-cpu)",
        "synthetic": " (trainers t-cpu)",
    }


def test_molhpo_list_datasets_prints_what_the_trainers_load(
    two_trainers: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["list", "datasets", "--coordinator", two_trainers]) == 0
    out = capsys.readouterr().out
    rows = {ln.split("│")[1].strip() for ln in out.splitlines() if ln.count("│") > 2}
    assert {"freesolv", "solubility", "synthetic"} <= rows
    assert not rows & (set(catalogue.DATASETS) - {"freesolv", "solubility", "synthetic"})
    assert "your own files (dataset: {path: ...}): csv" in out


def test_molhpo_list_pruners_prints_the_coordinators(
    address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["list", "pruners", "--coordinator", address]) == 0
    out, err = capsys.readouterr()
    assert err == "" and f"pruners of the coordinator at {address}" in out
    for name, comp in PRUNERS.items():
        assert name in out
        for opt in comp.options.model_fields:
            assert opt in out, (name, opt)


def test_molhpo_list_without_trainers_says_so_and_lists_the_catalogue(
    address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["list", "models", "--coordinator", address]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == (
        f"no trainer is registered at the coordinator at {address}; "
        "listing this installation's catalogue"
    )
    assert set(re.findall(r"^(\w+): ", out, flags=re.M)) == set(catalogue.MODELS)
