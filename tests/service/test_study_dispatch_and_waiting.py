"""A study on a user file runs on a real trainer, and a study that cannot dispatch says why.

One real coordinator server (port 0), a real redis-server, and either a real trainer server
(in this process) or a trainer registering over MembershipService as a trainer does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import RedisServer
from prometheus_client import generate_latest

from coordinator.server import CoordinatorServer, make_server
from coordinator.settings import CoordinatorSettings
from molhpo.client import MolhpoClient
from molhpo.datasets import load_dataset
from molhpo.local import free_port
from molhpo.v1 import common_pb2, study_pb2, trainer_pb2, trainer_pb2_grpc
from trainer.server import TrainerServer
from trainer.server import make_server as make_trainer
from trainer.settings import TrainerSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    table = load_dataset("freesolv")
    lines = ["compound,SMILES_str,dG_exp"]
    lines += [
        f"m{i},{s},{t}"
        for i, (s, t) in enumerate(zip(table.smiles[:80], table.targets[:80], strict=True))
    ]
    # A valid molecule (ethanol) with an empty target, a NaN target, an unparsable SMILES.
    lines += ["bad1,CCO,", "bad2,CCC,nan", "bad3,C1CC,-1.0"]
    (root / "my.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def coordinator(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path, data_root: Path
) -> Iterator[CoordinatorServer]:
    built = make_server(
        CoordinatorSettings(
            listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix=key_prefix,
            storage_url=f"sqlite:///{tmp_path / 's.db'}",
            state_dir=tmp_path,
            dataset_roots=str(data_root),
            heartbeat_timeout_s=60.0,
        )
    )
    built.start()
    yield built
    built.stop(grace_s=0)


@pytest.fixture
def client(coordinator: CoordinatorServer) -> Iterator[MolhpoClient]:
    with MolhpoClient(f"127.0.0.1:{coordinator.port}", timeout_s=30) as c:
        yield c


def _study(name: str, model: str = "mlp", **dataset: object) -> dict[str, object]:
    return {
        "name": name,
        "dataset": dataset or {"name": "freesolv"},
        "model": model,
        "search_space": {"dropout": {"type": "float", "low": 0.0, "high": 0.3}},
        "fixed_params": {"units_1": 16, "batch_size": 32},
        "budget": {"n_trials": 2, "max_epochs": 2},
        "parallelism": 2,
    }


def _events_until(
    client: MolhpoClient, name: str, kind: int, timeout_s: float
) -> list[study_pb2.StudyEvent]:
    """Events of study ``name`` until one of ``kind`` arrives (or the timeout passes)."""
    seen: list[study_pb2.StudyEvent] = []
    done = threading.Event()

    def follow() -> None:
        for ev in client.watch(name):
            seen.append(ev)
            if ev.kind == kind:
                break
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    done.wait(timeout_s)
    return seen


def _register(coordinator: CoordinatorServer, **info: Any) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{coordinator.port}") as channel:
        trainer_pb2_grpc.MembershipServiceStub(channel).RegisterTrainer(
            trainer_pb2.RegisterTrainerRequest(info=trainer_pb2.TrainerInfo(**info)), timeout=10
        )


def _metric(coordinator: CoordinatorServer, line_start: str) -> float:
    text = generate_latest(coordinator.metrics.registry).decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start!r} in /metrics")


def test_a_study_with_no_trainer_says_so_within_seconds(
    coordinator: CoordinatorServer, client: MolhpoClient
) -> None:
    client.start_study(_study("lonely"))
    t0 = time.monotonic()
    events = _events_until(client, "lonely", study_pb2.StudyEvent.KIND_STUDY_WAITING, 10)
    waited = [e for e in events if e.kind == study_pb2.StudyEvent.KIND_STUDY_WAITING]
    assert waited, f"no waiting event in {[e.kind for e in events]}"
    assert time.monotonic() - t0 < 5.0
    assert "no trainer is registered" in waited[0].message
    info = client.get_study("lonely")
    assert info.wait_reason == study_pb2.WAIT_REASON_NO_TRAINERS
    assert "no trainer is registered" in info.wait_message
    assert _metric(coordinator, 'molhpo_coordinator_studies_waiting{reason="no_trainers"}') == 1
    assert (
        _metric(
            coordinator,
            'molhpo_coordinator_study_waiting_seconds{reason="no_trainers",study="lonely"}',
        )
        >= 0
    )
    client.stop_study("lonely")


def test_a_study_no_registered_trainer_can_run_names_what_they_offer(
    coordinator: CoordinatorServer, client: MolhpoClient
) -> None:
    _register(
        coordinator,
        trainer_id="cnn-only",
        address=f"127.0.0.1:{free_port()}",
        slots=2,
        device="cpu",
        models=["cnn"],
        datasets=["freesolv"],
        file_formats=["csv"],
    )
    client.start_study(_study("wrong-model"))
    events = _events_until(client, "wrong-model", study_pb2.StudyEvent.KIND_STUDY_WAITING, 10)
    waited = [e for e in events if e.kind == study_pb2.StudyEvent.KIND_STUDY_WAITING]
    assert waited, f"no waiting event in {[e.kind for e in events]}"
    assert "none of the 1 registered trainers can run mlp on freesolv" in waited[0].message
    assert "cnn-only: models cnn" in waited[0].message
    info = client.get_study("wrong-model")
    assert info.wait_reason == study_pb2.WAIT_REASON_NO_CAPABLE_TRAINER
    assert info.n_running == 0
    assert (
        _metric(coordinator, 'molhpo_coordinator_studies_waiting{reason="no_capable_trainer"}') == 1
    )
    client.stop_study("wrong-model")


@pytest.fixture
def trainer(
    coordinator: CoordinatorServer, redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> Iterator[TrainerServer]:
    built = make_trainer(
        TrainerSettings(
            listen="127.0.0.1:0",
            coordinator=f"127.0.0.1:{coordinator.port}",
            redis_url=redis_server.url,
            key_prefix=key_prefix,
            slots=2,
            torch_threads=1,
            trainer_id="t-files",
            dataset_roots=str(tmp_path / "data"),
            artifact_dir=str(tmp_path / "artifacts"),
            cache_dir=str(tmp_path / "cache"),
        )
    )
    built.start()
    yield built
    built.stop(grace_s=5)


def test_a_study_on_a_user_csv_runs_to_completion(
    trainer: TrainerServer, client: MolhpoClient
) -> None:
    dataset: dict[str, Any] = {
        "path": "my.csv",
        "smiles_column": "SMILES_str",
        "target_columns": ["dG_exp"],
    }
    info = client.start_study(_study("own-csv", **dataset))
    assert info.dataset.n_invalid == 3
    assert dict(info.dataset.invalid_counts) == {
        "unparsable_smiles": 1,
        "missing_target": 2,
        "non_numeric_target": 0,
    }
    assert [(r.row, r.text, r.cause) for r in info.dataset.invalid_rows] == [
        (82, "CCO", "missing_target"),
        (83, "CCC", "missing_target"),
        (84, "C1CC", "unparsable_smiles"),
    ]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = client.get_study("own-csv")
        if info.state != common_pb2.STUDY_STATE_RUNNING:
            break
        time.sleep(0.5)
    assert info.state == common_pb2.STUDY_STATE_COMPLETE, info.message
    assert info.n_complete + info.n_pruned == 2 and info.n_failed == 0
    assert info.wait_reason == study_pb2.WAIT_REASON_NONE and not info.wait_message
    assert info.best_trial.test.values["rmse"] > 0
