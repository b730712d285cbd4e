"""Decision sequence numbers go on from the highest one a study logged, so a runner made for
a resumed or restarted study never reuses one."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import redis

from coordinator import convert
from coordinator.membership import TrainerPool
from coordinator.metrics import CoordinatorMetrics
from coordinator.study_runner import StudyRunner, last_decision_seq
from coordinator.trainer_client import TrainerClient
from coordinator.wiring import CoordinatorOptions, Shared
from molhpo import studyfile
from molhpo.contract import attrs
from molhpo.v1 import common_pb2
from storage.decisions import Decision
from storage.keys import RedisKeys

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "synthetic.yaml"


def _logged(seqs: dict[int, object]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        value=1.0,
        system_attrs={
            f"{attrs.TRIAL_DECISION_PREFIX}{step}": {"seq": s, "prune": False}
            for step, s in seqs.items()
        },
    )


def test_last_decision_seq_is_the_highest_logged() -> None:
    assert last_decision_seq([]) == 0
    trials = [_logged({1: 3, 2: 17}), _logged({1: 9}), optuna.trial.create_trial(value=2.0)]
    assert last_decision_seq(trials) == 17
    odd = optuna.trial.create_trial(
        value=1.0,
        system_attrs={f"{attrs.TRIAL_DECISION_PREFIX}1": "not a log entry", "other": {"seq": 99}},
    )
    assert last_decision_seq([odd]) == 0


def test_a_new_runner_numbers_its_decisions_after_the_studys_last() -> None:
    spec = convert.spec_from_proto(studyfile.load(EXAMPLE))
    study = optuna.create_study()
    study.add_trial(_logged({1: 3, 2: 17}))
    study.add_trial(_logged({1: 9}))
    running = study.ask()
    shared = Shared(
        storage=study._storage,
        redis=redis.Redis(),  # never contacted: no step is decided twice here
        keys=RedisKeys("unit"),
        pool=TrainerPool(10.0),
        trainers=TrainerClient(),
        metrics=CoordinatorMetrics(),
        stop=threading.Event(),
    )
    runner = StudyRunner(spec, study, shared, CoordinatorOptions(decision_timeout_s=5.0))
    runner.adopt([study._storage.get_trial(running._trial_id)])
    published: list[tuple[int, int, Decision]] = []
    for step in (1, 2):
        report = common_pb2.TrialReport(
            study_name=spec.name,
            trial_id=running._trial_id,
            trial_number=running.number,
            attempt=1,
            epoch=common_pb2.EpochReport(step=step, valid=common_pb2.Metrics(values={"rmse": 2.0})),
        )
        runner.on_epoch(report, lambda t, s, d: published.append((t, s, d)))
    log = study._storage.get_trial(running._trial_id).system_attrs
    assert [log[f"{attrs.TRIAL_DECISION_PREFIX}{step}"]["seq"] for step in (1, 2)] == [18, 19]
    assert [s for _t, s, _d in published] == [1, 2]
