"""A trainer killed mid-study: its trial is dispatched again elsewhere and nothing is lost."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_mlp.yaml"


def test_killed_trainers_trial_is_retried_on_another_and_the_study_completes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    req = studyfile.load(EXAMPLE)
    req.name = "dead-trainer"
    req.budget.n_trials = 4
    req.budget.max_epochs = 60  # long enough that the kill lands mid-trial
    req.pruner.name = "none"
    req.pruner.ClearField("options")
    req.dataset.max_molecules = 200
    env = {
        "MOLHPO_COORDINATOR_HEARTBEAT_TIMEOUT_S": "2",
        "MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S": "0.2",
    }
    with (
        LocalStack(
            state_dir=tmp_path,
            n_trainers=2,
            coordinator_listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix="dead",
            extra_env=env,
        ) as stack,
        MolhpoClient(stack.coordinator_address, timeout_s=30) as client,
    ):
        client.start_study(req)
        victim = None
        retried = []
        on_trainer_0: set[int] = set()
        for event in client.watch(req.name, timeout_s=600):
            if event.kind == study_pb2.StudyEvent.KIND_TRIAL_STARTED:
                if event.message.endswith("trainer-0"):
                    on_trainer_0.add(event.trial_number)
                else:
                    on_trainer_0.discard(event.trial_number)
            if (
                victim is None
                and event.kind == study_pb2.StudyEvent.KIND_EPOCH_REPORTED
                and event.trial_number in on_trainer_0
                and event.step >= 7
            ):
                victim = stack.process("trainer-0")
                assert victim is not None
                victim.send_signal(signal.SIGKILL)
            if event.kind == study_pb2.StudyEvent.KIND_TRIAL_RETRIED:
                retried.append(event.trial_number)
        info = client.get_study(req.name)
        trials = client.list_trials(req.name)
        with urllib.request.urlopen(stack.coordinator_metrics, timeout=10) as resp:
            metrics = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(resp.read().decode())
                for s in fam.samples
            }
    assert victim is not None
    assert retried, "no trial was dispatched again"
    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert len(trials) == 4
    assert all(
        t.state in (common_pb2.TRIAL_STATE_COMPLETE, common_pb2.TRIAL_STATE_PRUNED) for t in trials
    ), [(t.number, t.failure_reason) for t in trials]
    study = optuna.load_study(study_name=req.name, storage=f"sqlite:///{tmp_path / 'studies.db'}")
    again = [t for t in study.trials if t.number in retried]
    for t in again:
        assert t.user_attrs["attempts"] >= 2
        assert "trainer-0" in t.user_attrs["retry_history"][0]
        assert t.user_attrs["trainer_id"] == "trainer-1"
        # It went on from the state saved every 5 epochs, not from scratch.
        assert t.user_attrs["resumed_from_step"] >= 5
    retries = sum(
        v for (name, _), v in metrics.items() if name == "molhpo_coordinator_trial_retries_total"
    )
    assert retries == len(retried)
