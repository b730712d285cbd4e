"""The trainer's Prometheus metrics (one registry per trainer instance)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


DECISION_BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
)  # fmt: skip
"""Fine below 5 ms, the decision-latency goal, so its quantiles can be read off the buckets."""


class TrainerMetrics:
    """Collectors of one trainer; no per-trial labels."""

    def __init__(self, slots: int, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.epochs = Counter("molhpo_trainer_epochs", "Epochs trained.", registry=r)
        self.samples = Counter("molhpo_trainer_samples", "Training samples processed.", registry=r)
        self.epoch_seconds = Histogram(
            "molhpo_trainer_epoch_seconds",
            "Wall time of one epoch (train + validation).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.trials = Counter(
            "molhpo_trainer_trials", "Trials ended, by final state.", ["state"], registry=r
        )
        self.trial_seconds = Histogram(
            "molhpo_trainer_trial_seconds",
            "Wall time of a trial on this trainer.",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.slots = Gauge("molhpo_trainer_slots", "Trial slots of this trainer.", registry=r)
        self.slots.set(slots)
        self.busy_slots = Gauge("molhpo_trainer_busy_slots", "Slots running a trial.", registry=r)
        self.decision_wait_seconds = Histogram(
            "molhpo_trainer_decision_wait_seconds",
            "From writing an epoch report to reading its decision.",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.decision_timeouts = Counter(
            "molhpo_trainer_decision_timeouts",
            "Epochs whose decision did not come in time.",
            registry=r,
        )
        self.reports_buffered = Gauge(
            "molhpo_trainer_reports_buffered",
            "Reports waiting for Redis (it was unreachable when they were written).",
            registry=r,
        )
        self.report_errors = Counter(
            "molhpo_trainer_report_errors",
            "Reports that could not be written to Redis.",
            registry=r,
        )


class BusyCollector(Collector):
    """Slot-seconds spent on trials, read at scrape time.

    ``rate(molhpo_trainer_busy_seconds_total[5m]) / molhpo_trainer_slots`` is the trainer's
    utilisation (busy ratio) between 0 and 1.
    """

    def __init__(self, busy_seconds: Callable[[], float]) -> None:
        self._busy_seconds = busy_seconds

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "molhpo_trainer_busy_seconds",
            "Slot-seconds spent running trials.",
            value=self._busy_seconds(),
        )


class GpuCollector(Collector):
    """GPU utilisation and memory through NVML, when the nvidia-ml-py package and a GPU exist.

    Exports nothing on machines without either, so CPU trainers carry no empty GPU series.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._count = int(pynvml.nvmlDeviceGetCount())
            self._nvml = pynvml
        except Exception as err:  # no package, no driver or no GPU: nothing to export
            log.debug("NVML unavailable: %s", err)
            self._count = 0

    @property
    def available(self) -> bool:
        """Whether any GPU is visible through NVML."""
        return self._nvml is not None and self._count > 0

    def collect(self) -> Iterator[Metric]:
        if not self.available:
            return
        nvml = self._nvml
        util = GaugeMetricFamily(
            "molhpo_trainer_gpu_utilization_ratio",
            "GPU busy share over the last sample period (0-1).",
            labels=["gpu"],
        )
        used = GaugeMetricFamily(
            "molhpo_trainer_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "molhpo_trainer_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu"]
        )
        for i in range(self._count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            rates = nvml.nvmlDeviceGetUtilizationRates(h)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            util.add_metric([str(i)], rates.gpu / 100.0)
            used.add_metric([str(i)], float(mem.used))
            total.add_metric([str(i)], float(mem.total))
        yield util
        yield used
        yield total
