"""The trainer's device setting, resolved once at start-up, is what GetTrainerInfo reports and
where every trial and prediction computes; running out of memory comes back as a retryable
failure. One real trainer server (port 0) with a real redis-server.

The placements are read from ``trainer.placement.watch_placements``: each entry point
reports the device it was handed, so a hand-over that goes missing (None, the CPU default)
fails here on a machine without a GPU too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from conftest import RedisServer
from torch import nn

from coordinator.retry import DEFAULT_MAX_ATTEMPTS, should_retry
from molhpo.contract.errors import InvalidArgument
from molhpo.local import free_port
from molhpo.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from storage.keys import RedisKeys
from storage.reports import ReportReader
from trainer.placement import Placement, watch_placements
from trainer.server import TrainerServer, describe_device, make_server, resolve_device
from trainer.settings import TrainerSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def settings(redis_url: str, key_prefix: str, tmp_path: Path, device: str) -> TrainerSettings:
    return TrainerSettings(
        listen="127.0.0.1:0",
        coordinator=f"127.0.0.1:{free_port()}",  # none there: the trainer serves anyway
        redis_url=redis_url,
        key_prefix=key_prefix,
        slots=1,
        torch_threads=1,
        trainer_id="t-device",
        device=device,
        artifact_dir=str(tmp_path / "artifacts"),
        cache_dir="",
        metrics_port=-1,
    )


@pytest.fixture(params=["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def trainer(
    request: pytest.FixtureRequest, redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> Iterator[TrainerServer]:
    built = make_server(settings(redis_server.url, key_prefix, tmp_path, request.param))
    built.start()
    yield built
    built.stop(grace_s=5)


@pytest.fixture
def placements() -> Iterator[list[Placement]]:
    seen: list[Placement] = []
    stop = watch_placements(seen.append)
    yield seen
    stop()


def spec(trial_id: int, model: str = "mlp") -> common_pb2.TrialSpec:
    params = {"units": 16, "dropout": 0.2} if model == "mlp" else {"hidden_channels": 16}
    return common_pb2.TrialSpec(
        study_name="device",
        trial_id=trial_id,
        trial_number=trial_id,
        attempt=1,
        dataset=common_pb2.DatasetRef(name="freesolv", max_molecules=80),
        model=model,
        params={
            k: common_pb2.ParamValue(int_value=v)
            if isinstance(v, int)
            else common_pb2.ParamValue(float_value=v)
            for k, v in params.items()
        },
        max_epochs=2,
        objective=common_pb2.Objective(metric="rmse"),
    )


def result_of(redis_server: RedisServer, key_prefix: str, trial: int) -> common_pb2.TrialResult:
    reader = ReportReader(redis_server.client(), RedisKeys(key_prefix), "test")
    reader.ensure_group()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for entry in reader.read(block_ms=500):
            report = entry.report
            if report and report.trial_id == trial and report.WhichOneof("body") == "result":
                return report.result
    raise AssertionError(f"no result of trial {trial} within 120 s")


def stub_of(trainer: TrainerServer) -> trainer_pb2_grpc.TrainerServiceStub:
    return trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(trainer.address))


def test_the_resolved_device_is_reported_and_reaches_every_trial_and_prediction(
    trainer: TrainerServer,
    redis_server: RedisServer,
    key_prefix: str,
    placements: list[Placement],
) -> None:
    device = trainer.device
    assert device == resolve_device(trainer.settings.device)
    assert device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    stub = stub_of(trainer)
    info = stub.GetTrainerInfo(trainer_pb2.GetTrainerInfoRequest(), timeout=10)
    assert info.device == describe_device(device)

    on = torch.device(device)
    for trial, model in ((1, "mlp"), (2, "gin")):
        stub.RunTrial(trainer_pb2.RunTrialRequest(spec=spec(trial, model)), timeout=10)
        result = result_of(redis_server, key_prefix, trial)
        assert result.state == common_pb2.TRIAL_STATE_COMPLETE, result.failure_reason
        deadline = time.monotonic() + 10  # the slot frees just after the result goes out
        while trainer.worker.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        trained = [p for p in placements if p.entry == "train"]
        assert len(trained) == trial
        assert trained[-1].requested == device
        assert (trained[-1].parameters.type, trained[-1].parameters.index) == (on.type, on.index)
        assert trained[-1].inputs and {d.type for d in trained[-1].inputs} == {on.type}

    placements.clear()
    answer = stub.PredictWithCheckpoints(
        trainer_pb2.CheckpointPredictRequest(
            checkpoints=[result.checkpoint], smiles=["CCO", "c1ccccc1O"]
        ),
        timeout=60,
    )
    assert len(answer.values) == 2
    assert placements and all(p.entry == "predict" for p in placements)
    assert {p.requested for p in placements} == {device}
    assert {p.parameters.type for p in placements} == {on.type}


def out_of_memory(module: nn.Module, _args: object) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_in_a_trial_comes_back_as_a_retryable_failure(
    trainer: TrainerServer, redis_server: RedisServer, key_prefix: str
) -> None:
    handle = torch.nn.modules.module.register_module_forward_pre_hook(out_of_memory)
    try:
        stub_of(trainer).RunTrial(trainer_pb2.RunTrialRequest(spec=spec(5)), timeout=10)
        result = result_of(redis_server, key_prefix, 5)
    finally:
        handle.remove()
    assert result.state == common_pb2.TRIAL_STATE_FAIL
    assert result.failure_class == "out_of_memory"
    assert "ran out of memory on" in result.failure_reason
    assert should_retry(result.failure_class, 1, DEFAULT_MAX_ATTEMPTS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_device_without_a_gpu_stops_start_up_with_one_line(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    for device in ("cuda", "cuda:1"):
        with pytest.raises(InvalidArgument) as caught:
            make_server(settings(redis_server.url, key_prefix, tmp_path, device))
        message = str(caught.value)
        assert "\n" not in message
        assert "--device" in message and "MOLHPO_TRAINER_DEVICE" in message
        assert repr(device) in message and "use auto or cpu" in message


def test_out_of_memory_in_a_prediction_is_resource_exhausted(
    trainer: TrainerServer, redis_server: RedisServer, key_prefix: str
) -> None:
    stub = stub_of(trainer)
    stub.RunTrial(trainer_pb2.RunTrialRequest(spec=spec(6)), timeout=10)
    checkpoint = result_of(redis_server, key_prefix, 6).checkpoint
    assert checkpoint
    handle = torch.nn.modules.module.register_module_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            stub.PredictWithCheckpoints(
                trainer_pb2.CheckpointPredictRequest(checkpoints=[checkpoint], smiles=["CCO"]),
                timeout=60,
            )
    finally:
        handle.remove()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "out of memory on" in (caught.value.details() or "")


def test_a_memory_cap_on_the_cpu_is_said_to_have_no_effect(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capped = settings(redis_server.url, key_prefix, tmp_path, "cpu").model_copy(
        update={"gpu_memory_fraction": 0.5}
    )
    with caplog.at_level(logging.WARNING):
        built = make_server(capped)
    built.server.stop(None)
    assert "gpu_memory_fraction = 0.5 has no effect on cpu" in caplog.text
