"""StudyRunner, one transition at a time.

A runner moves each trial of its study through these states (the real TrainerPool holds the
slots; a fake trainer client stands in for the trainers' RunTrial and CancelTrial)::

    sampled ──reserve a slot, RunTrial──▶ running on trainer T (attempt n)
       │  ▲  refused (no slot): next trainer, bounded, else FAIL "dispatch"
       │  └─ rejected as invalid: FAIL "invalid_config" at once
    running ──result COMPLETE / PRUNED / FAIL──▶ finished (the store is told)
    running ──trainer lost, lease expired, retryable result──▶ retry (attempt n + 1)
       ... up to max_attempts, then FAIL with the loss's failure class
    (restart) RUNNING in the store ──adopt──▶ claimed back by a heartbeat (attach)
                                            or run again when no trainer claims it

and it tells its watchers why it waits (STUDY_WAITING events) and when it stops waiting
(a STUDY_WAITING event with an empty message).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import optuna
import pytest
import redis
from conftest import RedisServer

from coordinator import study_runner
from coordinator.events import Event, EventKind
from coordinator.membership import TrainerPool, TrainerRecord, WaitReason
from coordinator.metrics import CoordinatorMetrics
from coordinator.retry import DEFAULT_MAX_ATTEMPTS
from coordinator.spec import ComponentSpec, DatasetSpec, FloatDist, ParamSpec, StudySpec
from coordinator.study_runner import StudyRunner, StudyState
from coordinator.trainer_client import TrainerClient
from coordinator.wiring import CoordinatorOptions, Shared
from molhpo.contract import attrs
from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import InvalidArgument, ResourceExhausted
from molhpo.v1 import common_pb2
from storage import decisions
from storage.decisions import Decision
from storage.keys import RedisKeys

HEARTBEAT_TIMEOUT_S = 30.0
LEASE_S = 15.0
BUSY_PATIENCE_S = 0.3
WAIT_S = 5.0
"""Longest any test waits for the runner's thread to do something."""

TrialState = optuna.trial.TrialState


# ---- fakes ----------------------------------------------------------------------------------


class FakeClock:
    """The pool's clock, moved by hand (heartbeat timeouts and leases)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTrainers(TrainerClient):
    """The trainers as the runner reaches them: each address takes RunTrial, refuses it (no
    free slot: ResourceExhausted) or rejects it (InvalidArgument); every call is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing: set[str] = set()
        self.rejecting: set[str] = set()
        self.runs: list[tuple[str, common_pb2.TrialSpec]] = []
        self.cancels: list[tuple[str, int, str]] = []
        self._cond = threading.Condition()

    def run_trial(self, address: str, spec: common_pb2.TrialSpec) -> None:
        kept = common_pb2.TrialSpec()
        kept.CopyFrom(spec)
        with self._cond:
            self.runs.append((address, kept))
            self._cond.notify_all()
        if address in self.refusing:
            raise ResourceExhausted(f"all slots of trainer {address} are busy")
        if address in self.rejecting:
            raise InvalidArgument(f"trial {spec.trial_number}: unknown model 'synthetic'")

    def cancel_trial(self, address: str, trial_id: int, reason: str) -> None:
        with self._cond:
            self.cancels.append((address, trial_id, reason))

    def wait_runs(
        self, n: int, timeout_s: float = WAIT_S
    ) -> list[tuple[str, common_pb2.TrialSpec]]:
        """The first ``n`` RunTrial calls, once made."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.runs) >= n, timeout_s):
                raise AssertionError(
                    f"expected {n} RunTrial calls within {timeout_s} s, got "
                    f"{[(a, s.attempt) for a, s in self.runs]}"
                )
            return list(self.runs)

    def addresses(self) -> list[str]:
        """Where each RunTrial call went, in order."""
        with self._cond:
            return [a for a, _s in self.runs]


def _address(trainer_id: str) -> str:
    return f"{trainer_id}.trainers:50051"


@dataclass
class Harness:
    """A runner's world: the real pool on a fake clock, fake trainers, an in-memory study."""

    clock: FakeClock = field(default_factory=FakeClock)
    trainers: FakeTrainers = field(default_factory=FakeTrainers)
    pool: TrainerPool = field(init=False)
    runners: list[StudyRunner] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pool = TrainerPool(HEARTBEAT_TIMEOUT_S, clock=self.clock, lease_s=LEASE_S)

    def trainer(self, trainer_id: str, slots: int = 1, models: tuple[str, ...] = ()) -> None:
        """Register a trainer (as its RegisterTrainer call does)."""
        self.pool.register(
            TrainerRecord(trainer_id, _address(trainer_id), slots, "cpu", models, (), 0.0)
        )

    def runner(
        self,
        spec: StudySpec,
        study: optuna.Study | None = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        n_existing: int = 0,
        redis_client: redis.Redis | None = None,
        keys: RedisKeys | None = None,
    ) -> StudyRunner:
        """A runner of ``spec`` (not started). Without ``redis_client`` it gets a client of a
        port nothing listens on: only a repeated epoch report would use it."""
        study = study or _study()
        shared = Shared(
            storage=study._storage,
            redis=redis_client or redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.1),
            keys=keys or RedisKeys("unit"),
            pool=self.pool,
            trainers=self.trainers,
            metrics=CoordinatorMetrics(),
            stop=threading.Event(),
        )
        options = CoordinatorOptions(decision_timeout_s=5.0, max_attempts=max_attempts)
        runner = StudyRunner(spec, study, shared, options, n_existing=n_existing)
        self.runners.append(runner)
        return runner


@pytest.fixture(autouse=True)
def quick_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch loop re-checks every 20 ms (not 0.5 s) when nothing wakes it, and a study
    announces busy slots after BUSY_PATIENCE_S (not 2 s), so the tests run in well under a
    second each; the transitions are the same."""
    monkeypatch.setattr(study_runner, "_IDLE_WAIT_S", 0.02)
    monkeypatch.setattr(study_runner, "_ANNOUNCE_BUSY_AFTER_S", BUSY_PATIENCE_S)


@pytest.fixture
def world() -> Iterator[Harness]:
    h = Harness()
    yield h
    for runner in h.runners:
        # Whatever a test left running ends as a store failure would: the loop then finishes.
        runner.stop(cancel_running=False)
        for rt in runner.running_trials():
            runner.on_store_failure(rt.trial_id, "the test is over")
        runner.join(WAIT_S)


# ---- helpers --------------------------------------------------------------------------------


def _spec(n_trials: int = 1, parallelism: int = 1) -> StudySpec:
    return StudySpec(
        name="unit-study",
        dataset=DatasetSpec("synthetic"),
        model="synthetic",
        params=(ParamSpec("lr", FloatDist(1e-5, 1e-1, log=True)),),
        fixed_params={"epoch_seconds": 0.0},
        metric="rmse",
        direction="minimize",
        sampler=ComponentSpec("random"),
        pruner=ComponentSpec("none"),
        n_trials=n_trials,
        max_epochs=3,
        parallelism=parallelism,
        enqueue_default=False,
    )


def _study(pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return optuna.create_study(
        study_name="unit-study",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=pruner or optuna.pruners.NopPruner(),
    )


def _report(spec: common_pb2.TrialSpec, trainer_id: str) -> common_pb2.TrialReport:
    """The header of a report a trainer sends about the trial ``spec`` gave it."""
    return common_pb2.TrialReport(
        study_name=spec.study_name,
        trial_id=spec.trial_id,
        trial_number=spec.trial_number,
        attempt=spec.attempt,
        trainer_id=trainer_id,
    )


def _result(
    spec: common_pb2.TrialSpec,
    trainer_id: str,
    state: common_pb2.TrialState.ValueType,
    valid: dict[str, float] | None = None,
    failure_class: str = "",
) -> common_pb2.TrialReport:
    rep = _report(spec, trainer_id)
    rep.result.CopyFrom(
        common_pb2.TrialResult(
            state=state,
            valid=common_pb2.Metrics(values={"rmse": 0.7} if valid is None else valid),
            epochs_trained=spec.max_epochs,
            best_step=spec.max_epochs,
            failure_class=failure_class,
            failure_reason=f"{failure_class} on {trainer_id}" if failure_class else "",
        )
    )
    return rep


def _epoch(spec: common_pb2.TrialSpec, step: int, rmse: float) -> common_pb2.TrialReport:
    rep = _report(spec, "t1")
    rep.epoch.CopyFrom(
        common_pb2.EpochReport(step=step, valid=common_pb2.Metrics(values={"rmse": rmse}))
    )
    return rep


def _events(runner: StudyRunner) -> list[Event]:
    return runner.events.after(0, 0.0)[0]


def _await_event(
    runner: StudyRunner,
    kind: EventKind,
    where: Callable[[Event], bool] = lambda e: True,
    after: int = 0,
) -> Event:
    """The first event of ``kind`` (newer than sequence ``after``) that ``where`` accepts."""
    seen = after
    deadline = time.monotonic() + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        new, closed = runner.events.after(seen, left)
        for event in new:
            if event.kind is kind and where(event):
                return event
        seen += len(new)
        if closed and not new:
            break
    raise AssertionError(
        f"no {kind.name} event; events: "
        f"{[(e.kind.name, e.trial_number, e.message) for e in _events(runner)]}"
    )


def _await_finished(runner: StudyRunner) -> Event:
    event = _await_event(runner, EventKind.STUDY_FINISHED)
    runner.join(WAIT_S)
    return event


def _assigned(pool: TrainerPool) -> dict[str, set[int]]:
    return {r.trainer_id: r.assigned for r in pool.snapshot()}


def _frozen(study: optuna.Study, trial_id: int) -> optuna.trial.FrozenTrial:
    return study._storage.get_trial(trial_id)


# ---- dispatch -------------------------------------------------------------------------------


def test_dispatch_hands_a_sampled_trial_to_a_free_trainer_and_keeps_its_spec(
    world: Harness,
) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(), study)
    runner.start(enqueue_initial=False)

    ((address, spec),) = world.trainers.wait_runs(1)
    started = _await_event(runner, EventKind.TRIAL_STARTED)

    assert address == _address("t1")
    assert (spec.study_name, spec.attempt, spec.max_epochs) == ("unit-study", 1, 3)
    assert set(spec.params) == {"lr", "epoch_seconds"}
    assert started.message == "on trainer t1"
    assert _assigned(world.pool) == {"t1": {spec.trial_id}}
    trial = _frozen(study, spec.trial_id)
    assert trial.state is TrialState.RUNNING
    # What a restarted coordinator takes the trial back from.
    kept = common_pb2.TrialSpec.FromString(base64.b64decode(trial.system_attrs[attrs.TRIAL_SPEC]))
    assert kept == spec
    assert [rt.trainer_id for rt in runner.running_trials()] == ["t1"]


# ---- refuse ---------------------------------------------------------------------------------


def test_a_refused_trial_goes_to_another_trainer(world: Harness) -> None:
    world.trainer("t1", slots=2)  # the most free slots: the pool offers it first
    world.trainer("t2")
    world.trainers.refusing.add(_address("t1"))
    runner = world.runner(_spec())
    runner.start(enqueue_initial=False)

    started = _await_event(runner, EventKind.TRIAL_STARTED)
    runs = world.trainers.wait_runs(2)

    assert [a for a, _s in runs] == [_address("t1"), _address("t2")]
    assert started.message == "on trainer t2"
    # A refusal is not an attempt: the trial reaches t2 as attempt 1, and t1's slot is free.
    assert [s.attempt for _a, s in runs] == [1, 1]
    trial_id = runs[1][1].trial_id
    assert _assigned(world.pool) == {"t1": set(), "t2": {trial_id}}
    assert not any(e.kind is EventKind.TRIAL_FAILED for e in _events(runner))


def test_a_trial_every_trainer_refuses_fails_as_dispatch(
    world: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(study_runner, "_MAX_DISPATCH_TRIES", 3)
    world.trainer("t1")
    world.trainer("t2")
    world.trainers.refusing.update({_address("t1"), _address("t2")})
    study = _study()
    runner = world.runner(_spec(), study)
    runner.start(enqueue_initial=False)

    failed = _await_event(runner, EventKind.TRIAL_FAILED)
    _await_finished(runner)

    assert failed.message == "dispatch: no trainer accepted the trial"
    assert len(world.trainers.runs) == 3  # the bound on refusals, then no more
    (trial,) = study.get_trials()
    assert trial.state is TrialState.FAIL
    assert trial.user_attrs["failure_class"] == FailureClass.DISPATCH
    assert _assigned(world.pool) == {"t1": set(), "t2": set()}
    assert runner.state is StudyState.COMPLETE


def test_a_trial_a_trainer_rejects_as_invalid_fails_without_trying_others(
    world: Harness,
) -> None:
    world.trainer("t1", slots=2)
    world.trainer("t2")
    world.trainers.rejecting.add(_address("t1"))
    study = _study()
    runner = world.runner(_spec(), study)
    runner.start(enqueue_initial=False)

    failed = _await_event(runner, EventKind.TRIAL_FAILED)
    _await_finished(runner)

    assert failed.message.startswith("invalid_config: trainer refused the trial: ")
    assert world.trainers.addresses() == [_address("t1")]
    (trial,) = study.get_trials()
    assert trial.user_attrs["failure_class"] == FailureClass.INVALID_CONFIG


# ---- lose and retry -------------------------------------------------------------------------


def _lose_by_heartbeats(world: Harness, runner: StudyRunner, spec: common_pb2.TrialSpec) -> str:
    """t1 falls silent; t2 keeps beating; the reaper hands t1's trials back to the runner."""
    world.clock.advance(HEARTBEAT_TIMEOUT_S + 1)
    assert world.pool.heartbeat("t2")
    gone = world.pool.expire()
    assert [r.trainer_id for r in gone] == ["t1"]
    runner.on_trainer_lost("t1", gone[0].assigned)
    return FailureClass.TRAINER_LOST


def _lose_by_lease(world: Harness, runner: StudyRunner, spec: common_pb2.TrialSpec) -> str:
    """t1 keeps beating but stops listing the trial: its lease runs out."""
    world.clock.advance(LEASE_S + 1)
    assert world.pool.heartbeat("t1", running=())
    assert world.pool.heartbeat("t2")
    assert world.pool.expired_leases() == [("t1", spec.trial_id)]
    assert runner.on_lease_expired("t1", spec.trial_id)
    return FailureClass.LEASE_EXPIRED


def _lose_by_handing_back(world: Harness, runner: StudyRunner, spec: common_pb2.TrialSpec) -> str:
    """t1 shuts down and hands the trial back (a retryable failure class in its result)."""
    rep = _result(spec, "t1", common_pb2.TRIAL_STATE_FAIL, failure_class=FailureClass.DRAINED)
    assert runner.on_result(rep)
    return FailureClass.DRAINED


@pytest.mark.parametrize(
    "lose", [_lose_by_heartbeats, _lose_by_lease, _lose_by_handing_back], ids=lambda f: f.__name__
)
def test_a_lost_trial_runs_again_as_its_next_attempt(
    world: Harness, lose: Callable[[Harness, StudyRunner, common_pb2.TrialSpec], str]
) -> None:
    world.trainer("t1", slots=2)
    world.trainer("t2")
    study = _study()
    runner = world.runner(_spec(), study)
    runner.start(enqueue_initial=False)
    ((_a, first),) = world.trainers.wait_runs(1)

    failure_class = lose(world, runner, first)

    retried = _await_event(runner, EventKind.TRIAL_RETRIED)
    assert retried.message.startswith(f"{failure_class}: ")
    _address_2, second = world.trainers.wait_runs(2)[1]
    restarted = _await_event(runner, EventKind.TRIAL_STARTED, after=retried.sequence)
    assert restarted.message.endswith("(attempt 2)")
    assert (second.trial_id, second.attempt) == (first.trial_id, 2)
    assert second.params == first.params and second.seed == first.seed
    assert _frozen(study, first.trial_id).state is TrialState.RUNNING

    # The first attempt's late result is stale; the second attempt's finishes the trial.
    assert not runner.on_result(_result(first, "t1", common_pb2.TRIAL_STATE_COMPLETE))
    trainer_2 = next(rt.trainer_id for rt in runner.running_trials())
    assert runner.on_result(_result(second, trainer_2, common_pb2.TRIAL_STATE_COMPLETE))
    _await_finished(runner)
    trial = _frozen(study, first.trial_id)
    assert trial.state is TrialState.COMPLETE
    assert trial.user_attrs["attempts"] == 2
    (history,) = trial.user_attrs["retry_history"]
    assert history.startswith("attempt 1 on t1: ")


def test_a_trial_lost_on_every_attempt_fails_after_max_attempts(world: Harness) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(), study, max_attempts=3)
    runner.start(enqueue_initial=False)

    for attempt in (1, 2, 3):
        _address_n, spec = world.trainers.wait_runs(attempt)[-1]
        assert spec.attempt == attempt
        (rt,) = runner.running_trials()
        runner.on_trainer_lost(rt.trainer_id, {spec.trial_id})

    failed = _await_event(runner, EventKind.TRIAL_FAILED)
    _await_finished(runner)

    assert failed.message.startswith(f"{FailureClass.TRAINER_LOST}: ")
    assert failed.message.endswith("(after 3 attempts)")
    assert len(world.trainers.runs) == 3
    (trial,) = study.get_trials()
    assert trial.state is TrialState.FAIL
    assert trial.user_attrs["failure_class"] == FailureClass.TRAINER_LOST
    assert trial.user_attrs["attempts"] == 3
    assert len(trial.user_attrs["retry_history"]) == 3
    assert _assigned(world.pool) == {"t1": set()}


# ---- finish ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    """A trainer's final report and what the runner must make of it."""

    state: common_pb2.TrialState.ValueType
    valid: dict[str, float]
    failure_class: str
    stored: optuna.trial.TrialState
    event: EventKind
    stored_class: str | None


ENDINGS = {
    "complete": Ending(
        common_pb2.TRIAL_STATE_COMPLETE,
        {"rmse": 0.7},
        "",
        TrialState.COMPLETE,
        EventKind.TRIAL_COMPLETED,
        None,
    ),
    "pruned": Ending(
        common_pb2.TRIAL_STATE_PRUNED,
        {"rmse": 1.5},
        "",
        TrialState.PRUNED,
        EventKind.TRIAL_PRUNED,
        None,
    ),
    "diverged": Ending(
        common_pb2.TRIAL_STATE_FAIL,
        {},
        FailureClass.DIVERGED,
        TrialState.FAIL,
        EventKind.TRIAL_FAILED,
        FailureClass.DIVERGED,
    ),
    "complete without the objective": Ending(
        common_pb2.TRIAL_STATE_COMPLETE,
        {"mae": 0.3},
        "",
        TrialState.FAIL,
        EventKind.TRIAL_FAILED,
        FailureClass.ERROR,
    ),
}


@pytest.mark.parametrize("ending", ENDINGS.values(), ids=ENDINGS.keys())
def test_a_result_finishes_the_trial_in_the_store(world: Harness, ending: Ending) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(), study)
    runner.start(enqueue_initial=False)
    ((_a, spec),) = world.trainers.wait_runs(1)

    assert runner.on_result(
        _result(spec, "t1", ending.state, ending.valid, failure_class=ending.failure_class)
    )
    _await_event(runner, ending.event)
    finished = _await_finished(runner)

    trial = _frozen(study, spec.trial_id)
    assert trial.state is ending.stored
    assert trial.user_attrs.get("failure_class") == ending.stored_class
    assert trial.user_attrs["attempts"] == 1
    if ending.stored is TrialState.COMPLETE:
        assert trial.value == pytest.approx(0.7)
        assert runner.best_value == pytest.approx(0.7)
    # Not retried: one RunTrial, the slot is free, the study is done and says so in the store.
    assert len(world.trainers.runs) == 1
    assert _assigned(world.pool) == {"t1": set()}
    assert runner.finished_counts[ending.stored.name.lower()] == 1
    assert runner.state is StudyState.COMPLETE and finished.message == ""
    assert study._storage.get_study_system_attrs(study._study_id)[attrs.STUDY_STATE] == "COMPLETE"
    # Once finished, the same result again changes nothing.
    assert not runner.on_result(_result(spec, "t1", ending.state, ending.valid))


def test_an_out_of_memory_result_is_retried_not_recorded(world: Harness) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(), study)
    runner.start(enqueue_initial=False)
    ((_a, first),) = world.trainers.wait_runs(1)

    oom = FailureClass.OUT_OF_MEMORY
    assert runner.on_result(_result(first, "t1", common_pb2.TRIAL_STATE_FAIL, failure_class=oom))

    _a2, second = world.trainers.wait_runs(2)[1]
    assert (second.trial_id, second.attempt) == (first.trial_id, 2)
    assert _frozen(study, first.trial_id).state is TrialState.RUNNING


def test_epoch_reports_are_decided_and_the_decisions_reach_the_trainer(
    world: Harness, redis_server: RedisServer, key_prefix: str
) -> None:
    client = redis_server.client()
    keys = RedisKeys(key_prefix)
    study = _study(optuna.pruners.ThresholdPruner(upper=1.0))
    world.trainer("t1")
    runner = world.runner(_spec(), study, redis_client=client, keys=keys)
    runner.start(enqueue_initial=False)
    ((_a, spec),) = world.trainers.wait_runs(1)
    tid = spec.trial_id

    assert runner.on_epoch(_epoch(spec, 1, 0.8)) is Decision.CONTINUE
    assert decisions.wait(client, keys, tid, 1, timeout_s=1.0) is Decision.CONTINUE
    assert runner.on_epoch(_epoch(spec, 2, 2.0)) is Decision.PRUNE
    assert decisions.wait(client, keys, tid, 2, timeout_s=1.0) is Decision.PRUNE
    logged = _frozen(study, tid).system_attrs[f"{attrs.TRIAL_DECISION_PREFIX}2"]

    # Delivered twice: the same answer again, published again, not decided again.
    assert runner.on_epoch(_epoch(spec, 2, 0.1)) is Decision.PRUNE
    assert decisions.wait(client, keys, tid, 2, timeout_s=1.0) is Decision.PRUNE
    assert _frozen(study, tid).system_attrs[f"{attrs.TRIAL_DECISION_PREFIX}2"] == logged
    # Another attempt's report is not this run's business.
    stale = _epoch(spec, 3, 0.1)
    stale.attempt = 2
    assert runner.on_epoch(stale) is None

    assert runner.on_result(_result(spec, "t1", common_pb2.TRIAL_STATE_PRUNED))
    pruned = _await_event(runner, EventKind.TRIAL_PRUNED)
    assert pruned.step == 2
    assert _frozen(study, tid).state is TrialState.PRUNED


# ---- cancel ---------------------------------------------------------------------------------


def test_stop_with_cancel_cancels_running_trials_and_dispatches_no_more(world: Harness) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(n_trials=2), study)
    runner.start(enqueue_initial=False)
    ((_a, spec),) = world.trainers.wait_runs(1)

    runner.stop(cancel_running=True)

    assert world.trainers.cancels == [(_address("t1"), spec.trial_id, "study stopped by request")]
    # The trainer stops the trial and says so; the study ends STOPPED with one trial.
    cancelled = FailureClass.CANCELLED
    rep = _result(spec, "t1", common_pb2.TRIAL_STATE_FAIL, failure_class=cancelled)
    assert runner.on_result(rep)
    finished = _await_finished(runner)
    assert finished.message == "stopped by request"
    assert runner.state is StudyState.STOPPED
    assert len(world.trainers.runs) == 1
    (trial,) = study.get_trials()
    assert (trial.state, trial.user_attrs["failure_class"]) == (TrialState.FAIL, cancelled)


def test_stop_without_cancel_lets_running_trials_finish(world: Harness) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(n_trials=2), study)
    runner.start(enqueue_initial=False)
    ((_a, spec),) = world.trainers.wait_runs(1)

    runner.stop(cancel_running=False)
    assert runner.queue_depth() == 0
    assert runner.on_result(_result(spec, "t1", common_pb2.TRIAL_STATE_COMPLETE))
    _await_finished(runner)

    assert world.trainers.cancels == []
    assert runner.state is StudyState.STOPPED
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_a_retry_still_waiting_when_the_study_stops_fails_as_stopped(world: Harness) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(), study)
    runner.start(enqueue_initial=False)
    ((_a, spec),) = world.trainers.wait_runs(1)
    world.clock.advance(HEARTBEAT_TIMEOUT_S + 1)
    (gone,) = world.pool.expire()  # the only trainer: the retry has nowhere to go
    runner.on_trainer_lost("t1", gone.assigned)
    _await_event(runner, EventKind.TRIAL_RETRIED)

    runner.stop(cancel_running=True)

    failed = _await_event(runner, EventKind.TRIAL_FAILED)
    _await_finished(runner)
    assert failed.message == "stopped: the study stopped before its retry"
    assert _frozen(study, spec.trial_id).state is TrialState.FAIL
    assert len(world.trainers.runs) == 1


# ---- claim back after a coordinator restart -------------------------------------------------


def _left_running(study: optuna.Study, attempt: int | None) -> optuna.trial.FrozenTrial:
    """A trial a previous coordinator left RUNNING in the store: sent to some trainer as
    ``attempt`` (its spec kept in the store), or never sent (``None``)."""
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    if attempt is not None:
        spec = common_pb2.TrialSpec(
            study_name="unit-study",
            trial_id=trial._trial_id,
            trial_number=trial.number,
            attempt=attempt,
            model="synthetic",
            max_epochs=3,
        )
        spec.params["lr"].float_value = trial.params["lr"]
        study._storage.set_trial_system_attr(
            trial._trial_id, attrs.TRIAL_SPEC, base64.b64encode(spec.SerializeToString()).decode()
        )
    return _frozen(study, trial._trial_id)


def test_restart_a_trainer_heartbeat_claims_back_its_trial(world: Harness) -> None:
    study = _study()
    left = _left_running(study, attempt=2)
    world.trainer("t1")
    runner = world.runner(_spec(), study, n_existing=1)
    runner.adopt([left])
    runner.start(enqueue_initial=False)

    # t1 still runs the trial and says so in its heartbeat; the reaper hands the claim over.
    assert world.pool.heartbeat("t1", running=[left._trial_id])
    assert world.pool.take_claimed() == [("t1", left._trial_id)]
    assert runner.attach("t1", left._trial_id)

    started = _await_event(runner, EventKind.TRIAL_STARTED)
    assert started.message == "on trainer t1"
    assert _assigned(world.pool) == {"t1": {left._trial_id}}
    assert not runner.attach("t2", left._trial_id)  # claimed already
    assert not runner.attach("t1", left._trial_id + 100)  # not this study's
    # The trainer's result for the attempt it runs finishes the trial; nothing was re-sent.
    spec = common_pb2.TrialSpec(
        study_name="unit-study", trial_id=left._trial_id, trial_number=left.number, attempt=2
    )
    assert runner.on_result(_result(spec, "t1", common_pb2.TRIAL_STATE_COMPLETE))
    _await_finished(runner)
    assert world.trainers.runs == []
    assert _frozen(study, left._trial_id).state is TrialState.COMPLETE
    assert world.pool.take_unclaimed() == []


def test_restart_a_trial_no_trainer_claims_runs_again_as_its_next_attempt(
    world: Harness,
) -> None:
    study = _study()
    left = _left_running(study, attempt=2)
    world.trainer("t1")
    runner = world.runner(_spec(), study, n_existing=1)
    runner.adopt([left])
    runner.start(enqueue_initial=False)

    world.clock.advance(LEASE_S + 1)  # a lease long, and no heartbeat listed it
    assert world.pool.take_unclaimed() == [left._trial_id]
    assert runner.unclaimed(left._trial_id)

    ((address, spec),) = world.trainers.wait_runs(1)
    assert address == _address("t1")
    # The spec the store kept, as the next attempt.
    kept = common_pb2.TrialSpec.FromString(base64.b64decode(left.system_attrs[attrs.TRIAL_SPEC]))
    kept.attempt = 3
    assert spec == kept
    assert not runner.unclaimed(left._trial_id)  # on its way again: not unclaimed any more


def test_restart_a_trial_that_never_reached_a_trainer_is_sent_at_once(world: Harness) -> None:
    study = _study()
    left = _left_running(study, attempt=None)
    world.trainer("t1")
    runner = world.runner(_spec(), study, n_existing=1)
    runner.adopt([left])
    runner.start(enqueue_initial=False)

    ((_a, spec),) = world.trainers.wait_runs(1)
    assert (spec.trial_id, spec.attempt) == (left._trial_id, 1)
    # Rebuilt from the parameters the store holds.
    assert spec.params["lr"].float_value == left.params["lr"]
    assert spec.model == "synthetic" and spec.max_epochs == 3
    world.clock.advance(LEASE_S + 1)
    assert world.pool.take_unclaimed() == []  # nothing was waiting for a claim


# ---- waiting --------------------------------------------------------------------------------


def _waiting_events(runner: StudyRunner) -> list[str]:
    return [e.message for e in _events(runner) if e.kind is EventKind.STUDY_WAITING]


def test_no_trainer_is_announced_at_once_and_so_is_the_end_of_the_wait(world: Harness) -> None:
    runner = world.runner(_spec())
    runner.start(enqueue_initial=False)

    told = _await_event(runner, EventKind.STUDY_WAITING)
    assert told.message.startswith("no trainer is registered to run synthetic on synthetic")
    assert runner.waiting is not None and runner.waiting.reason is WaitReason.NO_TRAINERS

    world.trainer("t1")
    resumed = _await_event(runner, EventKind.STUDY_WAITING, after=told.sequence)
    started = _await_event(runner, EventKind.TRIAL_STARTED)

    assert resumed.message == ""
    assert resumed.sequence < started.sequence
    assert runner.waiting is None
    assert _waiting_events(runner) == [told.message, ""]  # told once, not on every look


def test_no_able_trainer_is_announced_at_once_naming_what_they_run(world: Harness) -> None:
    world.trainer("t1", models=("gin",))
    runner = world.runner(_spec())
    runner.start(enqueue_initial=False)

    told = _await_event(runner, EventKind.STUDY_WAITING)
    assert told.message.startswith("none of the 1 registered trainers can run synthetic")
    assert "t1: models gin" in told.message
    assert runner.waiting is not None and runner.waiting.reason is WaitReason.NO_CAPABLE_TRAINER
    assert world.trainers.runs == []

    world.trainer("t2")
    resumed = _await_event(runner, EventKind.STUDY_WAITING, after=told.sequence)
    assert resumed.message == ""
    assert [a for a, _s in world.trainers.wait_runs(1)] == [_address("t2")]


def test_busy_slots_are_announced_after_a_while_and_the_end_of_the_wait_too(
    world: Harness,
) -> None:
    world.trainer("t1")
    study = _study()
    runner = world.runner(_spec(n_trials=2, parallelism=2), study)
    runner.start(enqueue_initial=False)
    ((_a, first),) = world.trainers.wait_runs(1)
    started = _await_event(runner, EventKind.TRIAL_STARTED)

    told = _await_event(runner, EventKind.STUDY_WAITING)
    assert told.message.startswith("every slot is busy: 1 slots on 1 trainers")
    assert runner.waiting is not None and runner.waiting.reason is WaitReason.SLOTS_BUSY
    # Ordinary hand-overs make no noise: only a wait longer than the patience is told.
    assert told.time - started.time >= BUSY_PATIENCE_S * 0.9

    assert runner.on_result(_result(first, "t1", common_pb2.TRIAL_STATE_COMPLETE))
    resumed = _await_event(runner, EventKind.STUDY_WAITING, after=told.sequence)
    second = _await_event(runner, EventKind.TRIAL_STARTED, after=resumed.sequence)
    assert resumed.message == ""
    assert second.trial_number == 1
    assert _waiting_events(runner) == [told.message, ""]
