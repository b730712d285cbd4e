"""redis-server stopped and started again mid-study: trainers keep training and buffer their
reports, the coordinator reconnects, and every report arrives, complete and in order."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.contract import attrs
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_mlp.yaml"
N_TRIALS = 6
# Epochs the trainers must train, and reports they must hold back, while Redis is away.
OUTAGE_EPOCHS = 4


def trainer_totals(stack: LocalStack) -> dict[str, float]:
    """Epochs trained and reports waiting for Redis, summed over the trainers' /metrics."""
    totals = {"molhpo_trainer_epochs_total": 0.0, "molhpo_trainer_reports_buffered": 0.0}
    for url in stack.trainer_metrics:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name in totals:
                    totals[s.name] += s.value
    return totals


def wait_until(
    what: str, check: Callable[[], dict[str, float] | None], timeout_s: float
) -> dict[str, float]:
    """Poll ``check`` until it returns a value; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got is not None:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


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
            before = trainer_totals(stack)

            def trained_and_buffered() -> dict[str, float] | None:
                now = trainer_totals(stack)
                trained = now["molhpo_trainer_epochs_total"] - before["molhpo_trainer_epochs_total"]
                buffered = now["molhpo_trainer_reports_buffered"]
                ok = trained >= OUTAGE_EPOCHS and buffered >= OUTAGE_EPOCHS
                return {"trained": trained, "buffered": buffered} if ok else None

            # The trainers go on training while Redis is away and keep what they report.
            during = wait_until("epochs trained during the outage", trained_and_buffered, 120)
            redis_server.start()
            # Once Redis is back every buffered report goes out.
            wait_until(
                "the buffered reports to be sent",
                lambda: (
                    t
                    if (t := trainer_totals(stack))["molhpo_trainer_reports_buffered"] == 0
                    else None
                ),
                60,
            )
            info = client.wait(req.name, timeout_s=600)
            trials = client.list_trials(req.name)
            after = trainer_totals(stack)
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
    assert during["trained"] >= OUTAGE_EPOCHS and during["buffered"] >= OUTAGE_EPOCHS, during

    study = optuna.load_study(
        study_name=req.name, storage=f"sqlite:///{tmp_path / 'stack' / 'studies.db'}"
    )
    recorded = 0
    for t in study.trials:
        epochs = t.user_attrs["epochs_trained"]
        # Complete: one value for every epoch the trainer trained, no gap.
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1)), (t.number, epochs)
        # In order: the coordinator decided on the steps one after the other.
        seqs = [
            t.system_attrs[f"{attrs.TRIAL_DECISION_PREFIX}{step}"]["seq"]
            for step in range(1, epochs + 1)
        ]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (t.number, seqs)
        assert t.user_attrs["attempts"] == 1, (t.number, t.user_attrs.get("retry_history"))
        recorded += epochs
    # Every epoch the trainers trained, those of the outage included, reached the store once.
    assert recorded == after["molhpo_trainer_epochs_total"], (recorded, after)
