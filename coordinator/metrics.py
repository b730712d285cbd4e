"""The coordinator's Prometheus metrics (one registry per coordinator instance)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

WAIT_REASONS = ("no_trainers", "no_capable_trainer", "slots_busy", "fair_share")
"""Why a study waits, as metric label values (coordinator.membership.WaitReason, lower case)."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class CoordinatorMetrics:
    """Collectors of one coordinator; label values are low-cardinality (no per-trial labels)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.trials_finished = Counter(
            "molhpo_coordinator_trials_finished",
            "Trials that reached a final state.",
            ["state"],
            registry=r,
        )
        self.trials_started = Counter(
            "molhpo_coordinator_trials_started", "Trials dispatched to a trainer.", registry=r
        )
        self.studies_running = Gauge(
            "molhpo_coordinator_studies_running",
            "Studies dispatching or waiting on trials.",
            registry=r,
        )
        self.trainers_registered = Gauge(
            "molhpo_coordinator_trainers_registered", "Trainers in the pool.", registry=r
        )
        self.slots = Gauge(
            "molhpo_coordinator_trainer_slots", "Trainer slots in the pool.", ["state"], registry=r
        )
        self.retries = Counter(
            "molhpo_coordinator_trial_retries",
            "Trials dispatched again after their trainer was lost, by failure class.",
            ["failure_class"],
            registry=r,
        )
        self.lease_expiries = Counter(
            "molhpo_coordinator_lease_expiries",
            "Trial leases that ran out (trainer stopped listing the trial).",
            registry=r,
        )
        self.trainers_rested = Counter(
            "molhpo_coordinator_trainers_rested",
            "Times a trainer was taken out of rotation after losing trials in a row.",
            registry=r,
        )
        self.trainers_lost = Counter(
            "molhpo_coordinator_trainers_lost",
            "Trainers forgotten after missed heartbeats.",
            registry=r,
        )
        self.dispatch_seconds = Histogram(
            "molhpo_coordinator_dispatch_seconds",
            "RunTrial call latency.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ask_seconds = Histogram(
            "molhpo_coordinator_ask_seconds",
            "Sampler latency: ask and suggest one trial.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_seconds = Histogram(
            "molhpo_coordinator_decision_seconds",
            "From reading an epoch report to its decision written to Redis.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reports = Counter(
            "molhpo_coordinator_reports", "Reports read from the stream.", ["outcome"], registry=r
        )
        self.store_stalled_seconds = Gauge(
            "molhpo_coordinator_store_stalled_seconds",
            "How long the study store's writer has been waiting for the database (0: it is "
            "not); reports stay unacknowledged meanwhile.",
            registry=r,
        )
        self.decisions = Counter(
            "molhpo_coordinator_decisions", "Pruning decisions made.", ["decision"], registry=r
        )


class StudyView(Protocol):
    """What the study collector reads of a study runner."""

    @property
    def finished(self) -> bool: ...

    finished_counts: dict[str, int]
    best_value: float | None

    def queue_depth(self) -> int: ...

    def running_trials(self) -> Sequence[object]: ...

    @property
    def spec(self) -> object: ...

    @property
    def waiting(self) -> object: ...

    @property
    def waiting_since(self) -> float: ...


class StudyCollector(Collector):
    """Per-scrape figures of the studies this coordinator manages.

    Labels: ``state`` (a handful of values) and ``study`` (one per study, which operators
    name and delete; never per trial).
    """

    def __init__(self, runners: Callable[[], Sequence[StudyView]]) -> None:
        self._runners = runners

    def collect(self) -> Iterator[Metric]:
        runners = self._runners()
        trials = GaugeMetricFamily(
            "molhpo_coordinator_study_trials",
            "Trials of the studies this coordinator manages, by state.",
            labels=["state"],
        )
        counts = {"running": 0, "complete": 0, "pruned": 0, "fail": 0}
        queue = 0
        best = GaugeMetricFamily(
            "molhpo_coordinator_best_value",
            "Best objective value of each study so far.",
            labels=["study"],
        )
        waiting_by_reason = dict.fromkeys(WAIT_REASONS, 0)
        waited = GaugeMetricFamily(
            "molhpo_coordinator_study_waiting_seconds",
            "Seconds a running study has had trials to dispatch and no slot, by reason "
            "(no_trainers, no_capable_trainer, slots_busy, fair_share); absent when it waits "
            "for nothing.",
            labels=["study", "reason"],
        )
        now = time.monotonic()
        for r in runners:
            why = getattr(r.waiting, "reason", None)
            if why is not None and not r.finished:
                reason = why.name.lower()
                waiting_by_reason[reason] = waiting_by_reason.get(reason, 0) + 1
                waited.add_metric([str(getattr(r.spec, "name", "")), reason], now - r.waiting_since)
            counts["running"] += len(r.running_trials())
            for k, v in r.finished_counts.items():
                counts[k] += v
            queue += r.queue_depth()
            if r.best_value is not None:
                best.add_metric([str(getattr(r.spec, "name", ""))], r.best_value)
        for state, n in counts.items():
            trials.add_metric([state], n)
        yield trials
        yield GaugeMetricFamily(
            "molhpo_coordinator_queue_depth",
            "Trials studies would dispatch now if trainer slots were free.",
            value=queue,
        )
        yield best
        by_reason = GaugeMetricFamily(
            "molhpo_coordinator_studies_waiting",
            "Running studies with trials to dispatch and no slot, by reason.",
            labels=["reason"],
        )
        for reason, n in waiting_by_reason.items():
            by_reason.add_metric([reason], n)
        yield by_reason
        yield waited
