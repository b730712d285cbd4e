"""Runs trials in the background, one thread per slot, and talks to Redis for them.

After each epoch the worker appends an EpochReport to the report stream and waits (bounded)
for the coordinator's decision on that very step, so a pruned trial stops before training
another epoch. It never decides anything itself.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import torch

from molhpo.contract import catalogue
from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import (
    AlreadyExists,
    InvalidArgument,
    MolhpoError,
    NotFound,
    ResourceExhausted,
    TrainingError,
)
from molhpo.v1 import common_pb2
from storage import decisions, reports
from storage.artifacts import ArtifactStore, ResumeFile, TopKCheckpoints
from storage.decisions import Decision
from storage.keys import RedisKeys
from trainer.checkpoint import trial_stores
from trainer.convert import config_from_spec, epoch_to_proto, result_to_proto
from trainer.metrics import TrainerMetrics
from trainer.outbox import Outbox
from trainer.training.loop import (
    EpochResult,
    TrainResult,
    release_cached_memory,
    train,
)

log = logging.getLogger(__name__)


@dataclass
class _Running:
    spec: common_pb2.TrialSpec
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    cancel_class: str = FailureClass.CANCELLED
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    # the coordinator decided to prune it (its last epoch report's answer)
    pruned: bool = False


class TrialWorker:
    """A trainer's slots and the trials in them, all trained on ``device`` (the trainer's
    resolved device, e.g. "cpu" or "cuda:0")."""

    def __init__(
        self,
        trainer_id: str,
        slots: int,
        redis_client: redis.Redis,
        keys: RedisKeys,
        metrics: TrainerMetrics,
        *,
        dataset_roots: tuple[str, ...] = (),
        artifacts: ArtifactStore | None = None,
        device: str,
    ) -> None:
        self.device = device
        self._artifacts = artifacts
        self._outbox = Outbox(
            lambda rep: reports.publish(self._redis, self._keys, rep),
            on_change=metrics.reports_buffered.set,
        )
        self.trainer_id = trainer_id
        self._dataset_roots = dataset_roots
        self.slots = slots
        self._redis = redis_client
        self._keys = keys
        self._metrics = metrics
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._busy_done_s = 0.0

    def busy(self) -> int:
        """Slots in use."""
        with self._lock:
            return len(self._running)

    def busy_seconds(self) -> float:
        """Slot-seconds spent running trials since the worker started (ended and running)."""
        now = time.monotonic()
        with self._lock:
            return self._busy_done_s + sum(now - r.started for r in self._running.values())

    def running_ids(self) -> list[int]:
        """Trial ids running now."""
        with self._lock:
            return list(self._running)

    def submit(self, spec: common_pb2.TrialSpec) -> int:
        """Start a trial in a free slot; returns the busy slots. Raises ResourceExhausted when
        every slot is busy and InvalidArgument for a spec that cannot run."""
        try:
            catalogue.get_model(spec.model)
            if not spec.dataset.path:
                catalogue.get_dataset(spec.dataset.name)
            config_from_spec(spec, self._dataset_roots, self.device)
        except InvalidArgument as err:
            raise InvalidArgument(f"trial {spec.trial_number}: {err}") from None
        if spec.max_epochs <= 0:
            raise InvalidArgument(f"max_epochs: is {spec.max_epochs}, but must be > 0")
        with self._lock:
            if spec.trial_id in self._running:
                raise AlreadyExists(f"trial {spec.trial_id} is running here already")
            if len(self._running) >= self.slots:
                raise ResourceExhausted(
                    f"all {self.slots} slots of trainer {self.trainer_id} are busy"
                )
            run = _Running(spec)
            run.thread = threading.Thread(
                target=self._run, args=(run,), name=f"trial-{spec.trial_id}", daemon=True
            )
            self._running[spec.trial_id] = run
            busy = len(self._running)
        self._metrics.busy_slots.set(busy)
        run.thread.start()
        return busy

    def cancel(self, trial_id: int, reason: str) -> None:
        """Ask a running trial to stop after its current epoch."""
        with self._lock:
            run = self._running.get(trial_id)
        if run is None:
            raise NotFound(f"trial {trial_id} is not running on trainer {self.trainer_id}")
        run.cancel_reason = reason or "cancelled"
        run.cancel.set()

    def cancel_all(self, reason: str, failure_class: str = FailureClass.CANCELLED) -> None:
        """Ask every running trial to stop (``drained``: hand it back to be resumed)."""
        with self._lock:
            runs = list(self._running.values())
        for run in runs:
            run.cancel_reason = reason
            run.cancel_class = failure_class
            run.cancel.set()

    def join(self, timeout_s: float) -> None:
        """Wait for running trials to end, at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = [r.thread for r in self._running.values() if r.thread is not None]
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0.0))

    def reports_waiting(self) -> int:
        """Reports buffered while Redis is away."""
        return self._outbox.pending()

    def close(self, timeout_s: float) -> bool:
        """Send the reports that wait for Redis, for at most ``timeout_s`` (on shutdown, after
        ``join``); True when every one went out. A result that could not is logged by trial:
        the coordinator runs that trial again once its lease runs out."""
        left = self._outbox.close(timeout_s)
        for rep in left:
            if rep.WhichOneof("body") == "result":
                log.error(
                    "the result of trial %d (study %s, attempt %d) could not reach Redis "
                    "before shutdown; the coordinator runs it again when its lease runs out",
                    rep.trial_number,
                    rep.study_name,
                    rep.attempt,
                )
        epochs = sum(1 for rep in left if rep.WhichOneof("body") == "epoch")
        if epochs:
            log.warning("%d epoch reports could not reach Redis before shutdown", epochs)
        return not left

    # ---- one trial -------------------------------------------------------------------------

    def _run(self, run: _Running) -> None:
        t0 = time.perf_counter()
        body = self._outcome(run)
        if body.state == common_pb2.TRIAL_STATE_FAIL:
            release_cached_memory(self.device)
        body.seconds = body.seconds or (time.perf_counter() - t0)
        self._metrics.trial_seconds.observe(time.perf_counter() - t0)
        self._metrics.trials.labels(
            common_pb2.TrialState.Name(body.state).removeprefix("TRIAL_STATE_").lower()
        ).inc()
        self._publish_result(run.spec, body)
        with self._lock:
            self._running.pop(run.spec.trial_id, None)
            self._busy_done_s += time.monotonic() - run.started
            busy = len(self._running)
        self._metrics.busy_slots.set(busy)

    def _outcome(self, run: _Running) -> common_pb2.TrialResult:
        """Train the trial: its result, or its failure with the failure's class."""
        try:
            return self._train(run)
        except TrainingError as err:
            return _failure(err.failure_class, str(err))
        except MolhpoError as err:
            return _failure(FailureClass.INVALID_CONFIG, str(err))
        except (torch.OutOfMemoryError, MemoryError) as err:  # where train() did not class it
            return _failure(FailureClass.OUT_OF_MEMORY, f"out of memory on {self.device}: {err}")
        except Exception as err:  # a bug: recorded, never silently lost
            log.exception("trial %d failed", run.spec.trial_number)
            return _failure(FailureClass.ERROR, f"{type(err).__name__}: {err}")

    def _train(self, run: _Running) -> common_pb2.TrialResult:
        spec = run.spec
        config = config_from_spec(spec, self._dataset_roots, self.device)
        sink, resume = self._stores(spec, config.objective_direction)
        result = train(config, functools.partial(self._on_epoch, run), sink, resume)
        if resume is not None and not run.cancel.is_set():
            resume.clear()
        if run.cancel.is_set() and not run.pruned:
            return common_pb2.TrialResult(
                state=common_pb2.TRIAL_STATE_FAIL,
                epochs_trained=result.epochs_trained,
                failure_class=run.cancel_class,
                failure_reason=run.cancel_reason,
                seconds=result.seconds,
            )
        best = sink.best_path if sink is not None else None
        body = result_to_proto(
            result, run.pruned, str(best) if best else "", spec.return_test_predictions
        )
        if best is not None and result.test_targets:
            _write_predictions(best.parent / "test_predictions.json", result)
        return body

    def _on_epoch(self, run: _Running, ep: EpochResult) -> bool:
        """Report the epoch and wait for the coordinator's decision on it; False: stop (pruned
        or cancelled)."""
        spec = run.spec
        self._metrics.epochs.inc()
        self._metrics.samples.inc(ep.samples)
        self._metrics.epoch_seconds.observe(ep.seconds)
        self._publish(spec, epoch=epoch_to_proto(ep))
        if spec.decision_timeout_seconds > 0:
            decision = self._await_decision(spec, ep.step)
            if decision is Decision.PRUNE:
                run.pruned = True
                return False
        return not run.cancel.is_set()

    def _stores(
        self, spec: common_pb2.TrialSpec, direction: str
    ) -> tuple[TopKCheckpoints | None, ResumeFile | None]:
        """Where the trial's checkpoints and resume state go; none without an artifact store."""
        if self._artifacts is None:
            return None, None
        return trial_stores(
            self._artifacts,
            spec.study_name,
            spec.trial_number,
            attempt=spec.attempt,
            every=spec.checkpoint_every,
            keep=spec.keep_checkpoints,
            direction=direction,
        )

    def _report(self, spec: common_pb2.TrialSpec) -> common_pb2.TrialReport:
        return common_pb2.TrialReport(
            study_name=spec.study_name,
            trial_id=spec.trial_id,
            trial_number=spec.trial_number,
            attempt=spec.attempt,
            trainer_id=self.trainer_id,
        )

    def _publish(self, spec: common_pb2.TrialSpec, epoch: common_pb2.EpochReport) -> None:
        rep = self._report(spec)
        rep.epoch.CopyFrom(epoch)
        if not self._outbox.put(rep):
            self._metrics.report_errors.inc()

    def _publish_result(self, spec: common_pb2.TrialSpec, body: common_pb2.TrialResult) -> None:
        rep = self._report(spec)
        rep.result.CopyFrom(body)
        if not self._outbox.put(rep):
            self._metrics.report_errors.inc()
            log.warning("result of trial %d waits for Redis", spec.trial_number)

    def _await_decision(self, spec: common_pb2.TrialSpec, step: int) -> Decision | None:
        t0 = time.perf_counter()
        try:
            decision = decisions.wait(
                self._redis, self._keys, spec.trial_id, step, spec.decision_timeout_seconds
            )
            if decision is None:
                self._metrics.decision_timeouts.inc()
                # A decision that came too late still counts before the next epoch.
                if decisions.is_pruned(self._redis, self._keys, spec.trial_id):
                    return Decision.PRUNE
            else:
                self._metrics.decision_wait_seconds.observe(time.perf_counter() - t0)
            return decision
        except redis.RedisError as err:
            log.warning("no decision for trial %d step %d: %s", spec.trial_number, step, err)
            return None


def _failure(failure_class: str, reason: str) -> common_pb2.TrialResult:
    return common_pb2.TrialResult(
        state=common_pb2.TRIAL_STATE_FAIL, failure_class=failure_class, failure_reason=reason
    )


def _write_predictions(path: Path, result: TrainResult) -> None:
    """The best model's test-set predictions beside its checkpoint, for reports."""
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"y_true": list(result.test_targets), "y_pred": list(result.test_predictions)}
            )
        )
        os.replace(tmp, path)
    except OSError as err:
        log.warning("could not write %s: %s", path, err)
