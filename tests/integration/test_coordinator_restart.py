"""The coordinator killed mid-study and started again: the study goes on, running trials are
claimed back from their trainers, unacknowledged reports are read; nothing is lost or doubled."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from conftest import RedisServer

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.errors import MolhpoError
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_mlp.yaml"
N_TRIALS = 8
_ENDED = (
    common_pb2.STUDY_STATE_COMPLETE,
    common_pb2.STUDY_STATE_STOPPED,
    common_pb2.STUDY_STATE_FAILED,
)


def test_killed_coordinator_resumes_the_study_after_restart(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    req = studyfile.load(EXAMPLE)
    req.name = "restart"
    req.budget.n_trials = N_TRIALS
    req.budget.max_epochs = 30
    req.dataset.max_molecules = 200
    with LocalStack(
        state_dir=tmp_path,
        n_trainers=2,
        coordinator_listen="127.0.0.1:0",
        redis_url=redis_server.url,
        key_prefix="restart",
    ) as stack:
        with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
            client.start_study(req)
            finished = 0
            for event in client.watch(req.name, timeout_s=300):
                if event.kind in (
                    study_pb2.StudyEvent.KIND_TRIAL_COMPLETED,
                    study_pb2.StudyEvent.KIND_TRIAL_PRUNED,
                ):
                    finished += 1
                if finished >= 2 and event.kind == study_pb2.StudyEvent.KIND_EPOCH_REPORTED:
                    break  # trials are running right now
        stack.restart_coordinator(kill=True)
        deadline = time.monotonic() + 600
        with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
            while True:
                try:
                    info = client.get_study(req.name)
                except MolhpoError:
                    info = None
                if info is not None and info.state in _ENDED:
                    assert info.state == common_pb2.STUDY_STATE_COMPLETE, info.message
                    break
                assert time.monotonic() < deadline, "the study did not finish after a restart"
                time.sleep(1.0)
            trials = client.list_trials(req.name)
    assert len(trials) == N_TRIALS
    assert all(
        t.state in (common_pb2.TRIAL_STATE_COMPLETE, common_pb2.TRIAL_STATE_PRUNED) for t in trials
    ), [(t.number, t.state, t.failure_reason) for t in trials]
    study = optuna.load_study(study_name=req.name, storage=f"sqlite:///{tmp_path / 'studies.db'}")
    # Every trial kept one value per epoch it reported (no step lost or written twice).
    for t in study.trials:
        assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
        assert t.user_attrs["epochs_trained"] >= max(t.intermediate_values)
