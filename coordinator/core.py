"""The coordinator's composition root: the one object the gRPC servicers call.

:class:`Coordinator` builds the parts along the path of a trial and forwards each call to the
part that owns it:

- :mod:`coordinator.lifecycle`: studies validated, started, resumed, stopped, deleted, watched;
  their status;
- :mod:`coordinator.workflows`: refine, evaluate and race, on top of ``start_study``;
- :mod:`coordinator.results`: a study's best trials, report, evaluation and predictions;
- :mod:`coordinator.report_consumer`: trainers' reports become decisions and trial ends;
- :mod:`coordinator.reaper`: silent trainers, expired leases, trials claimed back.

None of them sees a proto except the TrialReports read from Redis and the TrialSpecs handed to
trainers.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import redis

from coordinator.datasets import DatasetSummary
from coordinator.evaluation import Evaluation, RaceRow
from coordinator.events import Event
from coordinator.lifecycle import StudyLifecycle, StudyStatus
from coordinator.membership import TrainerPool
from coordinator.metrics import CoordinatorMetrics, StudyCollector
from coordinator.reaper import Reaper
from coordinator.report_consumer import LostWrites, ReportConsumer
from coordinator.results import StudyReport, StudyResults
from coordinator.spec import ComponentSpec, StudySpec
from coordinator.study_runner import StudyRunner
from coordinator.trainer_client import TrainerClient
from coordinator.wiring import CoordinatorOptions, Shared
from coordinator.workflows import Workflows
from storage.keys import RedisKeys
from storage.owned_cache import OwnedStudyStorage

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Coordinator:
    """Owns the studies of this process and the loops that serve them."""

    def __init__(
        self,
        *,
        storage: optuna.storages.BaseStorage,
        redis_client: redis.Redis,
        keys: RedisKeys,
        pool: TrainerPool,
        trainers: TrainerClient,
        metrics: CoordinatorMetrics,
        options: CoordinatorOptions | None = None,
    ) -> None:
        self.options = options or CoordinatorOptions()
        lost_writes: LostWrites = collections.deque()

        # This process is the only writer of the studies it runs: their trials stay in memory.
        # A write the store refuses for good is told on the store's writer thread, which must
        # not wait for a runner: it is handed to the report consumer.
        def write_lost(trial_id: int, reason: str) -> None:
            lost_writes.append((trial_id, reason))

        if isinstance(storage, optuna.storages.RDBStorage):
            storage = OwnedStudyStorage(storage, on_write_lost=write_lost)
        shared = Shared(storage, redis_client, keys, pool, trainers, metrics, threading.Event())
        self.storage = storage
        self.redis = redis_client
        self.keys = keys
        self.pool = pool
        self.trainers = trainers
        self.metrics = metrics
        self._shared = shared
        self._stop = shared.stop
        self.studies = StudyLifecycle(shared, self.options, self._new_runner)
        self.workflows = Workflows(self.studies, shared.stop)
        self.results = StudyResults(self.studies, pool, trainers)
        self.consumer = ReportConsumer(shared, self.studies, lost_writes)
        self.reaper = Reaper(shared, self.studies)
        metrics.registry.register(StudyCollector(self.runners))
        if isinstance(self.storage, OwnedStudyStorage):
            metrics.store_stalled_seconds.set_function(self.storage.stalled_s)
        self._threads = [
            threading.Thread(target=self.consumer.run, name="reports", daemon=True),
            threading.Thread(target=self.reaper.run, name="reaper", daemon=True),
        ]

    def _new_runner(self, spec: StudySpec, study: optuna.Study, n_existing: int) -> StudyRunner:
        return StudyRunner(spec, study, self._shared, self.options, n_existing=n_existing)

    # ---- the process -----------------------------------------------------------------------

    def start(self) -> None:
        """Take back unfinished studies, then start the report consumer and the reaper."""
        self.consumer.ensure_group()
        self.studies.resume_unfinished()
        for t in self._threads:
            t.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the loops (studies stay in the store as they are)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)
        if isinstance(self.storage, OwnedStudyStorage):
            self.storage.close(timeout_s)  # what is queued is stored
        self.trainers.close()

    # ---- studies: coordinator.lifecycle ----------------------------------------------------

    def validate(self, spec: StudySpec) -> DatasetSummary:
        """See :meth:`StudyLifecycle.validate`."""
        return self.studies.validate(spec)

    def start_study(
        self,
        spec: StudySpec,
        *,
        system_attrs: Mapping[str, Any] | None = None,
        enqueue: Sequence[tuple[Mapping[str, object], Mapping[str, object]]] = (),
    ) -> StudyStatus:
        """See :meth:`StudyLifecycle.start_study`."""
        return self.studies.start_study(spec, system_attrs=system_attrs, enqueue=enqueue)

    def resume_study(self, name: str, n_trials: int) -> StudyStatus:
        """See :meth:`StudyLifecycle.resume_study`."""
        return self.studies.resume_study(name, n_trials)

    def stop_study(self, name: str, cancel_running: bool) -> StudyStatus:
        """See :meth:`StudyLifecycle.stop_study`."""
        return self.studies.stop_study(name, cancel_running)

    def delete_study(self, name: str) -> None:
        """See :meth:`StudyLifecycle.delete_study`."""
        self.studies.delete_study(name)

    def status(self, name: str) -> StudyStatus:
        """See :meth:`StudyLifecycle.status`."""
        return self.studies.status(name)

    def list_studies(self) -> list[StudyStatus]:
        """See :meth:`StudyLifecycle.list_studies`."""
        return self.studies.list_studies()

    def watch(self, name: str, after: int, timeout_s: float) -> tuple[list[Event], bool]:
        """See :meth:`StudyLifecycle.watch`."""
        return self.studies.watch(name, after, timeout_s)

    def spec_of(self, name: str) -> StudySpec:
        """See :meth:`StudyLifecycle.spec_of`."""
        return self.studies.spec_of(name)

    def runners(self) -> list[StudyRunner]:
        """Every study this process manages."""
        return self.studies.runners()

    def runner(self, name: str) -> StudyRunner | None:
        """The runner of a study this process manages."""
        return self.studies.runner(name)

    # ---- studies made from studies: coordinator.workflows ----------------------------------

    def refine_study(self, parent: str, name: str, percent: float, n_trials: int) -> StudyStatus:
        """See :meth:`Workflows.refine_study`."""
        return self.workflows.refine_study(parent, name, percent, n_trials)

    def evaluate_study(
        self,
        name: str,
        *,
        top_k: int,
        seeds: int,
        include_default: bool,
        max_epochs: int,
        evaluation_name: str,
    ) -> StudyStatus:
        """See :meth:`Workflows.evaluate_study`."""
        return self.workflows.evaluate_study(
            name,
            top_k=top_k,
            seeds=seeds,
            include_default=include_default,
            max_epochs=max_epochs,
            evaluation_name=evaluation_name,
        )

    def start_race(
        self,
        name: str,
        base: StudySpec,
        entries: Sequence[tuple[str, ComponentSpec, ComponentSpec]],
        concurrent: bool,
        target: float,
    ) -> None:
        """See :meth:`Workflows.start_race`."""
        self.workflows.start_race(name, base, entries, concurrent, target)

    def race(self, name: str) -> tuple[list[RaceRow], float | None, bool]:
        """See :meth:`Workflows.race`."""
        return self.workflows.race(name)

    # ---- what studies give back: coordinator.results ---------------------------------------

    def evaluation(self, name: str) -> Evaluation | None:
        """See :meth:`StudyResults.evaluation`."""
        return self.results.evaluation(name)

    def report(self, name: str) -> StudyReport:
        """See :meth:`StudyResults.report`."""
        return self.results.report(name)

    def predict(
        self, study: str, smiles: Sequence[str], top_k: int
    ) -> tuple[list[float], list[list[float]], list[int], str]:
        """See :meth:`StudyResults.predict`."""
        return self.results.predict(study, smiles, top_k)
