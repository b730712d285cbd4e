"""The trainer's Prometheus metrics (one registry per trainer instance)."""

from __future__ import annotations

import logging
import threading
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


def visible_devices(setting: str | None) -> list[str] | None:
    """The GPUs CUDA shows this process, from the value of ``CUDA_VISIBLE_DEVICES``, in CUDA's
    order (entry i is ``cuda:i``): NVML indices ("2") or UUIDs, whole or a unique prefix
    ("GPU-8932f937", "MIG-..."). None: the variable is unset, every GPU is visible.

    As CUDA reads it: entries are separated by commas, and the first entry that is neither
    (e.g. "-1" or "none") hides itself and everything after it.
    """
    if setting is None:
        return None
    out: list[str] = []
    for entry in setting.split(","):
        token = entry.strip()
        if token.isdigit():
            out.append(str(int(token)))
        elif token.startswith(("GPU-", "MIG-")):
            out.append(token)
        else:
            break
    return out


class GpuCollector(Collector):
    """GPU utilisation and memory through NVML (the nvidia-ml-py package), for the GPUs this
    process sees.

    The ``gpu`` label is the CUDA index trials use (``cuda:N``), mapped to the NVML device
    through ``CUDA_VISIBLE_DEVICES`` (``visible``: its value; indices and UUIDs both work). An
    integer entry is taken as NVML's index, which is CUDA's too unless CUDA_DEVICE_ORDER puts
    the fastest GPU first on a node of mixed GPUs.

    A scrape never fails because of a GPU: every NVML call is guarded, and a value NVML cannot
    give (utilisation of a MIG slice is "not supported"; a GPU that fell off the bus answers
    nothing) leaves that sample out and counts one error in
    ``molhpo_trainer_gpu_metric_errors_total{call}``, with a warning the first time a call
    fails. Without the package, a driver or a GPU it exports nothing, so CPU trainers carry no
    empty GPU series; when the trainer runs on CUDA (``expect_gpu``) that is a warning at
    start-up. ``nvml`` replaces the ``pynvml`` module (tests).
    """

    def __init__(
        self, visible: str | None = None, *, expect_gpu: bool = False, nvml: Any = None
    ) -> None:
        self._visible = visible_devices(visible)
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._nvml: Any = None
        say = log.warning if expect_gpu else log.debug
        if nvml is None:
            try:
                import pynvml
            except ImportError:
                say(
                    "GPU metrics are off: the nvidia-ml-py package is not installed; "
                    "install it (pip install nvidia-ml-py) to export GPU utilisation and memory"
                )
                return
            nvml = pynvml
        try:
            nvml.nvmlInit()
            self._count = int(nvml.nvmlDeviceGetCount())
        except Exception as err:  # NVML's errors (no driver, no GPU) are all one class
            say("GPU metrics are off: NVML did not start (%s)", err)
            return
        self._nvml = nvml

    @property
    def available(self) -> bool:
        """Whether any GPU is visible through NVML."""
        return self._nvml is not None and self._count > 0 and self._targets() != []

    def errors(self) -> dict[str, int]:
        """Failed NVML calls so far, by function name."""
        with self._lock:
            return dict(self._errors)

    def _targets(self) -> list[str]:
        """NVML selector (index or UUID) of each CUDA index, in CUDA order."""
        if self._visible is None:
            return [str(i) for i in range(self._count)]
        return self._visible

    def _call(self, name: str, *args: Any) -> Any:
        """``nvml.<name>(*args)``, or None after counting (and the first time logging) why it
        failed. Any exception counts: a scrape must not fail, whatever NVML raises."""
        try:
            return getattr(self._nvml, name)(*args)
        except Exception as err:
            with self._lock:
                self._errors[name] = self._errors.get(name, 0) + 1
                first = self._errors[name] == 1
            (log.warning if first else log.debug)("NVML %s failed: %s", name, err)
            return None

    def _handle(self, selector: str) -> Any:
        if selector.isdigit():
            return self._call("nvmlDeviceGetHandleByIndex", int(selector))
        if len(selector) >= 40:  # a whole UUID ("GPU-" and 36 characters, or a MIG one)
            return self._call("nvmlDeviceGetHandleByUUID", selector)
        for index in range(self._count):  # a prefix: CUDA accepts one that is unique
            handle = self._call("nvmlDeviceGetHandleByIndex", index)
            uuid = None if handle is None else self._call("nvmlDeviceGetUUID", handle)
            if isinstance(uuid, bytes):
                uuid = uuid.decode()
            if isinstance(uuid, str) and uuid.startswith(selector):
                return handle
        return None

    def collect(self) -> Iterator[Metric]:
        if self._nvml is None:
            return
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
        for cuda_index, selector in enumerate(self._targets()):
            label = [str(cuda_index)]
            handle = self._handle(selector)
            if handle is None:
                continue
            rates = self._call("nvmlDeviceGetUtilizationRates", handle)
            if rates is not None:
                util.add_metric(label, rates.gpu / 100.0)
            mem = self._call("nvmlDeviceGetMemoryInfo", handle)
            if mem is not None:
                used.add_metric(label, float(mem.used))
                total.add_metric(label, float(mem.total))
        errors = CounterMetricFamily(
            "molhpo_trainer_gpu_metric_errors",
            "NVML calls that failed during scrapes (e.g. not supported on a MIG slice, or a "
            "GPU lost), by call; the samples they were for are left out.",
            labels=["call"],
        )
        for name, count in sorted(self.errors().items()):
            errors.add_metric([name], count)
        yield util
        yield used
        yield total
        yield errors
