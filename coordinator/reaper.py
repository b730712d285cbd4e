"""The reaper: once a second, what the trainer pool learnt reaches the studies.

Trainers whose heartbeats stopped are forgotten and their trials dispatched again; trials a
trainer claims in its heartbeat (after a coordinator restart) are attached to their runners, and
those no trainer claimed within a lease run again; a trial whose lease ran out is lost, and a
trainer that loses several in a row is rested. The policy lives in
:class:`coordinator.membership.TrainerPool` and the runners; this loop only carries it out.
"""

from __future__ import annotations

import logging

from coordinator.lifecycle import StudyLifecycle
from coordinator.membership import TrainerRecord
from coordinator.study_runner import StudyRunner
from coordinator.wiring import Shared

log = logging.getLogger(__name__)

_PERIOD_S = 1.0


class Reaper:
    """Expires trainers and leases, claims trials back, and keeps the pool's gauges."""

    def __init__(self, shared: Shared, studies: StudyLifecycle) -> None:
        self.pool = shared.pool
        self.metrics = shared.metrics
        self._stop = shared.stop
        self._studies = studies

    def runners(self) -> list[StudyRunner]:
        """Every study this process manages."""
        return self._studies.runners()

    def run(self) -> None:
        """Reap every second until the coordinator stops."""
        while not self._stop.wait(_PERIOD_S):
            self.reap()

    def reap(self) -> None:
        """One round: lost trainers, claims, unclaimed trials, expired leases, gauges."""
        self._forget_silent_trainers()
        self._claim_back()
        self._expire_leases()
        self._count_slots()

    def _forget_silent_trainers(self) -> None:
        gone: list[TrainerRecord] = self.pool.expire()
        for rec in gone:
            log.warning(
                "trainer %s at %s stopped sending heartbeats; forgetting it",
                rec.trainer_id,
                rec.address,
            )
            self.metrics.trainers_lost.inc()
            for runner in self.runners():
                runner.on_trainer_lost(rec.trainer_id, rec.assigned)

    def _claim_back(self) -> None:
        for trainer_id, trial_id in self.pool.take_claimed():
            for r in self.runners():
                if r.attach(trainer_id, trial_id):
                    log.info("trial %d is still running on %s", trial_id, trainer_id)
        for trial_id in self.pool.take_unclaimed():
            for r in self.runners():
                r.unclaimed(trial_id)

    def _expire_leases(self) -> None:
        for trainer_id, trial_id in self.pool.expired_leases():
            self.metrics.lease_expiries.inc()
            log.warning("lease of trial %d on trainer %s expired", trial_id, trainer_id)
            if any(r.on_lease_expired(trainer_id, trial_id) for r in self.runners()) and (
                self.pool.note_loss(trainer_id)
            ):
                self.metrics.trainers_rested.inc()
                log.warning("trainer %s lost trials in a row; resting it", trainer_id)

    def _count_slots(self) -> None:
        snap = self.pool.snapshot()
        self.metrics.trainers_registered.set(len(snap))
        total = sum(r.slots for r in snap)
        busy = sum(len(r.assigned) for r in snap)
        self.metrics.slots.labels("busy").set(busy)
        self.metrics.slots.labels("free").set(max(total - busy, 0))
