"""RunningTrial.state follows each trial of a StudyRunner: dispatched, on a trainer, queued for a
retry, adopted after a restart and waiting for its trainer's claim, finished.

The real TrainerPool (on a hand-moved clock) holds the slots; a fake trainer client takes every
RunTrial. No Redis: no report here repeats an epoch.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator

import optuna
import pytest
import redis

from coordinator import study_runner
from coordinator.membership import TrainerPool, TrainerRecord
from coordinator.metrics import CoordinatorMetrics
from coordinator.spec import ComponentSpec, DatasetSpec, FloatDist, ParamSpec, StudySpec
from coordinator.study_runner import RunningTrial, RunState, StudyRunner
from coordinator.trainer_client import TrainerClient
from coordinator.wiring import CoordinatorOptions, Shared
from molhpo.contract import attrs
from molhpo.contract.enums import FailureClass
from molhpo.v1 import common_pb2
from storage.keys import RedisKeys

HEARTBEAT_TIMEOUT_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AcceptingTrainers(TrainerClient):
    """Every trainer takes every trial; cancellations are ignored."""

    def run_trial(self, address: str, spec: common_pb2.TrialSpec) -> None:
        pass

    def cancel_trial(self, address: str, trial_id: int, reason: str) -> None:
        pass


@pytest.fixture(autouse=True)
def quick_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(study_runner, "_IDLE_WAIT_S", 0.02)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool(clock: Clock) -> TrainerPool:
    return TrainerPool(HEARTBEAT_TIMEOUT_S, clock=clock, lease_s=15.0)


@pytest.fixture
def runners() -> Iterator[list[StudyRunner]]:
    """Runners whose dispatch thread started: stopped after the test."""
    started: list[StudyRunner] = []
    yield started
    for runner in started:
        runner.stop(cancel_running=False)
        for rt in runner.running_trials():
            runner.on_store_failure(rt.trial_id, "the test is over")
        runner.join(5.0)


def _register(pool: TrainerPool, trainer_id: str) -> None:
    pool.register(TrainerRecord(trainer_id, f"{trainer_id}:50051", 1, "cpu", (), (), 0.0))


def _spec() -> StudySpec:
    return StudySpec(
        name="state-study",
        dataset=DatasetSpec("synthetic"),
        model="synthetic",
        params=(ParamSpec("lr", FloatDist(1e-5, 1e-1, log=True)),),
        fixed_params={"epoch_seconds": 0.0},
        metric="rmse",
        direction="minimize",
        sampler=ComponentSpec("random"),
        pruner=ComponentSpec("none"),
        n_trials=1,
        max_epochs=3,
        enqueue_default=False,
    )


def _runner(pool: TrainerPool, study: optuna.Study | None = None) -> StudyRunner:
    n_existing = len(study.trials) if study else 0
    study = study or optuna.create_study(study_name="state-study")
    shared = Shared(
        storage=study._storage,
        redis=redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.1),  # never reached
        keys=RedisKeys("unit"),
        pool=pool,
        trainers=AcceptingTrainers(),
        metrics=CoordinatorMetrics(),
        stop=threading.Event(),
    )
    return StudyRunner(
        _spec(), study, shared, CoordinatorOptions(decision_timeout_s=5.0), n_existing=n_existing
    )


def _wait(what: str, ok: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5.0
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _only_trial(runner: StudyRunner) -> RunningTrial:
    _wait("the runner has a trial", lambda: len(runner.running_trials()) == 1)
    return runner.running_trials()[0]


def _result(
    rt: RunningTrial, trainer_id: str, state: int, failure_class: str = ""
) -> common_pb2.TrialReport:
    return common_pb2.TrialReport(
        study_name="state-study",
        trial_id=rt.trial_id,
        trial_number=rt.number,
        attempt=rt.attempt,
        trainer_id=trainer_id,
        result=common_pb2.TrialResult(
            state=state,  # type: ignore[arg-type]
            failure_class=failure_class,
            valid=common_pb2.Metrics(values={"rmse": 1.0}),
        ),
    )


def test_a_trial_goes_on_a_trainer_is_lost_waits_for_a_retry_and_finishes(
    pool: TrainerPool, clock: Clock, runners: list[StudyRunner]
) -> None:
    _register(pool, "t1")
    runner = _runner(pool)
    runners.append(runner)
    runner.start()
    rt = _only_trial(runner)
    _wait("the trial is on t1", lambda: rt.state is RunState.ON_TRAINER)
    assert rt.trainer_id == "t1"

    clock.now += HEARTBEAT_TIMEOUT_S + 1  # t1 goes silent; no trainer is left
    (gone,) = pool.expire()
    runner.on_trainer_lost("t1", gone.assigned)
    assert rt.state is RunState.RETRY_QUEUED
    assert (rt.trainer_id, rt.attempt) == ("", 2)

    # A retryable result of the queued attempt loses nothing more: it is on no trainer.
    assert runner.on_result(_result(rt, "t1", common_pb2.TRIAL_STATE_FAIL, FailureClass.DRAINED))
    assert (rt.state, rt.attempt) == (RunState.RETRY_QUEUED, 2)

    _register(pool, "t2")
    _wait("the retry is on t2", lambda: rt.state is RunState.ON_TRAINER)
    assert (rt.trainer_id, rt.attempt) == ("t2", 2)
    assert runner.on_result(_result(rt, "t2", common_pb2.TRIAL_STATE_COMPLETE))
    assert rt.state is RunState.FINISHED
    assert runner.running_trials() == []


def _left_running(with_spec: bool) -> optuna.Study:
    """A study a previous coordinator left with one RUNNING trial (dispatched or not)."""
    study = optuna.create_study(study_name="state-study")
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    if with_spec:
        sent = common_pb2.TrialSpec(
            study_name="state-study", trial_id=trial._trial_id, trial_number=0, attempt=1
        )
        study._storage.set_trial_system_attr(
            trial._trial_id, attrs.TRIAL_SPEC, base64.b64encode(sent.SerializeToString()).decode()
        )
    return study


def test_an_adopted_trial_waits_for_its_claim_and_a_claim_takes_it_once(
    pool: TrainerPool,
) -> None:
    study = _left_running(with_spec=True)
    runner = _runner(pool, study)
    runner.adopt(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    rt = _only_trial(runner)
    assert rt.state is RunState.AWAITING_CLAIM

    assert runner.attach("t1", rt.trial_id)
    assert (rt.state, rt.trainer_id) == (RunState.ON_TRAINER, "t1")
    assert not runner.attach("t2", rt.trial_id)
    assert not runner.unclaimed(rt.trial_id)
    assert rt.trainer_id == "t1"


def test_an_adopted_trial_no_trainer_claims_is_queued_for_a_retry(
    pool: TrainerPool,
) -> None:
    study = _left_running(with_spec=True)
    runner = _runner(pool, study)
    runner.adopt(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    rt = _only_trial(runner)

    assert runner.unclaimed(rt.trial_id)
    assert (rt.state, rt.attempt) == (RunState.RETRY_QUEUED, 2)
    assert not runner.attach("t1", rt.trial_id)  # too late: it runs again
    assert not runner.unclaimed(rt.trial_id)
    assert rt.attempt == 2


def test_an_adopted_trial_that_never_reached_a_trainer_is_queued_at_once(
    pool: TrainerPool,
) -> None:
    study = _left_running(with_spec=False)
    runner = _runner(pool, study)
    runner.adopt(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    rt = _only_trial(runner)
    assert rt.state is RunState.RETRY_QUEUED
    assert not runner.attach("t1", rt.trial_id)


def test_a_store_failure_finishes_a_trial_wherever_it_stands(
    pool: TrainerPool,
) -> None:
    study = _left_running(with_spec=False)
    runner = _runner(pool, study)
    runner.adopt(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    rt = _only_trial(runner)
    assert runner.on_store_failure(rt.trial_id, "the store refused a write")
    assert rt.state is RunState.FINISHED
    assert runner.running_trials() == []
