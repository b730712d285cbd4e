"""TrialWorker, one transition at a time: slots, epochs and decisions, cancel, drain, failures.

A worker runs each trial it accepts in a slot of its own::

    submit ─┬─ free slot ──▶ running: each epoch is reported, then its decision awaited (bounded)
            │                  ├─ CONTINUE, or no decision in time ──▶ the next epoch
            │                  ├─ PRUNE (or marked pruned meanwhile) ──▶ result PRUNED
            │                  ├─ every epoch trained ──▶ result COMPLETE
            │                  ├─ cancel / drain ──▶ after this epoch: FAIL cancelled / drained
            │                  └─ training raises ──▶ result FAIL, with its failure class
            ├─ every slot busy ──▶ ResourceExhausted, nothing taken
            └─ a spec that cannot run ──▶ InvalidArgument, nothing taken

and every report goes to the Redis stream the coordinator reads. The training loop is a fake
put in place of ``trainer.worker.train`` that trains the epochs a test lets it; Redis is a real
redis-server, the decisions are written with the coordinator's own ``storage.decisions`` and
the reports read with its own ``ReportReader``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis
import torch
from conftest import RedisServer

from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import (
    AlreadyExists,
    DivergedError,
    InvalidArgument,
    InvalidConfigError,
    NotFound,
    ResourceExhausted,
    TrainingError,
)
from molhpo.v1 import common_pb2
from storage import decisions
from storage.decisions import Decision
from storage.keys import RedisKeys
from storage.reports import ReportReader
from trainer import worker as worker_module
from trainer.metrics import TrainerMetrics
from trainer.training.loop import EpochResult, TrainConfig, TrainResult
from trainer.worker import TrialWorker

WAIT_S = 5.0
"""Longest any test waits for a trial's thread to do something."""
SLOTS = 2


class FakeTraining:
    """Stands in for the training loop (``train``): trains ``max_epochs`` epochs of made-up
    metrics, calls ``on_epoch`` after each and stops when it answers False. A trial (by its
    seed) can be held, training only the epochs the test lets it, or made to raise at an
    epoch."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[int] = set()
        self._allowed: dict[int, int] = {}
        self._trained: dict[int, int] = {}
        self.raises: dict[int, tuple[int, BaseException]] = {}
        self.configs: list[TrainConfig] = []

    def hold(self, seed: int) -> None:
        """Trial ``seed`` trains only the epochs :meth:`let` allows."""
        with self._cond:
            self._held.add(seed)

    def let(self, seed: int, epochs: int = 1) -> None:
        """Let a held trial train ``epochs`` more."""
        with self._cond:
            self._allowed[seed] = self._allowed.get(seed, 0) + epochs
            self._cond.notify_all()

    def release_all(self) -> None:
        """Hold nothing any more."""
        with self._cond:
            self._held.clear()
            self._cond.notify_all()

    def wait_trained(self, seed: int, epochs: int) -> None:
        """Until trial ``seed`` finished ``epochs`` epochs (its on_epoch answered)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._trained.get(seed, 0) >= epochs, WAIT_S):
                raise AssertionError(f"trial {seed} did not train {epochs} epochs in {WAIT_S} s")

    def trained(self, seed: int) -> int:
        with self._cond:
            return self._trained.get(seed, 0)

    def _wait_allowed(self, seed: int, epoch: int) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: seed not in self._held or self._allowed.get(seed, 0) >= epoch, WAIT_S
            ):
                raise TimeoutError(f"the test never let trial {seed} train epoch {epoch}")

    def __call__(
        self,
        config: TrainConfig,
        on_epoch: Callable[[EpochResult], bool],
        checkpoints: object = None,
        resume: object = None,
    ) -> TrainResult:
        seed = config.seed
        with self._cond:
            self.configs.append(config)
        step, stopped = 0, False
        while step < config.max_epochs:
            self._wait_allowed(seed, step + 1)
            step += 1
            if seed in self.raises and self.raises[seed][0] == step:
                raise self.raises[seed][1]
            rmse = 1.0 / step
            go_on = on_epoch(EpochResult(step, rmse, {"rmse": rmse}, 0.001, 8))
            with self._cond:
                self._trained[seed] = step
                self._cond.notify_all()
            if not go_on:
                stopped = True
                break
        return TrainResult(
            epochs_trained=step,
            stopped=stopped,
            best_step=step,
            best_valid_metrics={"rmse": 1.0 / step},
            test_metrics={"rmse": 1.1 / step},
            seconds=0.01,
            n_parameters=42,
        )


@dataclass
class Trainer:
    """A worker with its Redis, keys, metrics and fake training loop."""

    worker: TrialWorker
    training: FakeTraining
    client: redis.Redis
    keys: RedisKeys
    metrics: TrainerMetrics
    reader: ReportReader
    seen: list[common_pb2.TrialReport] = field(default_factory=list)

    def reports(self) -> list[common_pb2.TrialReport]:
        """Every report in the stream so far, in order, read as the coordinator reads them
        (the tests read after the reports were written: one read takes what is there)."""
        entries = self.reader.read(count=10_000, block_ms=1)
        self.seen += [e.report for e in entries if e.report is not None]
        return list(self.seen)

    def result(self, trial_id: int) -> common_pb2.TrialResult:
        (rep,) = [
            r for r in self.reports() if r.trial_id == trial_id and r.WhichOneof("body") == "result"
        ]
        return rep.result

    def steps(self, trial_id: int) -> list[int]:
        return [
            r.epoch.step
            for r in self.reports()
            if r.trial_id == trial_id and r.WhichOneof("body") == "epoch"
        ]

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {WAIT_S} s")
            time.sleep(0.005)


@pytest.fixture
def trainer(
    redis_server: RedisServer, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Trainer]:
    training = FakeTraining()
    monkeypatch.setattr(worker_module, "train", training)
    client = redis_server.client()
    keys = RedisKeys(key_prefix)
    metrics = TrainerMetrics(SLOTS)
    worker = TrialWorker("w1", SLOTS, client, keys, metrics, device="cpu")
    reader = ReportReader(client, keys, "unit-test")
    reader.ensure_group()
    yield Trainer(worker, training, client, keys, metrics, reader)
    worker.cancel_all("the test is over")
    training.release_all()
    worker.join(WAIT_S)
    worker.close(1.0)


def _spec(
    trial_id: int, max_epochs: int = 3, decision_timeout_s: float = 0.0, attempt: int = 1
) -> common_pb2.TrialSpec:
    """A synthetic trial; its seed is its id, which is how FakeTraining knows it."""
    return common_pb2.TrialSpec(
        study_name="unit-study",
        trial_id=trial_id,
        trial_number=trial_id - 1,
        attempt=attempt,
        dataset=common_pb2.DatasetRef(name="synthetic"),
        model="synthetic",
        max_epochs=max_epochs,
        seed=trial_id,
        objective=common_pb2.Objective(metric="rmse", direction=common_pb2.DIRECTION_MINIMIZE),
        decision_timeout_seconds=decision_timeout_s,
    )


# ---- finish ---------------------------------------------------------------------------------


def test_a_trial_reports_every_epoch_then_its_result(trainer: Trainer) -> None:
    assert trainer.worker.submit(_spec(1, max_epochs=3, attempt=2)) == 1
    trainer.worker.join(WAIT_S)

    reports = trainer.reports()
    assert [r.WhichOneof("body") for r in reports] == ["epoch", "epoch", "epoch", "result"]
    assert [r.epoch.step for r in reports[:3]] == [1, 2, 3]
    # Every report says whose it is, down to the attempt, so a stale one can be told apart.
    assert {(r.trial_id, r.attempt, r.trainer_id, r.study_name) for r in reports} == {
        (1, 2, "w1", "unit-study")
    }
    result = reports[-1].result
    assert result.state == common_pb2.TRIAL_STATE_COMPLETE
    assert (result.epochs_trained, result.best_step, result.n_parameters) == (3, 3, 42)
    assert result.valid.values["rmse"] == pytest.approx(1 / 3)
    (config,) = trainer.training.configs
    assert (config.model, config.seed, config.max_epochs, config.device) == (
        "synthetic",
        1,
        3,
        "cpu",
    )
    assert trainer.worker.busy() == 0
    assert trainer.count("molhpo_trainer_trials_total", state="complete") == 1
    assert trainer.count("molhpo_trainer_epochs_total") == 3


# ---- slots ----------------------------------------------------------------------------------


def test_slots_are_counted_and_a_full_trainer_refuses(trainer: Trainer) -> None:
    worker, training = trainer.worker, trainer.training
    training.hold(1)
    training.hold(2)
    assert worker.submit(_spec(1)) == 1
    assert worker.submit(_spec(2)) == 2

    assert worker.busy() == SLOTS
    assert sorted(worker.running_ids()) == [1, 2]
    assert trainer.count("molhpo_trainer_busy_slots") == SLOTS
    with pytest.raises(ResourceExhausted, match="all 2 slots of trainer w1 are busy"):
        worker.submit(_spec(3))
    with pytest.raises(AlreadyExists, match="trial 1 is running here already"):
        worker.submit(_spec(1))

    # A finished trial frees its slot, and the next trial takes it.
    training.let(1, 3)
    trainer.until(lambda: worker.busy() == 1, "trial 1 frees its slot")
    assert worker.running_ids() == [2]
    assert worker.submit(_spec(3)) == 2
    assert trainer.result(1).state == common_pb2.TRIAL_STATE_COMPLETE
    assert worker.busy_seconds() > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "gin2"}, "trial 0: unknown model 'gin2'"),
        ({"dataset": common_pb2.DatasetRef(name="nope")}, "trial 0: unknown dataset 'nope'"),
        ({"max_epochs": 0}, "max_epochs: is 0, but must be > 0"),
    ],
    ids=["unknown model", "unknown data set", "no epochs"],
)
def test_a_spec_that_cannot_run_is_rejected_without_taking_a_slot(
    trainer: Trainer, change: dict[str, object], message: str
) -> None:
    spec = _spec(1)
    for name, value in change.items():
        if isinstance(value, common_pb2.DatasetRef):
            spec.dataset.CopyFrom(value)
        else:
            setattr(spec, name, value)

    with pytest.raises(InvalidArgument, match=message):
        trainer.worker.submit(spec)
    assert trainer.worker.busy() == 0
    assert trainer.training.configs == []
    assert trainer.reports() == []


# ---- decisions ------------------------------------------------------------------------------


def test_a_prune_decision_stops_the_trial_before_its_next_epoch(trainer: Trainer) -> None:
    # The coordinator's answers, written before the trainer asks: it finds them at once.
    decisions.publish(trainer.client, trainer.keys, 1, 1, Decision.CONTINUE)
    decisions.publish(trainer.client, trainer.keys, 1, 2, Decision.PRUNE)
    trainer.worker.submit(_spec(1, max_epochs=5, decision_timeout_s=WAIT_S))
    trainer.worker.join(WAIT_S)

    assert trainer.training.trained(1) == 2
    assert trainer.steps(1) == [1, 2]
    result = trainer.result(1)
    assert (result.state, result.epochs_trained) == (common_pb2.TRIAL_STATE_PRUNED, 2)
    assert trainer.count("molhpo_trainer_trials_total", state="pruned") == 1


def test_a_decision_that_does_not_come_in_time_lets_the_trial_go_on(trainer: Trainer) -> None:
    trainer.worker.submit(_spec(1, max_epochs=3, decision_timeout_s=0.05))
    trainer.worker.join(WAIT_S)

    result = trainer.result(1)
    assert (result.state, result.epochs_trained) == (common_pb2.TRIAL_STATE_COMPLETE, 3)
    assert trainer.count("molhpo_trainer_decision_timeouts_total") == 3


def test_a_prune_that_came_too_late_still_stops_the_next_epoch(trainer: Trainer) -> None:
    # The decision for step 1 was missed, but the trial is marked pruned (a later step's).
    decisions.publish(trainer.client, trainer.keys, 1, 7, Decision.PRUNE)
    trainer.worker.submit(_spec(1, max_epochs=3, decision_timeout_s=0.05))
    trainer.worker.join(WAIT_S)

    result = trainer.result(1)
    assert (result.state, result.epochs_trained) == (common_pb2.TRIAL_STATE_PRUNED, 1)


# ---- cancel and drain -----------------------------------------------------------------------


def test_cancel_stops_the_trial_after_its_current_epoch(trainer: Trainer) -> None:
    worker, training = trainer.worker, trainer.training
    training.hold(1)
    worker.submit(_spec(1, max_epochs=5))
    training.let(1)
    training.wait_trained(1, 1)

    worker.cancel(1, "study stopped by request")
    training.let(1)  # the epoch under way ends; no other starts
    worker.join(WAIT_S)

    assert training.trained(1) == 2
    assert trainer.steps(1) == [1, 2]
    result = trainer.result(1)
    assert result.state == common_pb2.TRIAL_STATE_FAIL
    assert (result.failure_class, result.failure_reason) == (
        FailureClass.CANCELLED,
        "study stopped by request",
    )
    assert result.epochs_trained == 2
    assert worker.busy() == 0
    with pytest.raises(NotFound, match="trial 1 is not running on trainer w1"):
        worker.cancel(1, "again")


def test_drain_hands_every_running_trial_back(trainer: Trainer) -> None:
    worker, training = trainer.worker, trainer.training
    for trial_id in (1, 2):
        training.hold(trial_id)
        worker.submit(_spec(trial_id, max_epochs=5))
        training.let(trial_id)
    training.wait_trained(1, 1)
    training.wait_trained(2, 1)

    worker.cancel_all("trainer w1 is shutting down", FailureClass.DRAINED)
    training.let(1)
    training.let(2)
    worker.join(WAIT_S)

    assert worker.busy() == 0
    for trial_id in (1, 2):
        result = trainer.result(trial_id)
        assert result.state == common_pb2.TRIAL_STATE_FAIL
        assert (result.failure_class, result.failure_reason) == (
            FailureClass.DRAINED,
            "trainer w1 is shutting down",
        )
        assert result.epochs_trained == 2
    assert worker.close(1.0)  # nothing waits for Redis


# ---- failures -------------------------------------------------------------------------------


FAILURES: dict[str, tuple[BaseException, str, str]] = {
    "diverged": (DivergedError("loss is nan at epoch 2"), FailureClass.DIVERGED, "loss is nan"),
    "invalid config": (
        InvalidConfigError("hidden_channels must be even"),
        FailureClass.INVALID_CONFIG,
        "hidden_channels must be even",
    ),
    "classed out of memory": (
        TrainingError("CUDA out of memory", FailureClass.OUT_OF_MEMORY),
        FailureClass.OUT_OF_MEMORY,
        "CUDA out of memory",
    ),
    "torch out of memory": (
        torch.OutOfMemoryError("Tried to allocate 2.00 GiB"),
        FailureClass.OUT_OF_MEMORY,
        "out of memory on cpu: Tried to allocate 2.00 GiB",
    ),
    "host out of memory": (MemoryError(), FailureClass.OUT_OF_MEMORY, "out of memory on cpu"),
    "invalid argument": (
        InvalidArgument("unknown pooling 'max2'"),
        FailureClass.INVALID_CONFIG,
        "unknown pooling 'max2'",
    ),
    "bug": (KeyError("width"), FailureClass.ERROR, "KeyError: 'width'"),
}


@pytest.mark.parametrize(("error", "failure_class", "reason"), FAILURES.values(), ids=FAILURES)
def test_a_failing_trial_reports_its_failure_class_and_frees_its_slot(
    trainer: Trainer, error: BaseException, failure_class: str, reason: str
) -> None:
    trainer.training.raises[1] = (2, error)
    trainer.worker.submit(_spec(1, max_epochs=3))
    trainer.worker.join(WAIT_S)

    assert trainer.steps(1) == [1]
    result = trainer.result(1)
    assert result.state == common_pb2.TRIAL_STATE_FAIL
    assert result.failure_class == failure_class
    assert result.failure_reason.startswith(reason)
    assert result.seconds > 0
    assert trainer.worker.busy() == 0
    assert trainer.count("molhpo_trainer_trials_total", state="fail") == 1
    assert trainer.count("molhpo_trainer_busy_slots") == 0
