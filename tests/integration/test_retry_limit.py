"""A trial whose trainer dies under it every time: dispatched four times at most, then FAIL.

Real parts: redis-server, a coordinator process, one trainer process that the test kills
(SIGKILL) as soon as the trial starts on it and starts again once the coordinator has noticed.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from coordinator.retry import DEFAULT_MAX_ATTEMPTS
from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_mlp.yaml"
# Kills beyond the bound, so a broken bound shows as a fifth start instead of a hang.
MAX_KILLS = DEFAULT_MAX_ATTEMPTS + 2


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _one_long_trial() -> study_pb2.StartStudyRequest:
    """One trial, never pruned, long enough that every kill lands while it trains."""
    req = studyfile.load(EXAMPLE)
    req.name = "lost-four-times"
    req.budget.n_trials = 1
    req.budget.max_epochs = 500  # it must not finish before the kill lands
    req.parallelism = 1
    req.pruner.name = "none"
    req.pruner.ClearField("options")
    req.dataset.max_molecules = 120
    return req


def test_a_trial_lost_four_times_fails_after_its_fourth_attempt_and_never_runs_a_fifth(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    assert DEFAULT_MAX_ATTEMPTS == 4
    req = _one_long_trial()
    env = {
        "MOLHPO_COORDINATOR_HEARTBEAT_TIMEOUT_S": "2",
        "MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S": "0.2",
    }
    starts: list[str] = []
    retries: list[str] = []
    failures: list[str] = []
    with (
        LocalStack(
            state_dir=tmp_path,
            n_trainers=1,
            coordinator_listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix="retry-limit",
            extra_env=env,
        ) as stack,
        MolhpoClient(stack.coordinator_address, timeout_s=30) as client,
    ):
        client.start_study(req)
        for event in client.watch(req.name, timeout_s=600):
            if event.kind == study_pb2.StudyEvent.KIND_TRIAL_STARTED:
                starts.append(event.message)
                trainer = stack.process("trainer-0")
                assert trainer is not None
                if len(starts) <= MAX_KILLS:
                    trainer.send_signal(signal.SIGKILL)
            elif event.kind == study_pb2.StudyEvent.KIND_TRIAL_RETRIED:
                retries.append(event.message)
                # The coordinator forgot the dead trainer; a fresh one may take the retry.
                stack.restart_trainer("trainer-0", kill=True, wait=True)
            elif event.kind == study_pb2.StudyEvent.KIND_TRIAL_FAILED:
                failures.append(event.message)
        # The study is over; a trainer that joins now must get nothing more to run.
        stack.restart_trainer("trainer-0", kill=True, wait=True)
        time.sleep(3.0)
        info = client.get_study(req.name)
        trials = client.list_trials(req.name)
        metrics = _scrape(stack.coordinator_metrics)

    assert len(starts) == DEFAULT_MAX_ATTEMPTS, starts
    assert starts[0] == "on trainer trainer-0"
    assert starts[1:] == [f"on trainer trainer-0 (attempt {k})" for k in (2, 3, 4)]
    assert len(retries) == DEFAULT_MAX_ATTEMPTS - 1, retries
    assert all(r.startswith("trainer_lost: ") for r in retries), retries
    assert len(failures) == 1 and failures[0].startswith("trainer_lost: "), failures
    assert failures[0].endswith("(after 4 attempts)"), failures

    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert (info.n_failed, info.n_complete, info.n_pruned, info.n_running) == (1, 0, 0, 0)
    assert len(trials) == 1 and trials[0].state == common_pb2.TRIAL_STATE_FAIL
    assert trials[0].failure_class == "trainer_lost"

    study = optuna.load_study(study_name=req.name, storage=f"sqlite:///{tmp_path / 'studies.db'}")
    (stored,) = study.trials
    assert stored.state == optuna.trial.TrialState.FAIL
    assert stored.user_attrs["attempts"] == DEFAULT_MAX_ATTEMPTS
    history = stored.user_attrs["retry_history"]
    assert [h.split(":")[0] for h in history] == [
        f"attempt {k} on trainer-0" for k in range(1, DEFAULT_MAX_ATTEMPTS + 1)
    ], history

    assert metrics[("molhpo_coordinator_trials_started_total", ())] == DEFAULT_MAX_ATTEMPTS
    retried = metrics[
        ("molhpo_coordinator_trial_retries_total", (("failure_class", "trainer_lost"),))
    ]
    assert retried == DEFAULT_MAX_ATTEMPTS - 1
