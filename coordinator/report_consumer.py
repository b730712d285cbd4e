"""The report consumer: epoch reports become pruning decisions, results end trials.

Trainers put their reports into one Redis stream; this coordinator reads it through a consumer
group, always as the same consumer, so after a restart it first reads again what it had been
given and not acknowledged. A batch is acknowledged only once the store writes it caused are
stored, and a batch that fails is handled again as a whole: Redis delivers at least once, and a
repeated report is harmless (reports are idempotent per trial and step).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable

import optuna
import redis

from coordinator.lifecycle import StudyLifecycle
from coordinator.study_runner import StudyRunner
from coordinator.wiring import Shared
from molhpo.contract.enums import FailureClass
from storage import decisions
from storage.decisions import Decision
from storage.owned_cache import Hold, OwnedStudyStorage
from storage.reports import ReportReader

log = logging.getLogger(__name__)

# Decisions published per Redis round trip when a burst of epoch reports arrives.
_PUBLISH_EVERY = 16

LostWrites = collections.deque[tuple[int, str]]
"""Trials whose write the store refused for good (recorded there as FAIL): (trial id, reason),
told by the store's writer thread; the report consumer ends them in their runners."""


def _is_epoch(report: object) -> bool:
    from molhpo.v1 import common_pb2

    return isinstance(report, common_pb2.TrialReport) and report.WhichOneof("body") == "epoch"


class ReportConsumer:
    """Reads the report stream and hands each report to the runner of its study."""

    def __init__(self, shared: Shared, studies: StudyLifecycle, lost_writes: LostWrites) -> None:
        self.storage = shared.storage
        self.redis = shared.redis
        self.keys = shared.keys
        self.pool = shared.pool
        self.metrics = shared.metrics
        self._stop = shared.stop
        self._studies = studies
        self._lost_writes = lost_writes
        # One coordinator per key prefix, always the same consumer: after a restart it reads
        # first the reports it had been given and not acknowledged.
        self._reader = ReportReader(shared.redis, shared.keys, "coordinator")

    def ensure_group(self) -> None:
        """Create the report stream and its consumer group if they do not exist yet."""
        self._reader.ensure_group()

    def runner(self, name: str) -> StudyRunner | None:
        """The runner of a study this process manages."""
        return self._studies.runner(name)

    def runners(self) -> list[StudyRunner]:
        """Every study this process manages."""
        return self._studies.runners()

    def run(self) -> None:
        """Read, handle and acknowledge reports until the coordinator stops."""
        backoff = 0.1
        while not self._stop.is_set():
            self._end_lost_trials()
            try:
                entries = self._reader.read(count=256, block_ms=200)
            except redis.RedisError as err:
                log.warning("report stream unreadable (%s); retrying in %.1fs", err, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                self.handle_batch([entry.report for entry in entries])
            except Exception as err:  # never acknowledged: read again and handled again
                if isinstance(err, redis.RedisError | optuna.exceptions.StorageInternalError):
                    log.warning(
                        "could not handle %d reports (%s); again in %.1fs",
                        len(entries),
                        err,
                        backoff,
                    )
                else:
                    log.exception(
                        "could not handle %d reports; again in %.1fs", len(entries), backoff
                    )
                self._reader.rewind()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            done = [entry.entry_id for entry in entries]
            if isinstance(self.storage, OwnedStudyStorage):
                # Acknowledged once the writes they caused are stored.
                self.storage.after_writes(functools.partial(self._ack, done))
                continue
            self._ack(done)

    def _ack(self, done: list[str]) -> None:
        if done:
            try:
                self._reader.ack(done)
            except redis.RedisError as err:
                # Unacknowledged entries come back; handling them again is harmless.
                log.warning("could not acknowledge %d reports: %s", len(done), err)

    def _end_lost_trials(self) -> None:
        """Trials the store holds as failed for a refused write stop running here too."""
        while self._lost_writes:
            trial_id, reason = self._lost_writes.popleft()
            if not any(r.on_store_failure(trial_id, reason) for r in self.runners()):
                log.warning(
                    "trial id %d failed in the store (%s); no study runs it", trial_id, reason
                )

    def handle_batch(self, reports: list[object]) -> None:
        """Handle a batch of reports: first every epoch report, in order, its decision published
        with a few others in one round trip; then the trials' results. A trial's result always
        follows its epochs in the stream, so its epochs are recorded before it ends.

        The store writes go through the store's writer thread, in the order they were made;
        the writes an epoch's decision caused are queued only once Redis took the decision (a
        trainer never waits on a decision the store has and Redis lacks). When Redis fails, the
        writes still held are dropped and undone, and the error ends the batch: nothing of it
        is acknowledged, and it is handled afresh."""
        pending: list[tuple[int, int, Decision]] = []

        def publish(hold: Hold | None) -> None:
            decisions.publish_many(self.redis, self.keys, pending)
            pending.clear()
            if hold is not None:
                hold.release()

        deferring = (
            self.storage.deferring()
            if isinstance(self.storage, OwnedStudyStorage)
            else contextlib.nullcontext()
        )
        holding: contextlib.AbstractContextManager[Hold | None] = (
            self.storage.holding()
            if isinstance(self.storage, OwnedStudyStorage)
            else contextlib.nullcontext(None)
        )
        epochs = [r for r in reports if _is_epoch(r)]
        others = [r for r in reports if not _is_epoch(r)]
        with deferring:
            with holding as hold:
                for report in epochs:
                    self._handle(report, lambda t, s, d: pending.append((t, s, d)))
                    if len(pending) >= _PUBLISH_EVERY:
                        publish(hold)
                publish(hold)
            for report in others:
                self._handle(report)

    def _handle(
        self, report: object, publish: Callable[[int, int, Decision], None] | None = None
    ) -> None:
        from molhpo.v1 import common_pb2

        if not isinstance(report, common_pb2.TrialReport):
            self.metrics.reports.labels("undecodable").inc()
            return
        runner = self.runner(report.study_name)
        if runner is None:
            self.metrics.reports.labels("unknown_study").inc()
            return
        body = report.WhichOneof("body")
        try:
            if body == "epoch":
                t0 = time.perf_counter()
                decision = runner.on_epoch(report, publish)
                if decision is None:
                    self.metrics.reports.labels("stale").inc()
                    return
                self.metrics.decision_seconds.observe(time.perf_counter() - t0)
                self.metrics.decisions.labels(decision.value).inc()
                self.metrics.reports.labels("epoch").inc()
            elif body == "result":
                ok = runner.on_result(report)
                self.metrics.reports.labels("result" if ok else "stale").inc()
                if ok and report.result.failure_class not in (
                    FailureClass.TRAINER_LOST,
                    FailureClass.DRAINED,
                ):
                    self.pool.note_success(report.trainer_id)
            else:
                self.metrics.reports.labels("undecodable").inc()
        except (redis.RedisError, optuna.exceptions.StorageInternalError):
            raise  # Redis or the store is away: the whole batch is handled again
        except optuna.exceptions.UpdateFinishedTrialError as err:
            # The trial ended meanwhile by another path (its lease, a refused store write).
            log.info("report of trial %d after its end: %s", report.trial_number, err)
            self.metrics.reports.labels("stale").inc()
        except Exception:  # one bad report must not stop the consumer; it is logged and counted
            log.exception("could not handle a report of trial %d", report.trial_number)
            self.metrics.reports.labels("error").inc()
