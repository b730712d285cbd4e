"""redis-server stopped and started again mid-study: trainers keep training and buffer their
reports, the coordinator reconnects, and every trial still ends with its result."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import RedisServer

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_mlp.yaml"
N_TRIALS = 6


def test_study_survives_a_redis_restart(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    req = studyfile.load(EXAMPLE)
    req.name = "outage"
    req.budget.n_trials = N_TRIALS
    req.budget.max_epochs = 40
    req.dataset.max_molecules = 200
    env = {"MOLHPO_COORDINATOR_DECISION_TIMEOUT_S": "3"}
    try:
        with (
            LocalStack(
                state_dir=tmp_path / "stack",
                n_trainers=2,
                coordinator_listen="127.0.0.1:0",
                redis_url=redis_server.url,
                key_prefix="outage",
                extra_env=env,
            ) as stack,
            MolhpoClient(stack.coordinator_address, timeout_s=30) as client,
        ):
            client.start_study(req)
            for event in client.watch(req.name, timeout_s=300):
                if event.kind == study_pb2.StudyEvent.KIND_EPOCH_REPORTED and event.step >= 3:
                    break
            redis_server.stop()
            time.sleep(4.0)  # trainers go on training and buffer what they report
            redis_server.start()
            info = client.wait(req.name, timeout_s=600)
            trials = client.list_trials(req.name)
            alive = stack.alive()
    finally:
        redis_server.stop()
    assert all(alive.values()), alive
    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert len(trials) == N_TRIALS
    terminal = {common_pb2.TRIAL_STATE_COMPLETE, common_pb2.TRIAL_STATE_PRUNED}
    assert all(t.state in terminal for t in trials), [
        (t.number, t.state, t.failure_class, t.failure_reason) for t in trials
    ]
