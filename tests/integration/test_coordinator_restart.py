"""The coordinator killed mid-study and started again: the study goes on, running trials are
claimed back from their trainers, unacknowledged reports are read; nothing is lost or doubled."""

from __future__ import annotations

import base64
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from molhpo.client import MolhpoClient
from molhpo.contract import attrs
from molhpo.contract.errors import MolhpoError
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2

pytestmark = pytest.mark.integration

N_TRIALS = 4
MAX_EPOCHS = 50
EPOCH_SECONDS = 0.5
# A trial no trainer claims within a lease is run again (attempt 2): keep the lease short, so
# a trial that was not claimed back would be run again long before its first run ends.
LEASE_S = 6
_ENDED = (
    common_pb2.STUDY_STATE_COMPLETE,
    common_pb2.STUDY_STATE_STOPPED,
    common_pb2.STUDY_STATE_FAILED,
)

STUDY: dict[str, Any] = {
    "name": "restart",
    "dataset": {"name": "synthetic"},
    "model": "synthetic",
    "search_space": {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "width": {"type": "int", "low": 8, "high": 1024, "log": True},
        "depth": {"type": "int", "low": 1, "high": 8},
        "dropout": {"type": "float", "low": 0.0, "high": 0.8},
    },
    # A set time per epoch: every trial runs MAX_EPOCHS * EPOCH_SECONDS, far past a restart
    # and a lease. No pruner, so every trial trains every epoch.
    "fixed_params": {"epoch_seconds": EPOCH_SECONDS},
    "sampler": {"name": "random"},
    "pruner": {"name": "none"},
    "budget": {"n_trials": N_TRIALS, "max_epochs": MAX_EPOCHS},
    "parallelism": 2,
    "seed": 0,
}


def epochs_trained_by_trainers(stack: LocalStack) -> float:
    """The trainers' own count of epochs trained (their /metrics), summed."""
    total = 0.0
    for url in stack.trainer_metrics:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        total += sum(
            s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == "molhpo_trainer_epochs_total"
        )
    return total


def running_attempts(storage: str) -> dict[int, tuple[int, int]]:
    """Trials running now, read from the study store: number -> (attempt, last step)."""
    study = optuna.load_study(study_name=STUDY["name"], storage=storage)
    out = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        raw = t.system_attrs.get(attrs.TRIAL_SPEC)
        if isinstance(raw, str):
            spec = common_pb2.TrialSpec.FromString(base64.b64decode(raw))
            out[t.number] = (spec.attempt, max(t.intermediate_values, default=0))
    return out


def test_killed_coordinator_resumes_the_study_after_restart(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    with LocalStack(
        state_dir=tmp_path,
        n_trainers=2,
        coordinator_listen="127.0.0.1:0",
        redis_url=redis_server.url,
        key_prefix="restart",
        extra_env={
            "MOLHPO_COORDINATOR_LEASE_S": str(LEASE_S),
            "MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S": "1",
        },
    ) as stack:
        with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
            client.start_study(STUDY)
            # Kill it while both trainers are a few epochs into their trials.
            deadline = time.monotonic() + 300
            while True:
                running = running_attempts(storage)
                if len(running) == 2 and all(step >= 3 for _a, step in running.values()):
                    break
                assert time.monotonic() < deadline, f"two trials never ran: {running}"
                time.sleep(0.2)
        stack.restart_coordinator(kill=True)
        deadline = time.monotonic() + 600
        with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
            while True:
                try:
                    info = client.get_study(STUDY["name"])
                except MolhpoError:
                    info = None
                if info is not None and info.state in _ENDED:
                    assert info.state == common_pb2.STUDY_STATE_COMPLETE, info.message
                    break
                assert time.monotonic() < deadline, "the study did not finish after a restart"
                time.sleep(1.0)
            trials = client.list_trials(STUDY["name"])
        trained = epochs_trained_by_trainers(stack)
    assert len(trials) == N_TRIALS
    assert all(t.state == common_pb2.TRIAL_STATE_COMPLETE for t in trials), [
        (t.number, t.state, t.failure_reason) for t in trials
    ]
    study = optuna.load_study(study_name=STUDY["name"], storage=storage)
    by_number = {t.number: t for t in study.trials}
    for number, (attempt, step_at_kill) in running.items():
        t = by_number[number]
        # Claimed back: the run that was going on finished the trial, under its own attempt,
        # and went on past the restart.
        assert attempt == 1
        assert t.user_attrs["attempts"] == attempt, (number, t.user_attrs.get("retry_history"))
        assert "retry_history" not in t.user_attrs, t.user_attrs["retry_history"]
        assert "resumed_from_step" not in t.user_attrs
        assert max(t.intermediate_values) > step_at_kill
    for t in study.trials:
        # One value for every epoch, none lost across the restart.
        assert sorted(t.intermediate_values) == list(range(1, MAX_EPOCHS + 1)), t.number
        assert t.user_attrs["epochs_trained"] == MAX_EPOCHS, t.number
    # No epoch trained twice: the trainers trained exactly the epochs the store holds.
    assert trained == N_TRIALS * MAX_EPOCHS
