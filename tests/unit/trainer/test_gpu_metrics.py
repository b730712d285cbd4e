"""GPU metrics through a fake NVML module: CUDA_VISIBLE_DEVICES mapping, guarded calls, and
the start-up warning when the package is missing."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from trainer.metrics import GpuCollector, visible_devices


class NVMLError(Exception):
    """What pynvml raises."""


@dataclass
class _Gpu:
    uuid: str
    busy_percent: int
    used: int
    total: int = 80 * 2**30
    utilisation_supported: bool = True
    lost: bool = False


@dataclass
class _Rates:
    gpu: int
    memory: int = 0


@dataclass
class _Memory:
    used: int
    total: int
    free: int = 0


class FakeNvml:
    """The pynvml calls GpuCollector makes, over a list of fake GPUs in NVML order."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[_Gpu], init_fails: bool = False) -> None:
        self.gpus = gpus
        self.init_fails = init_fails

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Gpu:
        if index >= len(self.gpus):
            raise NVMLError("Invalid Argument")
        gpu = self.gpus[index]
        if gpu.lost:
            raise NVMLError("GPU is lost")
        return gpu

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Gpu:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError("Not Found")

    def nvmlDeviceGetUUID(self, handle: _Gpu) -> bytes:
        return handle.uuid.encode()  # older pynvml returns bytes

    def nvmlDeviceGetUtilizationRates(self, handle: _Gpu) -> _Rates:
        if handle.lost:
            raise NVMLError("GPU is lost")
        if not handle.utilisation_supported:
            raise NVMLError("Not Supported")
        return _Rates(handle.busy_percent)

    def nvmlDeviceGetMemoryInfo(self, handle: _Gpu) -> _Memory:
        if handle.lost:
            raise NVMLError("GPU is lost")
        return _Memory(handle.used, handle.total)


UUID_A = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
UUID_B = "GPU-1d8f5a3b-5c0e-4b1c-9f8e-0a2b3c4d5e6f"


def _two_gpus() -> FakeNvml:
    return FakeNvml([_Gpu(UUID_A, 50, 1000), _Gpu(UUID_B, 25, 2000)])


def _samples(collector: GpuCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in collector.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.mark.parametrize(
    ("setting", "devices"),
    [
        (None, None),
        ("", []),
        ("0,2", ["0", "2"]),
        (" 1 , 0 ", ["1", "0"]),
        ("1,-1,0", ["1"]),  # an invalid entry hides itself and everything after it
        ("none", []),
        (f"{UUID_B},0", [UUID_B, "0"]),
        ("GPU-8932f937", ["GPU-8932f937"]),
        ("MIG-4d0c3b2e-1a2b-5c6d-7e8f-9a0b1c2d3e4f", ["MIG-4d0c3b2e-1a2b-5c6d-7e8f-9a0b1c2d3e4f"]),
    ],
)
def test_visible_devices_reads_cuda_visible_devices_as_cuda_does(
    setting: str | None, devices: list[str] | None
) -> None:
    assert visible_devices(setting) == devices


def test_every_gpu_without_cuda_visible_devices() -> None:
    samples = _samples(GpuCollector(None, nvml=_two_gpus()))
    assert _value(samples, "molhpo_trainer_gpu_utilization_ratio", gpu="0") == 0.5
    assert _value(samples, "molhpo_trainer_gpu_utilization_ratio", gpu="1") == 0.25
    assert _value(samples, "molhpo_trainer_gpu_memory_used_bytes", gpu="1") == 2000.0


@pytest.mark.parametrize("setting", ["1", UUID_B, "GPU-1d8f5a3b"])
def test_cuda_index_0_is_the_nvml_gpu_cuda_visible_devices_names(setting: str) -> None:
    samples = _samples(GpuCollector(setting, nvml=_two_gpus()))
    assert _value(samples, "molhpo_trainer_gpu_utilization_ratio", gpu="0") == 0.25
    assert _value(samples, "molhpo_trainer_gpu_memory_used_bytes", gpu="0") == 2000.0
    assert _value(samples, "molhpo_trainer_gpu_utilization_ratio", gpu="1") is None


def test_reordered_gpus_keep_cuda_numbering() -> None:
    samples = _samples(GpuCollector("1,0", nvml=_two_gpus()))
    assert _value(samples, "molhpo_trainer_gpu_memory_used_bytes", gpu="0") == 2000.0
    assert _value(samples, "molhpo_trainer_gpu_memory_used_bytes", gpu="1") == 1000.0


def test_not_supported_on_a_mig_slice_leaves_the_sample_out_and_counts_it() -> None:
    nvml = _two_gpus()
    nvml.gpus[0].utilisation_supported = False
    collector = GpuCollector(None, nvml=nvml)
    for _ in range(2):
        samples = _samples(collector)
    assert _value(samples, "molhpo_trainer_gpu_utilization_ratio", gpu="0") is None
    assert _value(samples, "molhpo_trainer_gpu_utilization_ratio", gpu="1") == 0.25
    assert _value(samples, "molhpo_trainer_gpu_memory_used_bytes", gpu="0") == 1000.0
    errors = "molhpo_trainer_gpu_metric_errors_total"
    assert _value(samples, errors, call="nvmlDeviceGetUtilizationRates") == 2.0


def test_a_lost_gpu_never_breaks_a_scrape() -> None:
    nvml = _two_gpus()
    collector = GpuCollector(f"{UUID_A},1", nvml=nvml)
    registry = CollectorRegistry()
    registry.register(collector)
    nvml.gpus[0].lost = True
    nvml.gpus[1].lost = True
    text = generate_latest(registry).decode()
    assert "molhpo_trainer_gpu_memory_used_bytes{" not in text
    for call in ("HandleByIndex", "UtilizationRates", "MemoryInfo"):
        assert f'molhpo_trainer_gpu_metric_errors_total{{call="nvmlDeviceGet{call}"}} 1.0' in text
    nvml.gpus[0].lost = False
    assert "molhpo_trainer_gpu_memory_used_bytes{" in generate_latest(registry).decode()


def test_an_unknown_uuid_is_counted_not_raised() -> None:
    collector = GpuCollector("GPU-00000000-0000-0000-0000-000000000000", nvml=_two_gpus())
    assert _value(_samples(collector), "molhpo_trainer_gpu_utilization_ratio", gpu="0") is None
    assert collector.errors() == {"nvmlDeviceGetHandleByUUID": 1}


def test_a_missing_package_is_a_warning_when_the_trainer_uses_cuda(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    with caplog.at_level(logging.DEBUG, logger="trainer.metrics"):
        quiet = GpuCollector(None, expect_gpu=False)
        assert [r.levelno for r in caplog.records] == [logging.DEBUG]
        caplog.clear()
        loud = GpuCollector(None, expect_gpu=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "nvidia-ml-py" in warnings[0].getMessage()
    assert not quiet.available and not loud.available
    assert list(loud.collect()) == []


def test_a_driver_that_does_not_start_is_a_warning_when_the_trainer_uses_cuda(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="trainer.metrics"):
        collector = GpuCollector(None, expect_gpu=True, nvml=FakeNvml([], init_fails=True))
    assert "Driver Not Loaded" in caplog.text
    assert list(collector.collect()) == []
