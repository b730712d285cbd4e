"""Fault injection on real processes: trainers SIGKILLed at random moments during a 30-trial
study. Every trial ends terminal, the trial count is exact, none stays RUNNING, and retried
trials resume from their saved state."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import optuna
import pytest
from conftest import RedisServer

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_mlp.yaml"
N_TRIALS = 30
KILLS = 5


def test_thirty_trials_survive_five_trainer_kills(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    req = studyfile.load(EXAMPLE)
    req.name = "faults"
    req.budget.n_trials = N_TRIALS
    req.budget.max_epochs = 40
    req.dataset.max_molecules = 150
    req.pruner.name = "none"
    req.pruner.ClearField("options")
    env = {
        "MOLHPO_COORDINATOR_LEASE_S": "3",
        "MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S": "0.5",
        "MOLHPO_COORDINATOR_MAX_ATTEMPTS": "8",
    }
    rng = random.Random(7)
    kills: list[str] = []
    with (
        LocalStack(
            state_dir=tmp_path,
            n_trainers=2,
            coordinator_listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix="faults",
            extra_env=env,
        ) as stack,
        MolhpoClient(stack.coordinator_address, timeout_s=30) as client,
    ):
        client.start_study(req)
        done = threading.Event()

        def killer() -> None:
            # The first two kills take both trainers down once a trial is past its first saved
            # state (epoch 5), so at least one retried trial must resume; three more follow at
            # random moments.
            while not done.wait(0.2):
                running = [
                    t
                    for t in client.list_trials(req.name)
                    if t.state == common_pb2.TRIAL_STATE_RUNNING
                ]
                if any(t.last_step >= 7 for t in running):
                    break
            for victim in ("trainer-0", "trainer-1"):
                stack.restart_trainer(victim, kill=True, wait=False)
                kills.append(victim)
            for _ in range(KILLS - 2):
                if done.wait(rng.uniform(1.0, 3.0)):
                    return
                victim = f"trainer-{rng.randrange(2)}"
                stack.restart_trainer(victim, kill=True, wait=False)
                kills.append(victim)

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            info = client.wait(req.name, timeout_s=900)
        finally:
            done.set()
            thread.join(120)
        trials = client.list_trials(req.name)
    assert len(kills) == KILLS, "the study ended before every kill happened"
    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert len(trials) == N_TRIALS
    assert all(t.state == common_pb2.TRIAL_STATE_COMPLETE for t in trials), [
        (t.number, t.state, t.failure_class, t.failure_reason) for t in trials
    ]
    study = optuna.load_study(study_name=req.name, storage=f"sqlite:///{tmp_path / 'studies.db'}")
    retried = [t for t in study.trials if t.user_attrs.get("attempts", 1) > 1]
    assert retried, "no kill hit a running trial"
    # Trials killed after their first saved state (every 5 epochs) went on from it.
    late = [
        t
        for t in retried
        if any(
            int(h.rsplit("last epoch ", 1)[1].rstrip(")")) >= 5
            for h in t.user_attrs["retry_history"]
        )
    ]
    assert late, "no kill hit a trial past epoch 5"
    for t in late:
        assert t.user_attrs["resumed_from_step"] >= 5, t.user_attrs["retry_history"]
